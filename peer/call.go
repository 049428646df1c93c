package peer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// Func is the handle of a tagged function. Call runs it locally (no
// target option) or on other peers; CallAll runs it on every peer that
// offers the tag.
type Func[In, Out any] struct {
	p   *Peer
	tag string
	fn  func(context.Context, In) (Out, error) // nil for a Stub
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
	h := &rawHandler{tag: tag, where: where, local: fn, run: func(ctx context.Context, args []byte) ([]byte, error) {
		var in In
		if len(args) > 0 {
			if err := codec.Unmarshal(args, &in); err != nil {
				return nil, fmt.Errorf("%w: decode arguments of %s: %v", ErrBadRequest, tag, err)
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

// Stub returns a handle for a tag served by other peers, with no local
// function: a call with no target fails with ErrNoSuchTag.
func Stub[In, Out any](p *Peer, tag string) (*Func[In, Out], error) {
	if err := ValidateTag(tag); err != nil {
		return nil, err
	}
	return &Func[In, Out]{p: p, tag: tag}, nil
}

// Tag returns the function's tag.
func (f *Func[In, Out]) Tag() string { return f.tag }

// Call runs the function. With no target option it runs locally, as a
// plain call, and gives the same result and the same kind of error
// (*RemoteError) as a remote call. OnPeer and OnAny run it remotely.
func (f *Func[In, Out]) Call(ctx context.Context, in In, opts ...CallOption) (Out, error) {
	var zero Out
	cfg := newCallConfig(opts)
	if cfg.target == targetLocal {
		if f.fn == nil {
			return zero, &RemoteError{Peer: f.p.id, Tag: f.tag, Code: CodeNoSuchTag,
				Message: fmt.Sprintf("no such tag %q on this peer", f.tag), Tags: f.p.Tags()}
		}
		return f.callLocal(ctx, in, cfg)
	}
	args, err := f.p.opts.Codec.Marshal(in)
	if err != nil {
		return zero, fmt.Errorf("peer: encode arguments of %s: %w", f.tag, err)
	}
	data, err := f.p.call(ctx, f.tag, args, cfg)
	if err != nil {
		return zero, err
	}
	var out Out
	if err := f.p.opts.Codec.Unmarshal(data, &out); err != nil {
		return zero, fmt.Errorf("peer: decode result of %s: %w", f.tag, err)
	}
	return out, nil
}

func (f *Func[In, Out]) callLocal(ctx context.Context, in In, cfg callConfig) (out Out, err error) {
	ctx, cancel := f.p.callContext(ctx, cfg)
	defer cancel()
	_, where := funcWhere(reflect.ValueOf(f.fn).Pointer())
	defer func() {
		if r := recover(); r != nil {
			err = panicError(f.p.id, f.tag, r)
		}
	}()
	out, err = f.fn(withCaller(ctx, ""), in)
	if err != nil {
		return out, toRemoteError(err, f.p.id, f.tag, where)
	}
	return out, nil
}

// Reply is one peer's answer to a fan-out call.
type Reply[Out any] struct {
	// Peer is the id of the answering peer.
	Peer string
	// Value is the result when Err is nil.
	Value Out
	// Err is the peer's error: a *RemoteError, or ErrTimeout for a peer
	// that was expected (by presence) but did not answer in time.
	Err error
}

// CallAll runs the function on every live peer offering the tag (those
// of one group with InGroup, or the listed ones with OnPeers) and
// gathers every reply or error, in arrival order. It returns once every
// expected peer has answered, or at the deadline. The error is
// ErrNoResponders when no peer answered at all.
func (f *Func[In, Out]) CallAll(ctx context.Context, in In, opts ...CallOption) ([]Reply[Out], error) {
	args, err := f.p.opts.Codec.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("peer: encode arguments of %s: %w", f.tag, err)
	}
	raw, err := f.p.CallAll(ctx, f.tag, args, opts...)
	out := make([]Reply[Out], len(raw))
	for i, r := range raw {
		out[i] = Reply[Out]{Peer: r.Peer, Err: r.Err}
		if r.Err == nil {
			if derr := f.p.opts.Codec.Unmarshal(r.Data, &out[i].Value); derr != nil {
				out[i].Err = fmt.Errorf("peer: decode result of %s from %s: %w", f.tag, r.Peer, derr)
			}
		}
	}
	return out, err
}

// call targets.
const (
	targetLocal = iota
	targetPeer
	targetAny
)

type callConfig struct {
	target  int
	peer    string
	group   string
	peers   []string
	timeout time.Duration
}

// CallOption selects where a call runs and bounds it.
type CallOption func(*callConfig)

// OnPeer runs the call on the peer with this id.
func OnPeer(id string) CallOption {
	return func(c *callConfig) { c.target, c.peer = targetPeer, id }
}

// OnAny runs the call on any one peer offering the tag (load-balanced).
func OnAny() CallOption { return func(c *callConfig) { c.target = targetAny } }

// InGroup limits a fan-out call to peers of group g.
func InGroup(g string) CallOption { return func(c *callConfig) { c.group = g } }

// OnPeers limits a fan-out call to the listed peers.
func OnPeers(ids ...string) CallOption {
	return func(c *callConfig) { c.peers = append(c.peers, ids...) }
}

// Timeout bounds the call (the earlier of it and ctx's deadline wins).
func Timeout(d time.Duration) CallOption { return func(c *callConfig) { c.timeout = d } }

func newCallConfig(opts []CallOption) callConfig {
	var c callConfig
	for _, o := range opts {
		o(&c)
	}
	return c
}

func (p *Peer) callContext(ctx context.Context, cfg callConfig) (context.Context, context.CancelFunc) {
	d := p.opts.CallTimeout
	if cfg.timeout > 0 {
		d = cfg.timeout
	}
	return context.WithTimeout(ctx, d)
}

// Call is the untyped entry point: it runs tag with encoded args (JSON
// with the default codec) and returns the encoded result. With no target
// option it runs a local function.
func (p *Peer) Call(ctx context.Context, tag string, args []byte, opts ...CallOption) ([]byte, error) {
	if err := ValidateTag(tag); err != nil {
		return nil, err
	}
	cfg := newCallConfig(opts)
	if cfg.target == targetLocal {
		p.mu.RLock()
		h := p.handlers[tag]
		p.mu.RUnlock()
		if h == nil {
			return nil, &RemoteError{Peer: p.id, Tag: tag, Code: CodeNoSuchTag,
				Message: fmt.Sprintf("no such tag %q on this peer", tag), Tags: p.Tags()}
		}
		ctx, cancel := p.callContext(ctx, cfg)
		defer cancel()
		out, err := p.runHandler(withCaller(ctx, ""), h, args)
		if err != nil {
			return nil, toRemoteError(err, p.id, tag, h.where)
		}
		return out, nil
	}
	return p.call(ctx, tag, args, cfg)
}

// request builds a call request message.
func (p *Peer) request(ctx context.Context, subject string, args []byte, group string) (*nats.Msg, error) {
	m := &nats.Msg{Subject: subject, Header: make(nats.Header, 4)}
	if p.codecVal != nil {
		m.Header[HeaderCodec] = p.codecVal
	}
	if p.callerVal != nil {
		m.Header[HeaderCaller] = p.callerVal
	}
	if dl, ok := ctx.Deadline(); ok {
		m.Header[HeaderDeadline] = []string{strconv.FormatInt(dl.UnixNano(), 10)}
	}
	if group != "" {
		m.Header[HeaderGroup] = []string{group}
	}
	if len(args) > p.maxData(m.Header)-len(subject)-64 {
		return nil, fmt.Errorf("%w: arguments of %d bytes exceed the bus max payload of %d bytes",
			ErrPayloadTooLarge, len(args), p.nc.MaxPayload())
	}
	m.Data = args
	return m, nil
}

func (p *Peer) call(ctx context.Context, tag string, args []byte, cfg callConfig) ([]byte, error) {
	if p.isClosed() {
		return nil, ErrClosed
	}
	ctx, cancel := p.callContext(ctx, cfg)
	defer cancel()
	var subject string
	if cfg.target == targetPeer {
		if err := validToken(cfg.peer); err != nil {
			return nil, fmt.Errorf("peer: invalid peer id %q: %v", cfg.peer, err)
		}
		subject = CallSubject(cfg.peer, tag)
	} else {
		subject = AnySubject(tag)
	}
	m, err := p.request(ctx, subject, args, "")
	if err != nil {
		return nil, err
	}
	resp, err := p.nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		return nil, p.requestError(err, tag, cfg.peer)
	}
	return parseReply(resp)
}

// requestError maps nats.go request errors to this package's sentinels.
func (p *Peer) requestError(err error, tag, peer string) error {
	who := "any peer"
	if peer != "" {
		who = "peer " + peer
	}
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("%w: %s for tag %q", ErrNoResponders, who, tag)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("%w: %s for tag %q: %w", ErrTimeout, who, tag, context.DeadlineExceeded)
	case errors.Is(err, nats.ErrConnectionClosed):
		return fmt.Errorf("peer: call %q: %w", tag, ErrClosed)
	}
	return fmt.Errorf("peer: call %q on %s: %w", tag, who, err)
}

// parseReply decodes a reply message: its data on success, a
// *RemoteError on an error reply.
func parseReply(m *nats.Msg) ([]byte, error) {
	if m.Header.Get("Status") == "503" {
		return nil, ErrNoResponders
	}
	switch m.Header.Get(HeaderStatus) {
	case "ok":
		return m.Data, nil
	case "error":
		re, err := decodeError(m.Data)
		if err != nil {
			return nil, err
		}
		if re.Peer == "" {
			re.Peer = m.Header.Get(HeaderPeer)
		}
		return nil, re
	default:
		return nil, fmt.Errorf("peer: malformed reply: %s header %q", HeaderStatus, m.Header.Get(HeaderStatus))
	}
}

// RawReply is one peer's answer to an untyped fan-out call.
type RawReply struct {
	Peer string
	Data []byte
	Err  error
}

// CallAll is the untyped fan-out call (see Func.CallAll).
func (p *Peer) CallAll(ctx context.Context, tag string, args []byte, opts ...CallOption) ([]RawReply, error) {
	if err := ValidateTag(tag); err != nil {
		return nil, err
	}
	if p.isClosed() {
		return nil, ErrClosed
	}
	cfg := newCallConfig(opts)
	ctx, cancel := p.callContext(ctx, cfg)
	defer cancel()
	if len(cfg.peers) > 0 {
		return p.callEach(ctx, tag, args, cfg)
	}
	expected := map[string]bool{}
	if infos, err := p.Peers(ctx, WithTag(tag), ByGroup(cfg.group)); err == nil {
		for _, i := range infos {
			expected[i.ID] = true
		}
	}
	m, err := p.request(ctx, AllSubject(tag), args, cfg.group)
	if err != nil {
		return nil, err
	}
	inbox := p.nc.NewRespInbox()
	ch := make(chan *nats.Msg, 64)
	sub, err := p.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, fmt.Errorf("peer: subscribe: %w", err)
	}
	defer sub.Unsubscribe()
	m.Reply = inbox
	if err := p.nc.PublishMsg(m); err != nil {
		return nil, fmt.Errorf("peer: call %q: %w", tag, err)
	}
	var out []RawReply
	seen := map[string]bool{}
	// With no expectation from presence, wait this long after the last
	// reply before deciding every peer has answered.
	const settle = 250 * time.Millisecond
	var settleC <-chan time.Time
	if len(expected) == 0 {
		settleC = time.After(settle)
	}
	for {
		select {
		case r := <-ch:
			if r.Header.Get("Status") == "503" {
				if len(out) == 0 {
					return nil, fmt.Errorf("%w: no peer offers tag %q", ErrNoResponders, tag)
				}
				continue
			}
			id := r.Header.Get(HeaderPeer)
			if seen[id] {
				continue
			}
			seen[id] = true
			data, err := parseReply(r)
			out = append(out, RawReply{Peer: id, Data: data, Err: err})
			delete(expected, id)
			if len(expected) == 0 {
				if len(seen) > 0 && settleC == nil {
					return out, nil
				}
				settleC = time.After(settle)
			}
		case <-settleC:
			if len(out) == 0 {
				return nil, fmt.Errorf("%w: no peer answered tag %q", ErrNoResponders, tag)
			}
			return out, nil
		case <-ctx.Done():
			for id := range expected {
				out = append(out, RawReply{Peer: id, Err: fmt.Errorf("%w: peer %s for tag %q: %w", ErrTimeout, id, tag, context.DeadlineExceeded)})
			}
			if len(out) == 0 {
				return nil, fmt.Errorf("%w: no peer answered tag %q: %w", ErrNoResponders, tag, ctx.Err())
			}
			return out, nil
		}
	}
}

// callEach calls every listed peer directly, in parallel.
func (p *Peer) callEach(ctx context.Context, tag string, args []byte, cfg callConfig) ([]RawReply, error) {
	out := make([]RawReply, len(cfg.peers))
	done := make(chan struct{})
	for i, id := range cfg.peers {
		go func() {
			c := cfg
			c.target, c.peer = targetPeer, id
			data, err := p.call(ctx, tag, args, c)
			out[i] = RawReply{Peer: id, Data: data, Err: err}
			done <- struct{}{}
		}()
	}
	for range cfg.peers {
		<-done
	}
	return out, nil
}
