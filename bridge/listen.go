package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
)

// pathListener is a side's TCP path listener: one socket per host
// address it offers (never the unspecified address), all on one port.
type pathListener struct {
	lns   []*net.TCPListener
	port  uint16
	addrs []netip.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

// listenPath binds addrs (the first with an ephemeral port, the others
// on the same port; an address whose bind fails is left out). With
// reuse, the sockets allow the port to be shared for hole punching.
func listenPath(ctx context.Context, addrs []netip.Addr) (*pathListener, error) {
	if len(addrs) == 0 {
		return nil, errors.New("bridge: path listener: no host address")
	}
	lc := net.ListenConfig{}
	if reuseSupported {
		lc.Control = reuseControl
	}
	pl := &pathListener{conns: make(chan net.Conn), done: make(chan struct{})}
	var firstErr error
	for _, a := range addrs {
		l, err := lc.Listen(ctx, "tcp4", net.JoinHostPort(a.String(), strconv.Itoa(int(pl.port))))
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		tl := l.(*net.TCPListener)
		if pl.port == 0 {
			pl.port = uint16(tl.Addr().(*net.TCPAddr).Port)
		}
		pl.lns = append(pl.lns, tl)
		pl.addrs = append(pl.addrs, a)
	}
	if len(pl.lns) == 0 {
		return nil, fmt.Errorf("bridge: path listener: %w", firstErr)
	}
	for _, l := range pl.lns {
		pl.wg.Add(1)
		go pl.accept(l)
	}
	return pl, nil
}

func (pl *pathListener) accept(l *net.TCPListener) {
	defer pl.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		select {
		case pl.conns <- c:
		case <-pl.done:
			_ = c.Close()
			return
		}
	}
}

// Accept returns the next connection to any of the sockets.
func (pl *pathListener) Accept() (net.Conn, error) {
	select {
	case c := <-pl.conns:
		return c, nil
	case <-pl.done:
		return nil, net.ErrClosed
	}
}

// Close closes every socket; it is idempotent and waits for the accept
// goroutines.
func (pl *pathListener) Close() error {
	pl.once.Do(func() {
		close(pl.done)
		for _, l := range pl.lns {
			_ = l.Close()
		}
	})
	pl.wg.Wait()
	return nil
}

// candidates pairs the bound addresses with the port.
func (pl *pathListener) candidates() []Candidate {
	out := make([]Candidate, 0, len(pl.addrs))
	for _, a := range pl.addrs {
		out = append(out, Candidate{Addr: netip.AddrPortFrom(a, pl.port), Kind: KindHost})
	}
	return out
}
