package eventlog

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Handler handles one event. A returned error is reported to the peer's
// OnError and counted on the subscription; it does not stop it. On a
// durable subscription the error also means "not done": the event is
// delivered again later (see SubscribeDurable).
type Handler func(ctx context.Context, e Event) error

// Subscription is an event subscription: live, reading the log, or
// durable.
type Subscription struct {
	l      *Log
	subs   []*nats.Subscription
	errs   atomic.Uint64
	closed atomic.Bool
	log    *logSub // nil for a live subscription
}

// Errors returns how many handler errors (and panics) the subscription
// has reported.
func (s *Subscription) Errors() uint64 { return s.errs.Load() }

// Seq returns the log sequence of the last event the subscription
// handled (acknowledged or gave up on, for a durable), 0 for a live
// subscription or before the first event.
func (s *Subscription) Seq() uint64 {
	if s.log == nil {
		return 0
	}
	return s.log.seq.Load()
}

// Durable returns the durable name ("" when not durable).
func (s *Subscription) Durable() string {
	if s.log == nil {
		return ""
	}
	return s.log.durable
}

var errSubClosed = fmt.Errorf("eventlog: subscription closed: %w", net.ErrClosed)

// Close stops delivery and cancels the context of a running handler.
// For a subscription reading the log it waits until the consumer has
// stopped (not for a handler running at that moment, which may be the
// caller), at most DefaultCloseTimeout: past it, Close returns an error
// wrapping context.DeadlineExceeded. A second call returns an error
// wrapping net.ErrClosed.
func (s *Subscription) Close() error {
	first, err := s.stop()
	if !first {
		return errSubClosed
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultCloseTimeout)
	defer cancel()
	return errors.Join(err, s.wait(ctx))
}

// stop stops delivery without waiting for a running handler; first
// reports that the subscription was running.
func (s *Subscription) stop() (first bool, err error) {
	if s.closed.Swap(true) {
		return false, nil
	}
	busy := s.log != nil && s.log.stop()
	var errs []error
	for _, ns := range s.subs {
		if err := ns.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
			errs = append(errs, err)
		}
	}
	if !busy {
		s.l.untrack(s) // else when its handler returns
	}
	return true, errors.Join(errs...)
}

// waitHandler waits, within ctx, until no handler of a subscription
// reading the log runs.
func (s *Subscription) waitHandler(ctx context.Context) error {
	if s.log == nil {
		return nil
	}
	return s.log.waitHandler(ctx)
}

// wait waits, within ctx, until the consumer of a subscription reading
// the log has stopped.
func (s *Subscription) wait(ctx context.Context) error {
	if s.log == nil {
		return nil
	}
	return s.log.wait(ctx)
}

// Subscribe delivers events whose name matches pattern ('*' matches
// one dot-separated token, a final '>' one or more) to h, one at a time
// per subscription, in order. Filters (FromPeers, FromGroups) run on the
// server (subject filters).
//
// By default the subscription is live: it receives the events emitted
// from now on, persisted and transient, as the bus delivers them (Seq
// is 0). A persisted event reaches live subscribers once per publish,
// and an emit retried with the same event id publishes it again (the
// log stores it once): a live subscription drops the copies of an event
// id it delivered within the log's dedupe window (Config.Duplicates),
// remembering the last 65536 ids. Live delivery misses the events
// emitted while the connection is down. A Start (FromStart, FromSeq or FromTime) makes it read the
// event log first and then follow it (persisted events only, with Seq);
// a handler error is reported and the subscription goes on. For
// acknowledged delivery that resumes where it left off, see
// SubscribeDurable.
func (l *Log) Subscribe(pattern string, h Handler, opts ...SubscribeOption) (*Subscription, error) {
	if h == nil {
		return nil, errors.New("eventlog: nil event handler")
	}
	var cfg readConfig
	for _, o := range opts {
		if err := o.applySubscribe(&cfg); err != nil {
			return nil, err
		}
	}
	subjects, err := FilterSubjects(pattern, cfg.groups, cfg.peers)
	if err != nil {
		return nil, err
	}
	if cfg.start.kind != startLive {
		return l.subscribeLog(pattern, subjects, h, cfg, "")
	}
	return l.subscribeLive(subjects, h)
}

// subscribeLive subscribes the persisted and the transient subjects of
// the filters, with one delivery goroutine.
func (l *Log) subscribeLive(subjects []string, h Handler) (*Subscription, error) {
	// Transient events come on the same subjects in their own space.
	for _, subj := range subjects[:len(subjects):len(subjects)] {
		subjects = append(subjects, subjTevt+strings.TrimPrefix(subj, subjEvt))
	}
	s := &Subscription{l: l}
	if err := l.track(s); err != nil {
		return nil, err
	}
	// One delivery goroutine for all subjects keeps handler calls serial.
	var mu sync.Mutex
	window := l.cfg.Duplicates
	if window <= 0 {
		window = DefaultDuplicates
	}
	recent := newRecentIDs(window, maxRecentIDs)
	for _, subj := range subjects {
		ns, err := l.nc.Subscribe(subj, func(m *nats.Msg) {
			mu.Lock()
			defer mu.Unlock()
			l.deliver(s, h, m, recent)
		})
		if err != nil {
			_, _ = s.stop()
			return nil, fmt.Errorf("eventlog: subscribe %q: %w", subj, err)
		}
		s.subs = append(s.subs, ns)
	}
	if err := l.nc.Flush(); err != nil {
		_, _ = s.stop()
		return nil, fmt.Errorf("eventlog: subscribe: %w", err)
	}
	return s, nil
}

// deliver hands a live event to h, unless it is a persisted event
// delivered already: an emit retried with the same id reaches live
// subscribers once per attempt, while the log stores it once.
func (l *Log) deliver(s *Subscription, h Handler, m *nats.Msg, recent *recentIDs) {
	if s.closed.Load() {
		return
	}
	e, err := parseEvent(m.Subject, m.Header, m.Data, true)
	if err != nil {
		s.errs.Add(1)
		l.p.ReportError(err)
		return
	}
	if strings.HasPrefix(m.Subject, subjEvt) && e.ID != "" && recent.seen(e.ID, time.Now()) {
		return
	}
	e.codec = l.codec
	if err := l.runHandler(l.ctx, h, e); err != nil {
		l.handlerFailed(s, fmt.Errorf("eventlog: event handler for %q (event %s from %s): %w", e.Name, e.ID, e.Peer, err))
	}
}

// On subscribes with a typed handler: each payload is decoded into T
// first; a payload that does not decode is a reported handler error.
func On[T any](l *Log, pattern string, h func(ctx context.Context, e Event, v T) error, opts ...SubscribeOption) (*Subscription, error) {
	return l.Subscribe(pattern, func(ctx context.Context, e Event) error {
		var v T
		if err := e.Decode(&v); err != nil {
			return fmt.Errorf("decode payload: %w", err)
		}
		return h(ctx, e, v)
	}, opts...)
}
