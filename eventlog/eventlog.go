package eventlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/peerbus/peerbus/peer"
)

// DefaultCloseTimeout bounds Close: how long it waits for the handlers
// of the Log's subscriptions to return (their contexts are canceled).
// CloseContext takes another bound.
const DefaultCloseTimeout = peer.DefaultCloseTimeout

// Log is a peer's access to the event log. Its methods are safe for
// concurrent use. Close it when done, or close the peer: that closes the
// Log too.
type Log struct {
	p     *peer.Peer
	nc    *nats.Conn
	id    string
	group string
	codec peer.Codec
	// jsonCodec: codec is JSON, whose transient events go in the envelope.
	jsonCodec bool
	timeout   time.Duration // the peer's CallTimeout
	logger    *slog.Logger
	cfg       Config
	js        jetstream.JetStream

	// ctx is the context of the Log's handlers, canceled by Close.
	ctx    context.Context
	cancel context.CancelFunc
	unhook func() bool // unregisters the peer's close hook

	mu       sync.Mutex
	closed   bool
	closeErr error // ErrClosed, or errPeerClosed
	// closing holds closeErr once set, for the emits to check without mu.
	closing atomic.Pointer[error]
	subs    map[*Subscription]struct{}

	smu      sync.Mutex                    // serialises ensure
	stream   atomic.Pointer[streamRef]     // set once the stream is known
	replicas atomic.Int32                  // the stream's replicas when last known
	names    sync.Map                      // valid event names: their *eventSubjects
	nnames   atomic.Int32                  // entries in names (bounded)
	kvMu     sync.Mutex                    // serialises bucket lookups
	kvs      map[string]jetstream.KeyValue // snapshot buckets by name

	handlerErrors atomic.Uint64
}

type streamRef struct{ s jetstream.Stream }

// New returns p's access to the event log. It does not talk to the bus:
// the log stream is looked up (and created, see Config) by the first
// operation that needs it. Closing p closes the Log. An invalid option
// gives an error wrapping ErrInvalidOption; a closed peer gives
// ErrClosed.
func New(p *peer.Peer, opts ...Option) (*Log, error) {
	if p == nil {
		return nil, errors.New("eventlog: nil peer")
	}
	o := DefaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if err := o.Config.validate(); err != nil {
		return nil, err
	}
	po := p.Options()
	js, err := jetstream.New(p.Conn(), jetstream.WithPublishAsyncMaxPending(asyncMaxPending))
	if err != nil {
		return nil, fmt.Errorf("eventlog: jetstream: %w", err)
	}
	l := &Log{
		p: p, nc: p.Conn(), id: p.ID(), group: po.Group, codec: po.Codec, jsonCodec: po.Codec.Name() == peer.JSON.Name(), timeout: po.CallTimeout,
		logger: p.Logger(), cfg: o.Config, js: js,
		subs: make(map[*Subscription]struct{}), kvs: make(map[string]jetstream.KeyValue),
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.unhook = p.OnClose(func(ctx context.Context) error { return l.shutdown(ctx, errPeerClosed) })
	if err := l.closedErr(); err != nil {
		return nil, err
	}
	return l, nil
}

// Peer returns the peer the Log belongs to.
func (l *Log) Peer() *peer.Peer { return l.p }

// HandlerErrors returns how many event handler errors (and panics) the
// Log's subscriptions reported.
func (l *Log) HandlerErrors() uint64 { return l.handlerErrors.Load() }

// Close closes the Log, waiting at most DefaultCloseTimeout: it is
// CloseContext with that bound.
func (l *Log) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultCloseTimeout)
	defer cancel()
	return l.CloseContext(ctx)
}

// CloseContext ends every subscription of the Log (projections running
// on it return ErrClosed), cancels its handlers' contexts and waits for
// the handlers to return, within ctx (an error wrapping ctx's error when
// ctx ends first), and fails the async emits not acknowledged yet. The
// peer stays open. A second call returns an error wrapping
// net.ErrClosed (ErrClosed).
func (l *Log) CloseContext(ctx context.Context) error {
	if err := l.closedErr(); err != nil {
		return err
	}
	l.unhook()
	return l.shutdown(ctx, ErrClosed)
}

// shutdown closes the Log with reason as the error of later uses.
func (l *Log) shutdown(ctx context.Context, reason error) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed, l.closeErr = true, reason
	l.closing.Store(&reason)
	subs := make([]*Subscription, 0, len(l.subs))
	for s := range l.subs {
		subs = append(subs, s)
	}
	clear(l.subs)
	l.mu.Unlock()
	for _, s := range subs {
		_, _ = s.stop()
	}
	l.cancel()
	l.stopTransientChecks()
	var errs []error
	for _, s := range subs {
		if err := errors.Join(s.wait(ctx), s.waitHandler(ctx)); err != nil {
			errs = append(errs, err)
		}
	}
	// Fails pending async emits and releases the async ack subscription.
	l.js.CleanupPublisher()
	return errors.Join(errs...)
}

// closedErr returns the error of a use of a closed Log, nil while it is
// open.
func (l *Log) closedErr() error {
	if e := l.closing.Load(); e != nil {
		return *e
	}
	return nil
}

// track registers s as a subscription of the Log.
func (l *Log) track(s *Subscription) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return l.closeErr
	}
	l.subs[s] = struct{}{}
	return nil
}

// untrack forgets s.
func (l *Log) untrack(s *Subscription) {
	l.mu.Lock()
	delete(l.subs, s)
	l.mu.Unlock()
}

// callContext bounds ctx by the peer's call timeout.
func (l *Log) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, l.timeout)
}

// runHandler runs h, turning a panic into a *peer.RemoteError.
func (l *Log) runHandler(ctx context.Context, h Handler, e Event) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = peer.PanicError(l.id, e.Name, r)
		}
	}()
	return h(ctx, e)
}

// handlerFailed counts and reports a handler error.
func (l *Log) handlerFailed(s *Subscription, err error) {
	s.errs.Add(1)
	l.handlerErrors.Add(1)
	l.p.ReportError(err)
}
