package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
)

var errClosed = fmt.Errorf("peer: closed: %w", net.ErrClosed)

// DefaultCloseTimeout bounds Close: how long it waits for the functions
// still running (their contexts are canceled), for the close hooks (see
// OnClose) and for the connection to flush. CloseContext takes another
// bound.
const DefaultCloseTimeout = 5 * time.Second

// Built-in tags every peer serves.
const (
	// TagInfo returns the peer's Info.
	TagInfo = "info"
	// TagPing returns null.
	TagPing = "ping"
)

// Info describes a peer. It is what presence announcements carry and
// what the built-in "info" tag returns.
type Info struct {
	// ID is the peer id.
	ID string `json:"id"`
	// Name is the friendly name.
	Name string `json:"name"`
	// Group is the peer's group ("" for none).
	Group string `json:"group,omitempty"`
	// Hub marks a hub of the application.
	Hub bool `json:"hub"`
	// Host is the host name of the peer's machine.
	Host string `json:"host"`
	// PID is the peer's process id.
	PID int `json:"pid"`
	// Node is the name of the server the peer is connected to.
	Node string `json:"node,omitempty"`
	// Started is when the peer started (UTC, milliseconds).
	Started time.Time `json:"started"`
	// Tags are the tags the peer serves, sorted.
	Tags []string `json:"tags"`
}

// HasTag reports whether the peer offers tag.
func (i Info) HasTag(tag string) bool { return slices.Contains(i.Tags, tag) }

// Peer is a participant of the bus: it serves tagged functions, calls
// them on other peers, and tracks presence. Package eventlog adds the
// event log to a Peer. Its methods are safe for concurrent use.
type Peer struct {
	nc   *nats.Conn
	opts Options
	log  *slog.Logger
	id   string

	ctx     context.Context
	cancel  context.CancelFunc
	in      chan *nats.Msg
	spare   chan struct{} // a token makes a spare worker the listener
	wmu     sync.Mutex    // guards the worker roles below
	workers int           // worker goroutines
	spares  int           // workers waiting for a spare token
	// listening: a worker waits on in (or is on its way there).
	listening bool
	wg        sync.WaitGroup

	// callPrefix starts the peer's direct call subjects
	// ("peerbus.call.<id>."), groupAnyPrefix its group's any subjects
	// ("peerbus.gany.<group>.", empty without a group); the header
	// values below are shared by every message the peer sends (nothing
	// modifies them).
	callPrefix     string
	groupAnyPrefix string
	idVal          []string
	okVal          []string
	errorVal       []string
	callerVal      []string
	codecVal       []string
	// okHeader is the header of a result reply (read only), okHeaderLen
	// its size as maxData counts it.
	okHeader    nats.Header
	okHeaderLen int

	mu       sync.RWMutex
	closed   bool
	handlers map[string]*rawHandler
	info     Info
	callSub  *nats.Subscription
	// microSubs answer NATS micro discovery (see micro.go).
	microSubs []*nats.Subscription
	hooks     map[int]func(context.Context) error // see OnClose
	nextHook  int

	pres *presence

	perm    *permWatch // permission violations of nc, for calls
	unwatch func()

	rmux atomic.Pointer[replyMux] // the replies of single calls, once one was made
}

// New starts a peer on nc. The peer serves its built-in tags ("info",
// "ping"), announces itself and starts tracking presence. Close it when
// done; closing the peer does not close nc. An invalid option gives an
// error wrapping ErrInvalidOption.
func New(nc *nats.Conn, opts ...Option) (*Peer, error) {
	if nc == nil {
		return nil, errors.New("peer: nil connection")
	}
	o := DefaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.Identity != nil && nc.Opts.InboxPrefix != o.Identity.InboxPrefix() {
		return nil, invalid("identity %s: the connection's reply inboxes must be under %q (connect with the identity's ConnectOptions)",
			o.Identity.PublicKey(), o.Identity.InboxPrefix())
	}
	host, _ := os.Hostname()
	if o.ID == "" {
		o.ID = uuid.NewString()
	}
	if o.Name == "" {
		o.Name = host + "-" + strconv.Itoa(os.Getpid())
	}
	l := o.Logger
	if l == nil {
		l = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Peer{
		nc: nc, opts: o, log: l.With("peer", o.ID), id: o.ID,
		ctx: ctx, cancel: cancel,
		in:       make(chan *nats.Msg, inboxSize),
		spare:    make(chan struct{}, o.MaxConcurrent),
		handlers: make(map[string]*rawHandler),
		hooks:    make(map[int]func(context.Context) error),
		info: Info{
			ID: o.ID, Name: o.Name, Group: o.Group, Hub: o.Hub, Host: host,
			PID: os.Getpid(), Started: time.Now().UTC().Truncate(time.Millisecond),
			Node: nc.ConnectedServerName(),
		},
	}
	p.perm, p.unwatch = watchPermissions(nc)
	p.callPrefix = subjCall + o.ID + "."
	if o.Group != "" {
		p.groupAnyPrefix = subjGroupAny + o.Group + "."
	}
	p.idVal, p.okVal, p.errorVal = []string{o.ID}, []string{"ok"}, []string{"error"}
	p.okHeader = nats.Header{HeaderPeer: p.idVal, HeaderStatus: p.okVal}
	p.okHeaderLen = int(nc.MaxPayload()) - 16 - p.maxData(p.okHeader)
	if !o.NoPresence {
		p.callerVal = p.idVal
	}
	if name := o.Codec.Name(); name != "json" {
		p.codecVal = []string{name} // JSON, the default, goes without a header
	}
	if err := p.start(); err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), DefaultCloseTimeout)
		defer cancel()
		_ = p.shutdown(ctx, false)
		return nil, err
	}
	return p, nil
}

func (p *Peer) start() error {
	if !p.opts.NoPresence {
		p.listening, p.workers = true, 1
		p.wg.Add(1)
		go p.worker()
		sub, err := p.nc.ChanSubscribe(subjCall+p.id+".>", p.in)
		if err != nil {
			return fmt.Errorf("peer: subscribe: %w", err)
		}
		p.callSub = sub
		if _, err := Register(p, TagInfo, func(context.Context, struct{}) (Info, error) { return p.Info(), nil }); err != nil {
			return err
		}
		if _, err := Register(p, TagPing, func(context.Context, struct{}) (any, error) { return nil, nil }); err != nil {
			return err
		}
		if err := p.startMicro(); err != nil {
			return err
		}
	}
	pr, err := startPresence(p)
	if err != nil {
		return err
	}
	p.pres = pr
	return p.nc.Flush()
}

// ID returns the peer id.
func (p *Peer) ID() string { return p.id }

// Conn returns the NATS connection the peer uses.
func (p *Peer) Conn() *nats.Conn { return p.nc }

// Codec returns the peer's codec.
func (p *Peer) Codec() Codec { return p.opts.Codec }

// Options returns the peer's options, with the defaults applied and the
// id and name chosen.
func (p *Peer) Options() Options { return p.opts }

// Logger returns the peer's logger (its lines carry the peer id).
// Packages built on a peer, such as eventlog, log with it.
func (p *Peer) Logger() *slog.Logger { return p.log }

// ReportError hands an error that has no caller to return to (a failed
// reply, an event handler's error) to the peer's error handler
// (Options.OnError) and logs it. Packages built on a peer report their
// errors with it.
func (p *Peer) ReportError(err error) {
	p.log.Warn("peer error", "err", err)
	if p.opts.OnError != nil {
		p.opts.OnError(err)
	}
}

// Info returns the peer's description, with its current tags.
func (p *Peer) Info() Info {
	p.mu.RLock()
	defer p.mu.RUnlock()
	i := p.info
	i.Tags = p.tagsLocked()
	return i
}

// Tags returns the tags the peer serves, sorted.
func (p *Peer) Tags() []string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.tagsLocked()
}

func (p *Peer) tagsLocked() []string {
	t := make([]string, 0, len(p.handlers))
	for k := range p.handlers {
		t = append(t, k)
	}
	slices.Sort(t)
	return t
}

// OnClose registers f to run when the peer closes, with the context
// that bounds the close (see CloseContext); an error f returns is
// returned by Close. The hooks run after the peer stopped serving and
// before it waits for its running functions. Packages built on a peer
// use it to end what they started on it (eventlog closes its Log).
// The returned stop unregisters f; it reports whether f was still
// registered. On a peer closed already, f runs at once, before OnClose
// returns, and stop reports false.
func (p *Peer) OnClose(f func(ctx context.Context) error) (stop func() bool) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), DefaultCloseTimeout)
		defer cancel()
		_ = f(ctx)
		return func() bool { return false }
	}
	id := p.nextHook
	p.nextHook++
	p.hooks[id] = f
	p.mu.Unlock()
	return func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		_, ok := p.hooks[id]
		delete(p.hooks, id)
		return ok
	}
}

// Close closes the peer, waiting at most DefaultCloseTimeout: it is
// CloseContext with that bound.
func (p *Peer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultCloseTimeout)
	defer cancel()
	return p.CloseContext(ctx)
}

// CloseContext announces the peer's departure, stops serving, runs the
// close hooks (OnClose), cancels the contexts of the functions still
// running and waits for them to return, then flushes the connection.
// ctx bounds every wait: when it ends first, CloseContext returns an
// error wrapping ctx's error (the peer is closed all the same; functions
// that ignore their context go on running in the background). A second
// call returns an error wrapping net.ErrClosed (ErrClosed).
func (p *Peer) CloseContext(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	p.closed = true
	p.mu.Unlock()
	return p.shutdown(ctx, true)
}

// shutdown stops everything the peer started, within ctx.
func (p *Peer) shutdown(ctx context.Context, leave bool) error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	if p.pres != nil {
		p.pres.stop(leave)
	}
	p.mu.Lock()
	var subs []*nats.Subscription
	if p.callSub != nil {
		subs = append(subs, p.callSub)
	}
	subs = append(subs, p.microSubs...)
	for _, h := range p.handlers {
		subs = append(subs, h.subs...)
	}
	hooks := make([]func(context.Context) error, 0, len(p.hooks))
	for _, id := range slices.Sorted(maps.Keys(p.hooks)) {
		hooks = append(hooks, p.hooks[id])
	}
	clear(p.hooks)
	p.mu.Unlock()
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
	var errs []error
	for _, f := range hooks {
		if err := f(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	p.cancel()
	if p.unwatch != nil {
		p.unwatch()
	}
	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("peer: close: functions still running: %w", ctx.Err()))
	}
	p.closeReplies()
	if !p.nc.IsClosed() {
		// Best effort: the replies and the leave announcement go out.
		fctx, cancel := context.WithTimeout(ctx, DefaultCloseTimeout)
		_ = p.nc.FlushWithContext(fctx)
		cancel()
	}
	return errors.Join(errs...)
}

func (p *Peer) isClosed() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.closed
}
