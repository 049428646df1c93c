package peer

// Serving: registering functions under tags, receiving requests and
// replying. Calling is in call.go.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// rawHandler runs a registered function on encoded arguments.
type rawHandler struct {
	tag   string
	where string // function name and location, for error stacks
	run   func(ctx context.Context, args []byte) ([]byte, error)
	subs  []*nats.Subscription
	stats tagStats
	// limit bounds the calls of the tag running at once (0: no limit,
	// the built-in tags); running counts them.
	limit   atomic.Int32
	running atomic.Int32
}

// Register serves fn under tag on p and returns its handle. An empty tag
// is derived from fn's package path and name (e.g.
// "github.com/acme/app/calc.Multiply"); give an explicit tag to share a
// function across code bases where names differ.
func Register[In, Out any](p *Peer, tag string, fn func(context.Context, In) (Out, error)) (*Func[In, Out], error) {
	if fn == nil {
		return nil, errors.New("peer: nil function")
	}
	name, where := funcWhere(reflect.ValueOf(fn).Pointer())
	if tag == "" {
		tag = name
	}
	f := &Func[In, Out]{p: p, tag: tag, fn: fn}
	codec := p.opts.Codec
	h := &rawHandler{tag: tag, where: where, run: func(ctx context.Context, args []byte) ([]byte, error) {
		var in In
		if len(args) > 0 {
			if err := codec.Unmarshal(args, &in); err != nil {
				return nil, fmt.Errorf("%w: decode arguments of %s: %w", ErrBadRequest, tag, err)
			}
		}
		out, err := fn(ctx, in)
		if err != nil {
			return nil, err
		}
		return codec.Marshal(out)
	}}
	if err := p.addHandler(h); err != nil {
		return nil, err
	}
	return f, nil
}

// RegisterRaw serves fn under tag with encoded arguments and results (JSON
// with the default codec). It is the untyped entry point used by the CLI.
func RegisterRaw(p *Peer, tag string, fn func(ctx context.Context, args []byte) ([]byte, error)) error {
	if fn == nil {
		return errors.New("peer: nil function")
	}
	_, where := funcWhere(reflect.ValueOf(fn).Pointer())
	return p.addHandler(&rawHandler{tag: tag, where: where, run: fn})
}

// addHandler registers h and subscribes its any/all subjects, and the
// any subject of the peer's group when it has one.
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
	i := p.info
	i.Tags = append(p.tagsLocked(), h.tag)
	if _, err := checkInfo(i); err != nil {
		p.mu.Unlock()
		return fmt.Errorf("peer: register %q: %w", h.tag, err)
	}
	if h.tag != TagPing && h.tag != TagInfo {
		h.limit.Store(int32(p.opts.TagConcurrency))
	}
	p.handlers[h.tag] = h
	p.mu.Unlock()
	if p.opts.NoPresence {
		return nil
	}
	subs, err := p.subscribeTag(h.tag)
	if err != nil {
		p.mu.Lock()
		if p.handlers[h.tag] == h {
			delete(p.handlers, h.tag)
		}
		p.mu.Unlock()
		return err
	}
	p.mu.Lock()
	h.subs = subs
	p.mu.Unlock()
	if p.pres != nil {
		p.pres.changed()
	}
	return nil
}

// subscribeTag subscribes the shared subjects of tag: any (queue group),
// the group's any (queue group, with a group) and all.
func (p *Peer) subscribeTag(tag string) ([]*nats.Subscription, error) {
	var subs []*nats.Subscription
	fail := func(err error) ([]*nats.Subscription, error) {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
		return nil, fmt.Errorf("peer: subscribe: %w", err)
	}
	qs, err := p.nc.ChanQueueSubscribe(AnySubject(tag), queueGroup, p.in)
	if err != nil {
		return fail(err)
	}
	subs = append(subs, qs)
	if p.opts.Group != "" {
		gs, err := p.nc.ChanQueueSubscribe(GroupAnySubject(p.opts.Group, tag), queueGroup, p.in)
		if err != nil {
			return fail(err)
		}
		subs = append(subs, gs)
	}
	as, err := p.nc.ChanSubscribe(AllSubject(tag), p.in)
	if err != nil {
		return fail(err)
	}
	subs = append(subs, as)
	if err := p.refusedSubscription(subs); err != nil {
		return fail(err)
	}
	return subs, nil
}

// refusedSubscription returns an ErrPermission when the server refused
// one of subs. Only a peer with an identity (a node with a policy)
// asks, with a round trip to the server: the server's -ERR for a refused
// subscription comes before the PONG, and nats.go records it as the
// connection's last error while reading it.
func (p *Peer) refusedSubscription(subs []*nats.Subscription) error {
	if p.opts.Identity == nil {
		return nil
	}
	if err := p.nc.FlushTimeout(p.opts.CallTimeout); err != nil {
		return err
	}
	last := p.nc.LastError()
	if last == nil || !errors.Is(last, nats.ErrPermissionViolation) {
		return nil
	}
	for _, s := range subs {
		if strings.Contains(last.Error(), `Subscription to "`+s.Subject+`"`) {
			return fmt.Errorf("%w: subscribe to %q (the policy does not grant serving it): %w", ErrPermission, s.Subject, last)
		}
	}
	return nil
}

// SetTagConcurrency bounds the calls of tag that run at once to n (see
// Options.TagConcurrency); 0 removes the bound. The tag must be
// registered.
func (p *Peer) SetTagConcurrency(tag string, n int) error {
	if n < 0 {
		return invalid("tag concurrency %d is negative", n)
	}
	p.mu.RLock()
	h := p.handlers[tag]
	p.mu.RUnlock()
	if h == nil {
		return fmt.Errorf("%w: %q", ErrNoSuchTag, tag)
	}
	h.limit.Store(int32(min(n, math.MaxInt32)))
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
		p.pres.changed()
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
	if p.groupAnyPrefix != "" {
		if t, ok := strings.CutPrefix(subject, p.groupAnyPrefix); ok {
			return t
		}
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
		p.drain()
		if !p.becomeSpare() {
			continue // the limit was reached: this worker listens
		}
		select {
		case <-p.spare:
		case <-p.ctx.Done():
			return
		}
	}
}

// drain serves the requests that queued in the inbox meanwhile.
func (p *Peer) drain() {
	for {
		select {
		case m := <-p.in:
			p.handle(m)
		default:
			return
		}
	}
}

// becomeSpare makes a worker done with its requests a spare, unless
// nobody listens (the limit was reached): then it becomes the listener
// and becomeSpare reports false.
func (p *Peer) becomeSpare() bool {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if !p.listening {
		p.listening = true
		return false
	}
	p.spares++
	return true
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

// handle serves one request. Peerbus-Group scopes fan-out calls only: a
// fan-out call for another group is ignored, while the header on any
// other subject is (a group-scoped call of one peer uses the gany
// subject, see GroupAnySubject).
func (p *Peer) handle(m *nats.Msg) {
	if g := m.Header.Get(HeaderGroup); g != "" && g != p.opts.Group && strings.HasPrefix(m.Subject, subjAll) {
		return
	}
	p.serve(m, p.requestTag(m.Subject))
}

func (p *Peer) serve(m *nats.Msg, tag string) {
	p.mu.RLock()
	h := p.handlers[tag]
	p.mu.RUnlock()
	if h == nil {
		p.replyError(m, &RemoteError{Peer: p.id, Tag: tag, Code: CodeNoSuchTag, Type: typeNoSuchTag,
			Message: fmt.Sprintf("no such tag %q on this peer", tag), Tags: p.Tags()})
		return
	}
	start := h.stats.begin()
	if lim := h.limit.Load(); lim > 0 {
		if n := h.running.Add(1); n > lim {
			h.running.Add(-1)
			re := &RemoteError{Peer: p.id, Tag: tag, Code: CodeBusy, Type: typeBusy,
				Message: fmt.Sprintf("tag %q is busy: %d calls running, its limit", tag, lim)}
			h.stats.end(start, re.Code, re.Message)
			p.replyError(m, re)
			return
		}
		defer h.running.Add(-1)
	}
	c := m.Header.Get(HeaderCodec)
	if c == "" {
		c = "json" // the protocol's default
	}
	if c != p.opts.Codec.Name() {
		re := &RemoteError{Peer: p.id, Tag: tag, Code: CodeBadRequest, Type: typeBadRequest,
			Message: fmt.Sprintf("codec %q not supported, this peer speaks %q", c, p.opts.Codec.Name())}
		h.stats.end(start, re.Code, re.Message)
		p.replyError(m, re)
		return
	}
	var dl time.Time
	hasDL := false
	if d := m.Header.Get(HeaderDeadline); d != "" {
		if ns, err := strconv.ParseInt(d, 10, 64); err == nil {
			dl, hasDL = time.Unix(0, ns), true
		}
	}
	if !hasDL {
		// A request without a deadline is bounded all the same.
		dl, hasDL = time.Now().Add(p.opts.CallTimeout), true
	}
	ctx := newServeCtx(p.ctx, dl, hasDL, m.Header.Get(HeaderCaller))
	defer ctx.end()
	out, err := p.runHandler(ctx, h, m.Data)
	if err != nil {
		re := toRemoteError(err, p.id, tag, h.where)
		re.cause = nil
		h.stats.end(start, re.Code, re.Message)
		p.replyError(m, re)
		return
	}
	p.reply(m, out, tag, &h.stats, start)
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

// PanicError returns the error of a panic with value r recovered while
// peer id ran tag (or another named piece of work): a *RemoteError of
// code CodePanic, with the stack of the recovering goroutine. Call it in
// the deferred function that recovers. Packages built on a peer use it
// for the panics of their handlers.
func PanicError(id, tag string, r any) *RemoteError { return panicError(id, tag, r) }

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
	typ := typeName(err)
	if code == CodeBadRequest {
		typ = badRequestType(err)
	}
	return &RemoteError{Peer: id, Tag: tag, Code: code, Type: typ, Message: err.Error(), Stack: stack, cause: err}
}

// The type names of the errors a peer answers without running a
// function (the Go names of the matching sentinels).
const (
	typeBusy       = "peer.ErrBusy"
	typeNoSuchTag  = "peer.ErrNoSuchTag"
	typeBadRequest = "peer.ErrBadRequest"
)

// badRequestType names the cause of a bad request: the type of the error
// wrapped beside ErrBadRequest (e.g. "*json.SyntaxError" for arguments
// that did not decode), else typeBadRequest.
func badRequestType(err error) string {
	for {
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			var next error
			for _, e := range u.Unwrap() {
				if e != ErrBadRequest {
					next = e
				}
			}
			if next == nil {
				return typeBadRequest
			}
			err = next
		case interface{ Unwrap() error }:
			next := u.Unwrap()
			if next == nil {
				return typeName(err)
			}
			err = next
		default:
			if err == ErrBadRequest {
				return typeBadRequest
			}
			return typeName(err)
		}
	}
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

// reply sends a result, or the error of a result too large, which it
// returns.
// reply sends a result, or a too_large error when it does not fit, and
// counts the request's end in st before sending, so that a caller holding
// the reply finds it in the stats.
func (p *Peer) reply(m *nats.Msg, data []byte, tag string, st *tagStats, start time.Time) {
	if m.Reply == "" {
		st.end(start, "", "")
		return
	}
	compact := isCompactReply(m.Reply)
	limit := int(p.nc.MaxPayload()) - 16
	if !compact {
		limit -= p.okHeaderLen
	}
	if len(data) > limit {
		re := &RemoteError{Peer: p.id, Tag: tag, Code: CodeTooLarge, Type: "peer.ErrPayloadTooLarge",
			Message: fmt.Sprintf("result of %d bytes exceeds the bus max payload of %d bytes", len(data), p.nc.MaxPayload())}
		st.end(start, re.Code, re.Message)
		p.replyError(m, re)
		return
	}
	st.end(start, "", "")
	var err error
	if compact {
		err = p.nc.Publish(ReplySubject(m.Reply, p.id), data)
	} else {
		err = p.nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: p.okHeader, Data: data})
	}
	if err != nil {
		p.ReportError(fmt.Errorf("peer: reply to %s: %w", tag, err))
	}
}

// compactReplyMark starts the last token of the reply subject of a
// caller that takes compact replies (see docs/PROTOCOL.md).
const compactReplyMark = "pbc-"

// isCompactReply reports whether a request's reply subject asks for a
// compact reply: a result without headers. Bound replies are compact.
func isCompactReply(reply string) bool {
	last := reply[strings.LastIndexByte(reply, '.')+1:]
	return strings.HasPrefix(last, compactReplyMark) || strings.HasPrefix(last, BoundReplyMark)
}

func (p *Peer) replyError(m *nats.Msg, re *RemoteError) {
	if m.Reply == "" {
		return
	}
	r := &nats.Msg{Subject: ReplySubject(m.Reply, p.id), Header: nats.Header{HeaderPeer: p.idVal, HeaderStatus: p.errorVal}}
	data, err := jsonMarshal(re)
	if err == nil && len(data) > p.maxData(r.Header) {
		re.Stack = ""
		if len(re.Message) > 4096 {
			re.Message = re.Message[:4096] + "…"
		}
		data, err = jsonMarshal(re)
	}
	if err != nil {
		p.ReportError(fmt.Errorf("peer: encode error reply: %w", err))
		return
	}
	r.Data = data
	if err := p.nc.PublishMsg(r); err != nil {
		p.ReportError(fmt.Errorf("peer: reply to %s: %w", re.Tag, err))
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
// ("" for a local call or a caller without a peer id). It is the id the
// caller claims (its Peerbus-Caller header): a policy binds who may call
// a tag, not this id (see SECURITY.md).
func CallerFrom(ctx context.Context) string {
	s, _ := ctx.Value(callerKey{}).(string)
	return s
}
