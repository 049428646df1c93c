package peer

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"

	"github.com/nats-io/nats.go"
)

// ErrPermission reports a call the NATS server refused: the connection
// may not publish on the call's subject (see SECURITY.md). The error
// names the subject and wraps nats.ErrPermissionViolation.
var ErrPermission = errors.New("peer: permission denied")

// permViolation finds the subject in the server's permissions error.
var permViolation = regexp.MustCompile(`for Publish to "([^"]+)"`)

// permWatch routes the permission violations of one connection to the
// calls waiting on the refused subjects. One is installed per
// connection, chained before the connection's own error handler.
type permWatch struct {
	mu      sync.Mutex
	peers   int
	waiters map[string]map[*permWaiter]struct{}
	muxes   map[*replyMux]struct{} // the peers' single calls
}

type permWaiter struct {
	cancel context.CancelCauseFunc
}

var (
	permMu      sync.Mutex
	permWatches = map[*nats.Conn]*permWatch{}
)

// watchPermissions attaches p to its connection's permWatch, installing
// it on first use; the returned func detaches it.
func watchPermissions(nc *nats.Conn) (*permWatch, func()) {
	permMu.Lock()
	defer permMu.Unlock()
	w := permWatches[nc]
	if w == nil {
		w = &permWatch{waiters: map[string]map[*permWaiter]struct{}{}, muxes: map[*replyMux]struct{}{}}
		permWatches[nc] = w
		prev := nc.ErrorHandler()
		nc.SetErrorHandler(func(c *nats.Conn, s *nats.Subscription, err error) {
			w.onError(err)
			if prev != nil {
				prev(c, s, err)
			}
		})
	}
	w.peers++
	var once sync.Once
	return w, func() { once.Do(func() { unwatch(nc, w) }) }
}

// unwatch detaches a peer from w.
func unwatch(nc *nats.Conn, w *permWatch) {
	{
		permMu.Lock()
		defer permMu.Unlock()
		w.peers--
		if w.peers == 0 && permWatches[nc] == w {
			delete(permWatches, nc)
		}
	}
}

// onError ends the calls waiting on the subject a violation names.
func (w *permWatch) onError(err error) {
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return
	}
	m := permViolation.FindStringSubmatch(err.Error())
	if m == nil {
		return
	}
	perr := fmt.Errorf("%w: publish to %q: %w", ErrPermission, m[1], err)
	w.mu.Lock()
	defer w.mu.Unlock()
	for pw := range w.waiters[m[1]] {
		pw.cancel(perr)
	}
	for mux := range w.muxes {
		mux.failSubject(m[1], perr)
	}
}

// addMux makes a violation end the single calls of mux waiting on the
// refused subject; removeMux undoes it.
func (w *permWatch) addMux(mux *replyMux) {
	w.mu.Lock()
	w.muxes[mux] = struct{}{}
	w.mu.Unlock()
}

func (w *permWatch) removeMux(mux *replyMux) {
	w.mu.Lock()
	delete(w.muxes, mux)
	w.mu.Unlock()
}

// wait makes a violation on subject cancel ctx with an ErrPermission
// cause; stop ends the watch.
func (w *permWatch) wait(ctx context.Context, subject string) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	pw := &permWaiter{cancel: cancel}
	w.mu.Lock()
	set := w.waiters[subject]
	if set == nil {
		set = map[*permWaiter]struct{}{}
		w.waiters[subject] = set
	}
	set[pw] = struct{}{}
	w.mu.Unlock()
	return ctx, func() {
		w.mu.Lock()
		delete(set, pw)
		if len(set) == 0 && w.waiters[subject] != nil && len(w.waiters[subject]) == 0 {
			delete(w.waiters, subject)
		}
		w.mu.Unlock()
		cancel(nil)
	}
}

// permissionCause returns the ErrPermission that ended ctx, or nil.
func permissionCause(ctx context.Context) error {
	if c := context.Cause(ctx); errors.Is(c, ErrPermission) {
		return c
	}
	return nil
}

// PermissionContext returns a context that is canceled, with an
// ErrPermission cause naming the subject, when the NATS server refuses a
// publish to subject on the peer's connection; stop ends the watch. Use
// PermissionCause on the context after a failed operation: a publish the
// server refused otherwise shows only as a missing answer (a timeout).
func (p *Peer) PermissionContext(ctx context.Context, subject string) (_ context.Context, stop func()) {
	return p.perm.wait(ctx, subject)
}

// PermissionCause returns the ErrPermission that ended a context of
// PermissionContext, or nil.
func PermissionCause(ctx context.Context) error { return permissionCause(ctx) }
