package netcore

import "sync"

// gate counts a pipe's goroutines while they are inside the pipe's own
// code (reading, accepting), not while they run user callbacks. Close waits
// for the count to drop to zero, so it cannot deadlock when called from a
// handler, and no new callback starts once it returns.
type gate struct {
	mu      sync.Mutex
	n       int
	closing bool
	idle    chan struct{} // closed when closing and n == 0
}

// enter counts the caller in; it fails once the gate is closing.
func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return false
	}
	g.n++
	return true
}

// leave counts the caller out.
func (g *gate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	if g.closing && g.n == 0 && g.idle != nil {
		close(g.idle)
		g.idle = nil
	}
}

// closeAndWait stops further enters and waits until every counted
// goroutine has left.
func (g *gate) closeAndWait() {
	g.mu.Lock()
	g.closing = true
	if g.n == 0 {
		g.mu.Unlock()
		return
	}
	if g.idle == nil {
		g.idle = make(chan struct{})
	}
	idle := g.idle
	g.mu.Unlock()
	<-idle
}
