package peer

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// serveCtx is the context of a function serving a remote call: a child
// of the peer's context that ends at the caller's deadline and when the
// call is over, and carries the caller's id.
//
// A standard context with a deadline costs a timer and a registration
// with its parent on every call, most of which end long before the
// deadline without anyone waiting on Done. serveCtx makes that context
// only when it is needed: on the first Done, or a Value other than the
// caller (which context.Cause, context.AfterFunc and child contexts use
// to find the cancel context). Until then Err compares the deadline
// with the clock.
type serveCtx struct {
	parent   context.Context
	deadline time.Time
	hasDL    bool
	caller   string

	made   atomic.Bool // ctx is set
	mu     sync.Mutex
	ended  bool
	ctx    context.Context
	cancel context.CancelFunc
}

func newServeCtx(parent context.Context, deadline time.Time, hasDL bool, caller string) *serveCtx {
	return &serveCtx{parent: parent, deadline: deadline, hasDL: hasDL, caller: caller}
}

// real returns the standard context, making it on first use. After end
// it is canceled.
func (c *serveCtx) real() context.Context {
	if c.made.Load() {
		return c.ctx
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx == nil {
		if c.hasDL {
			c.ctx, c.cancel = context.WithDeadline(c.parent, c.deadline)
		} else {
			c.ctx, c.cancel = context.WithCancel(c.parent)
		}
		if c.ended {
			c.cancel()
		}
		c.made.Store(true)
	}
	return c.ctx
}

// end cancels the context: the call is over.
func (c *serveCtx) end() {
	c.mu.Lock()
	c.ended = true
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// Deadline returns the caller's deadline.
func (c *serveCtx) Deadline() (time.Time, bool) { return c.deadline, c.hasDL }

// Done returns the channel closed when the context ends.
func (c *serveCtx) Done() <-chan struct{} { return c.real().Done() }

// Err returns why the context ended, nil while it runs.
func (c *serveCtx) Err() error {
	if c.made.Load() {
		return c.ctx.Err()
	}
	c.mu.Lock()
	ended := c.ended
	c.mu.Unlock()
	if err := c.parent.Err(); err != nil {
		return err
	}
	if c.hasDL && !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	if ended {
		return context.Canceled
	}
	return nil
}

// Value returns the caller's id for the caller key, else the value of
// the standard context.
func (c *serveCtx) Value(key any) any {
	if _, ok := key.(callerKey); ok {
		return c.caller
	}
	return c.real().Value(key)
}

// String describes the context.
func (c *serveCtx) String() string { return "peer.serveCtx" }
