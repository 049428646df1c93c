package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
)

var errClosed = fmt.Errorf("peer: closed: %w", net.ErrClosed)

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
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Group   string    `json:"group,omitempty"`
	Hub     bool      `json:"hub"`
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Node    string    `json:"node,omitempty"`
	Started time.Time `json:"started"`
	Tags    []string  `json:"tags"`
}

// HasTag reports whether the peer offers tag.
func (i Info) HasTag(tag string) bool { return slices.Contains(i.Tags, tag) }

// rawHandler runs a registered function on encoded arguments.
type rawHandler struct {
	tag   string
	where string // function name and location, for error stacks
	run   func(ctx context.Context, args []byte) ([]byte, error)
	local any // the typed *Func's function, for local pass-through
	subs  []*nats.Subscription
}

// Peer is a participant of the bus: it serves tagged functions, calls
// them on other peers, emits and receives events, and tracks presence.
// Its methods are safe for concurrent use.
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
	// ("peerbus.call.<id>."); the header values below are shared by
	// every message the peer sends (nothing modifies them).
	callPrefix string
	idVal      []string
	okVal      []string
	errorVal   []string
	callerVal  []string
	codecVal   []string

	mu       sync.RWMutex
	closed   bool
	handlers map[string]*rawHandler
	info     Info
	callSub  *nats.Subscription
	subs     []*nats.Subscription // presence and other internal subs
	events   map[*Subscription]struct{}

	pres  *presence
	evlog *eventLog

	handlerErrors atomic.Uint64
}

// New starts a peer on nc. The peer serves its built-in tags ("info",
// "ping"), announces itself and starts tracking presence. Close it when
// done; closing the peer does not close nc.
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
	if o.ID == "" {
		o.ID = uuid.NewString()
	}
	host, _ := os.Hostname()
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
		events:   make(map[*Subscription]struct{}),
		info: Info{
			ID: o.ID, Name: o.Name, Group: o.Group, Hub: o.Hub, Host: host,
			PID: os.Getpid(), Started: time.Now().UTC().Truncate(time.Millisecond),
			Node: serverName(nc),
		},
	}
	p.callPrefix = subjCall + o.ID + "."
	p.idVal, p.okVal, p.errorVal = []string{o.ID}, []string{"ok"}, []string{"error"}
	if !o.NoPresence {
		p.callerVal = p.idVal
	}
	if name := o.Codec.Name(); name != "json" {
		p.codecVal = []string{name} // JSON, the default, goes without a header
	}
	p.evlog = newEventLog(p)
	if err := p.start(); err != nil {
		p.shutdown(false)
		return nil, err
	}
	return p, nil
}

func serverName(nc *nats.Conn) string {
	if s := nc.ConnectedServerName(); s != "" {
		return s
	}
	return ""
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

// Close announces the peer's departure, stops serving, waits for running
// functions and event handlers, and releases every subscription. A
// second call returns an error wrapping net.ErrClosed.
func (p *Peer) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	p.closed = true
	p.mu.Unlock()
	p.shutdown(true)
	return nil
}

func (p *Peer) shutdown(leave bool) {
	if p.pres != nil {
		p.pres.stop(leave)
	}
	p.mu.Lock()
	subs := append([]*nats.Subscription(nil), p.subs...)
	if p.callSub != nil {
		subs = append(subs, p.callSub)
	}
	for _, h := range p.handlers {
		subs = append(subs, h.subs...)
	}
	evs := make([]*Subscription, 0, len(p.events))
	for s := range p.events {
		evs = append(evs, s)
	}
	p.mu.Unlock()
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
	for _, s := range evs {
		_ = s.stop()
	}
	p.cancel()
	for _, s := range evs {
		s.wait()
	}
	p.evlog.close()
	p.wg.Wait()
	_ = p.nc.Flush()
}

func (p *Peer) isClosed() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.closed
}

// reportError hands an error that has no caller to OnError and the log.
func (p *Peer) reportError(err error) {
	p.log.Warn("peer error", "err", err)
	if p.opts.OnError != nil {
		p.opts.OnError(err)
	}
}

// addHandler registers h and subscribes its any/all subjects.
func (p *Peer) addHandler(h *rawHandler) error {
	if err := ValidateTag(h.tag); err != nil {
		return err
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	if _, ok := p.handlers[h.tag]; ok {
		p.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrDuplicateTag, h.tag)
	}
	p.handlers[h.tag] = h
	p.mu.Unlock()
	if p.opts.NoPresence {
		return nil
	}
	tag := h.tag
	qs, err := p.nc.ChanQueueSubscribe(AnySubject(tag), queueGroup, p.in)
	if err != nil {
		return fmt.Errorf("peer: subscribe: %w", err)
	}
	as, err := p.nc.ChanSubscribe(AllSubject(tag), p.in)
	if err != nil {
		_ = qs.Unsubscribe()
		return fmt.Errorf("peer: subscribe: %w", err)
	}
	p.mu.Lock()
	h.subs = []*nats.Subscription{qs, as}
	p.mu.Unlock()
	if p.pres != nil {
		p.pres.announce("hb")
	}
	return nil
}

// Unregister stops serving tag.
func (p *Peer) Unregister(tag string) error {
	p.mu.Lock()
	h, ok := p.handlers[tag]
	if ok {
		delete(p.handlers, tag)
	}
	p.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %q", ErrNoSuchTag, tag)
	}
	for _, s := range h.subs {
		_ = s.Unsubscribe()
	}
	if p.pres != nil {
		p.pres.announce("hb")
	}
	return nil
}

// requestTag returns the tag a request subject names.
func (p *Peer) requestTag(subject string) string {
	if t, ok := strings.CutPrefix(subject, p.callPrefix); ok {
		return t
	}
	if t, ok := strings.CutPrefix(subject, subjAny); ok {
		return t
	}
	t, _ := strings.CutPrefix(subject, subjAll)
	return t
}

// inboxSize is the number of requests that may wait for a worker; past
// it the NATS client reports a slow consumer and drops requests (their
// callers time out).
const inboxSize = 16384

// worker serves requests from the peer's inbox. NATS delivers requests
// straight into the inbox channel, where one worker at a time, the
// listener, waits. The listener that receives a request hands listening
// to a spare worker (or starts one, up to MaxConcurrent) before it serves
// the request, so a slow function never holds up the requests behind it
// while the limit allows. Having served it, a worker also serves the
// requests that queued in the inbox meanwhile, one after the other, as a
// NATS callback subscription would: their replies leave in one write
// instead of one each, and fewer goroutines wake. Then it becomes a
// spare, or the listener if there is none. Workers live until Close, so
// their stacks stay grown.
func (p *Peer) worker() {
	defer p.wg.Done()
	for {
		// Listen.
		var m *nats.Msg
		select {
		case m = <-p.in:
		case <-p.ctx.Done():
			return
		}
		p.promote()
		p.handle(m)
		// Serve what queued meanwhile.
	drain:
		for {
			select {
			case m = <-p.in:
				p.handle(m)
			default:
				break drain
			}
		}
		p.wmu.Lock()
		if !p.listening { // the limit was reached: nobody listens
			p.listening = true
			p.wmu.Unlock()
			continue
		}
		p.spares++
		p.wmu.Unlock()
		select {
		case <-p.spare:
		case <-p.ctx.Done():
			return
		}
	}
}

// promote makes another worker the listener: a spare one, or a new one
// while the limit allows; at the limit nobody listens until a worker is
// done.
func (p *Peer) promote() {
	p.wmu.Lock()
	switch {
	case p.spares > 0:
		p.spares--
		p.wmu.Unlock()
		p.spare <- struct{}{} // buffered: a spare takes it
	case p.workers < p.opts.MaxConcurrent:
		p.workers++
		p.wmu.Unlock()
		p.wg.Add(1)
		go p.worker()
	default:
		p.listening = false
		p.wmu.Unlock()
	}
}

// handle serves one request.
func (p *Peer) handle(m *nats.Msg) {
	if g := m.Header.Get(HeaderGroup); g == "" || g == p.opts.Group {
		p.serve(m, p.requestTag(m.Subject))
	} // else: a fan-out call for another group
}

func (p *Peer) serve(m *nats.Msg, tag string) {
	p.mu.RLock()
	h := p.handlers[tag]
	p.mu.RUnlock()
	if h == nil {
		p.replyError(m, &RemoteError{Peer: p.id, Tag: tag, Code: CodeNoSuchTag,
			Message: fmt.Sprintf("no such tag %q on this peer", tag), Tags: p.Tags()})
		return
	}
	c := m.Header.Get(HeaderCodec)
	if c == "" {
		c = "json" // the protocol's default
	}
	if c != p.opts.Codec.Name() {
		p.replyError(m, &RemoteError{Peer: p.id, Tag: tag, Code: CodeBadRequest,
			Message: fmt.Sprintf("codec %q not supported, this peer speaks %q", c, p.opts.Codec.Name())})
		return
	}
	var dl time.Time
	hasDL := false
	if d := m.Header.Get(HeaderDeadline); d != "" {
		if ns, err := strconv.ParseInt(d, 10, 64); err == nil {
			dl, hasDL = time.Unix(0, ns), true
		}
	}
	ctx := newServeCtx(p.ctx, dl, hasDL, m.Header.Get(HeaderCaller))
	defer ctx.end()
	out, err := p.runHandler(ctx, h, m.Data)
	if err != nil {
		re := toRemoteError(err, p.id, tag, h.where)
		re.cause = nil
		p.replyError(m, re)
		return
	}
	p.reply(m, out, tag)
}

// runHandler runs h, turning a panic into a RemoteError.
func (p *Peer) runHandler(ctx context.Context, h *rawHandler, args []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = panicError(p.id, h.tag, r)
		}
	}()
	return h.run(ctx, args)
}

func panicError(id, tag string, r any) *RemoteError {
	msg := fmt.Sprint(r)
	if e, ok := r.(error); ok {
		msg = e.Error()
	}
	return &RemoteError{Peer: id, Tag: tag, Code: CodePanic, Type: typeName(r), Message: msg, Stack: string(debug.Stack())}
}

// toRemoteError wraps an error returned by a function.
func toRemoteError(err error, id, tag, where string) *RemoteError {
	var re *RemoteError
	if errors.As(err, &re) && re.Tag == tag && re.Peer == id {
		return re
	}
	code := CodeError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		code = CodeTimeout
	case errors.Is(err, context.Canceled):
		code = CodeCanceled
	case errors.Is(err, ErrBadRequest):
		code = CodeBadRequest
	case errors.Is(err, ErrPayloadTooLarge):
		code = CodeTooLarge
	}
	stack := where
	if st, ok := err.(interface{ StackTrace() string }); ok {
		stack = st.StackTrace()
	}
	return &RemoteError{Peer: id, Tag: tag, Code: code, Type: typeName(err), Message: err.Error(), Stack: stack, cause: err}
}

// maxData is the largest payload that fits a message with headers h.
func (p *Peer) maxData(h nats.Header) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return int(p.nc.MaxPayload()) - n - 16
}

func (p *Peer) reply(m *nats.Msg, data []byte, tag string) {
	if m.Reply == "" {
		return
	}
	r := &nats.Msg{Subject: m.Reply, Header: nats.Header{HeaderPeer: p.idVal, HeaderStatus: p.okVal}}
	if len(data) > p.maxData(r.Header) {
		p.replyError(m, &RemoteError{Peer: p.id, Tag: tag, Code: CodeTooLarge, Type: "peer.ErrPayloadTooLarge",
			Message: fmt.Sprintf("result of %d bytes exceeds the bus max payload of %d bytes", len(data), p.nc.MaxPayload())})
		return
	}
	r.Data = data
	if err := p.nc.PublishMsg(r); err != nil {
		p.reportError(fmt.Errorf("peer: reply to %s: %w", tag, err))
	}
}

func (p *Peer) replyError(m *nats.Msg, re *RemoteError) {
	if m.Reply == "" {
		return
	}
	r := &nats.Msg{Subject: m.Reply, Header: nats.Header{HeaderPeer: p.idVal, HeaderStatus: p.errorVal}}
	data, err := jsonMarshal(re)
	if err == nil && len(data) > p.maxData(r.Header) {
		re.Stack = ""
		if len(re.Message) > 4096 {
			re.Message = re.Message[:4096] + "…"
		}
		data, err = jsonMarshal(re)
	}
	if err != nil {
		p.reportError(fmt.Errorf("peer: encode error reply: %w", err))
		return
	}
	r.Data = data
	if err := p.nc.PublishMsg(r); err != nil {
		p.reportError(fmt.Errorf("peer: reply to %s: %w", re.Tag, err))
	}
}

// funcWhere describes a function's name and location.
func funcWhere(pc uintptr) (name, where string) {
	f := runtime.FuncForPC(pc)
	if f == nil {
		return "", ""
	}
	file, line := f.FileLine(pc)
	return f.Name(), fmt.Sprintf("%s\n\t%s:%d", f.Name(), file, line)
}

type callerKey struct{}

func withCaller(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, callerKey{}, id)
}

// CallerFrom returns the id of the peer that made the call being served
// ("" for a local call or a caller without a peer id).
func CallerFrom(ctx context.Context) string {
	s, _ := ctx.Value(callerKey{}).(string)
	return s
}
