package eventlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/peer"
)

// A transient emit is fire and forget: the NATS server refuses a publish
// outside the connection's permissions with an asynchronous error, and
// the emit has returned by then. So that a refused name does not vanish
// in silence, the first transient emit of each name waits for the bus
// to have it (a flush) and returns the refusal as peer.ErrPermission;
// later emits of a refused name fail at once for transientRecheck, after
// which one is checked again (a policy reload may have granted it). A
// refusal the server reports later (a grant revoked by a reload) makes
// the next emits of the name fail too.
const transientRecheck = time.Second

// transientCheck is the permission state of one name's transient
// subject.
type transientCheck struct {
	state atomic.Int32              // tsUnchecked, tsOK, tsRefused
	watch atomic.Pointer[permWatch] // the server's refusals of the subject, from the first check on

	mu      sync.Mutex
	err     error     // the refusal, with tsRefused
	at      time.Time // when it was refused
	stopped bool      // the Log is closed: no new watch
}

// permWatch is a peer.PermissionContext on one subject.
type permWatch struct {
	ctx  context.Context
	done <-chan struct{}
	stop func()
}

const (
	tsUnchecked int32 = iota
	tsOK
	tsRefused
)

// publishTransient publishes m, the transient event of the name whose
// subjects are es, unless the server refused that subject (see
// transientRecheck).
func (l *Log) publishTransient(ctx context.Context, es *eventSubjects, m *nats.Msg) error {
	tc := &es.tcheck
	switch tc.state.Load() {
	case tsOK:
		w := tc.watch.Load()
		select {
		case <-w.done:
			// A refusal reported since the check: a revoked grant.
			if perr := peer.PermissionCause(w.ctx); perr != nil {
				tc.mu.Lock()
				if tc.state.Load() == tsOK {
					tc.refuse(perr)
				}
				tc.mu.Unlock()
				return perr
			}
		default:
		}
		return l.nc.PublishMsg(m)
	case tsRefused:
		if err := tc.refusal(); err != nil {
			return err
		}
	}
	return l.checkTransient(ctx, tc, m)
}

// refusal returns the refusal in force, or nil once it is old enough to
// be checked again (the state is then unchecked).
func (tc *transientCheck) refusal() error {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.state.Load() != tsRefused {
		return nil
	}
	if time.Since(tc.at) >= transientRecheck {
		tc.state.Store(tsUnchecked)
		return nil
	}
	return tc.err
}

// refuse records a refusal; tc.mu is held.
func (tc *transientCheck) refuse(err error) {
	tc.err, tc.at = err, time.Now()
	tc.state.Store(tsRefused)
}

// checkTransient publishes m, the first transient event of a name (or
// the first since its refusal expired), and waits for the bus to have
// it: a refusal of its subject is returned as peer.ErrPermission. Other
// emits of the name meanwhile wait for the check.
func (l *Log) checkTransient(ctx context.Context, tc *transientCheck, m *nats.Msg) error {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.state.Load() != tsUnchecked || tc.stopped {
		if tc.state.Load() == tsRefused {
			return tc.err
		}
		return l.nc.PublishMsg(m)
	}
	if w := tc.watch.Load(); w != nil {
		w.stop()
	}
	wctx, stop := l.p.PermissionContext(l.ctx, m.Subject)
	w := &permWatch{ctx: wctx, done: wctx.Done(), stop: stop}
	tc.watch.Store(w)
	if err := l.nc.PublishMsg(m); err != nil {
		return err
	}
	fctx, cancel := context.WithTimeout(ctx, l.timeout)
	err := l.nc.FlushWithContext(fctx)
	cancel()
	refused := peer.PermissionCause(wctx)
	if last := l.nc.LastError(); refused == nil && last != nil && errors.Is(last, nats.ErrPermissionViolation) &&
		strings.Contains(last.Error(), `Publish to "`+m.Subject+`"`) {
		refused = fmt.Errorf("%w: publish to %q: %w", peer.ErrPermission, m.Subject, last)
	}
	switch {
	case refused != nil:
		tc.refuse(refused)
		return tc.err
	case err == nil:
		tc.state.Store(tsOK)
	}
	return nil // the event is queued; without a flush, a later emit checks
}

// stopTransientChecks ends the permission watches of the cached names.
func (l *Log) stopTransientChecks() {
	l.names.Range(func(_, v any) bool {
		tc := &v.(*eventSubjects).tcheck
		tc.mu.Lock()
		tc.stopped = true
		if w := tc.watch.Load(); w != nil {
			w.stop()
		}
		tc.mu.Unlock()
		return true
	})
}
