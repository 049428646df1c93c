package peer

// Calling: handles of tagged functions, single and fan-out calls, and
// their options. Serving is in serve.go.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/internal/names"
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
	cfg, err := newCallConfig(opts)
	if err != nil {
		return zero, err
	}
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
func (f *Func[In, Out]) CallAll(ctx context.Context, in In, opts ...CallAllOption) ([]Reply[Out], error) {
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

// CallOption changes a call of one function (Func.Call, Peer.Call):
// where it runs (OnPeer, OnAny, InGroup) and how long it may take
// (Timeout). An invalid value fails the call with an error wrapping
// ErrInvalidOption.
type CallOption interface{ applyCall(*callConfig) error }

// CallAllOption changes a fan-out call (Func.CallAll, Peer.CallAll):
// which peers answer (InGroup, OnPeers) and how long they may take
// (Timeout). An invalid value fails the call with an error wrapping
// ErrInvalidOption.
type CallAllOption interface{ applyCallAll(*callConfig) error }

// callAllOption is a CallAllOption only.
type callAllOption func(*callConfig) error

func (o callAllOption) applyCallAll(c *callConfig) error { return o(c) }

// OnPeer runs the call on the peer with this id.
func OnPeer(id string) CallOption { return onPeer(id) }

// onPeer is the option of OnPeer.
type onPeer string

func (o onPeer) applyCall(c *callConfig) error {
	if err := names.Token(string(o)); err != nil {
		return fmt.Errorf("%w: peer id %q: %v", ErrInvalidOption, string(o), err)
	}
	c.target, c.peer = targetPeer, string(o)
	return nil
}

// OnAny runs the call on any one peer offering the tag, load-balanced
// by the bus; with InGroup, on any one peer of that group.
func OnAny() CallOption { return onAny{} }

// onAny is the option of OnAny.
type onAny struct{}

func (onAny) applyCall(c *callConfig) error { c.target = targetAny; return nil }

// OnPeers limits a fan-out call to the listed peers (each is called
// directly, in parallel).
func OnPeers(ids ...string) CallAllOption {
	return callAllOption(func(c *callConfig) error {
		for _, id := range ids {
			if err := names.Token(id); err != nil {
				return fmt.Errorf("%w: peer id %q: %v", ErrInvalidOption, id, err)
			}
		}
		c.peers = append(c.peers, ids...)
		return nil
	})
}

// InGroup limits a call to the peers of a group: with OnAny, one peer of
// the group runs it (load-balanced among them, on the group's any
// subject: see docs/PROTOCOL.md); in a fan-out call every peer of the
// group answers. The empty group is no limit. It is both a CallOption
// (with OnAny only: a call on one chosen peer or a local call fails with
// ErrInvalidOption) and a CallAllOption.
type InGroup string

func (g InGroup) applyCall(c *callConfig) error    { return g.apply(c) }
func (g InGroup) applyCallAll(c *callConfig) error { return g.apply(c) }

func (g InGroup) apply(c *callConfig) error {
	if g != "" {
		if err := names.Token(string(g)); err != nil {
			return fmt.Errorf("%w: group %q: %v", ErrInvalidOption, string(g), err)
		}
	}
	c.group = string(g)
	return nil
}

// Timeout bounds a call: the earlier of it and ctx's deadline wins. Zero
// means the peer's CallTimeout; a negative timeout is invalid. It is
// both a CallOption and a CallAllOption.
type Timeout time.Duration

func (d Timeout) applyCall(c *callConfig) error    { return d.apply(c) }
func (d Timeout) applyCallAll(c *callConfig) error { return d.apply(c) }

func (d Timeout) apply(c *callConfig) error {
	if d < 0 {
		return fmt.Errorf("%w: timeout %v", ErrInvalidOption, time.Duration(d))
	}
	c.timeout = time.Duration(d)
	return nil
}

func newCallConfig(opts []CallOption) (callConfig, error) {
	var c callConfig
	for _, o := range opts {
		// The options of this package by their types: c stays on the
		// stack.
		var err error
		switch o := o.(type) {
		case onPeer:
			err = o.applyCall(&c)
		case onAny:
			err = o.applyCall(&c)
		case InGroup:
			err = o.applyCall(&c)
		case Timeout:
			err = o.applyCall(&c)
		default:
			h := new(callConfig)
			*h = c
			err = o.applyCall(h)
			c = *h
		}
		if err != nil {
			return c, err
		}
	}
	if c.group != "" && c.target != targetAny {
		return c, fmt.Errorf("%w: InGroup applies to a call with OnAny (or a fan-out call)", ErrInvalidOption)
	}
	return c, nil
}

func newCallAllConfig(opts []CallAllOption) (callConfig, error) {
	var c callConfig
	for _, o := range opts {
		if err := o.applyCallAll(&c); err != nil {
			return c, err
		}
	}
	return c, nil
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
	cfg, err := newCallConfig(opts)
	if err != nil {
		return nil, err
	}
	if cfg.target == targetLocal {
		p.mu.RLock()
		h := p.handlers[tag]
		p.mu.RUnlock()
		if h == nil {
			return nil, &RemoteError{Peer: p.id, Tag: tag, Code: CodeNoSuchTag, Type: typeNoSuchTag,
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
	dl, ok := ctx.Deadline()
	p.requestHeader(m.Header, dl, ok, group)
	if len(args) > p.maxData(m.Header)-len(subject)-64 {
		return nil, tooLargeArgs(len(args), p.nc.MaxPayload())
	}
	m.Data = args
	return m, nil
}

// requestHeader sets the headers of a request (see docs/PROTOCOL.md) in
// the empty h.
func (p *Peer) requestHeader(h nats.Header, dl time.Time, hasDL bool, group string) {
	if p.codecVal != nil {
		h[HeaderCodec] = p.codecVal
	}
	if p.callerVal != nil {
		h[HeaderCaller] = p.callerVal
	}
	if hasDL {
		h[HeaderDeadline] = []string{strconv.FormatInt(dl.UnixNano(), 10)}
	}
	if group != "" {
		h[HeaderGroup] = []string{group}
	}
}

// tooLargeArgs is the error of arguments that do not fit a request.
func tooLargeArgs(n int, max int64) error {
	return fmt.Errorf("%w: arguments of %d bytes exceed the bus max payload of %d bytes", ErrPayloadTooLarge, n, max)
}

// call runs a request on one peer: a chosen one, any one, or any one of
// a group.
func (p *Peer) call(ctx context.Context, tag string, args []byte, cfg callConfig) ([]byte, error) {
	if p.isClosed() {
		return nil, ErrClosed
	}
	timeout := p.opts.CallTimeout
	if cfg.timeout > 0 {
		timeout = cfg.timeout
	}
	var subject, want string
	switch {
	case cfg.target == targetPeer:
		subject, want = CallSubject(cfg.peer, tag), cfg.peer
	case cfg.group != "":
		subject = GroupAnySubject(cfg.group, tag)
	default:
		subject = AnySubject(tag)
	}
	resp, err := p.roundTrip(ctx, subject, want, args, timeout)
	if err != nil {
		switch {
		case errors.Is(err, ErrPermission):
			return nil, fmt.Errorf("peer: call %q: %w", tag, err)
		case errors.Is(err, ErrPayloadTooLarge), errors.Is(err, ErrClosed):
			return nil, err
		}
		return nil, p.requestError(err, tag, cfg)
	}
	return parseReply(resp) // a compact reply (no headers) is a result
}

// requestError maps nats.go request errors to this package's sentinels.
func (p *Peer) requestError(err error, tag string, cfg callConfig) error {
	who := "any peer"
	switch {
	case cfg.target == targetPeer:
		who = "peer " + cfg.peer
	case cfg.group != "":
		who = "any peer of group " + cfg.group
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

// parseReply decodes a reply message: its data on success (a compact
// reply has no headers), a *RemoteError on an error reply. The error's
// Peer is the responder a bound reply's subject names, whatever its
// payload says.
func parseReply(m *nats.Msg) ([]byte, error) {
	if len(m.Header) == 0 {
		return m.Data, nil
	}
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
		if id, ok := BoundResponder(m.Subject); ok {
			re.Peer = id
		} else if re.Peer == "" {
			re.Peer = m.Header.Get(HeaderPeer)
		}
		return nil, re
	default:
		return nil, fmt.Errorf("peer: malformed reply: %s header %q", HeaderStatus, m.Header.Get(HeaderStatus))
	}
}

// RawReply is one peer's answer to an untyped fan-out call.
type RawReply struct {
	// Peer is the id of the answering peer.
	Peer string
	// Data is the encoded result when Err is nil.
	Data []byte
	// Err is the peer's error (see Reply.Err).
	Err error
}

// CallAll is the untyped fan-out call (see Func.CallAll).
func (p *Peer) CallAll(ctx context.Context, tag string, args []byte, opts ...CallAllOption) ([]RawReply, error) {
	if err := ValidateTag(tag); err != nil {
		return nil, err
	}
	if p.isClosed() {
		return nil, ErrClosed
	}
	cfg, err := newCallAllConfig(opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := p.callContext(ctx, cfg)
	defer cancel()
	if len(cfg.peers) > 0 {
		return p.callEach(ctx, tag, args, cfg)
	}
	if cfg.group != "" && p.opts.Group != cfg.group {
		// A group with no live peer: the peers of other groups would
		// ignore the request, and nobody would answer.
		var infos []Info
		if v := p.pres.currentView(); v != nil {
			infos = v.list(PeerQuery{Group: cfg.group}, nil)
		} else {
			as, _ := p.queryPeers(ctx, PeerQuery{Group: cfg.group})
			for _, a := range as {
				infos = append(infos, a.Info)
			}
		}
		if len(infos) == 0 {
			return nil, fmt.Errorf("%w: no peer of group %q offers tag %q (the group has no live peer)", ErrNoResponders, cfg.group, tag)
		}
	}
	m, err := p.request(ctx, AllSubject(tag), args, cfg.group)
	if err != nil {
		return nil, err
	}
	// The replies come on inbox; with an identity, bound replies come on
	// "<inbox>.<responder id>" and the server's no-responders status on
	// inbox itself.
	inbox, subj := p.nc.NewRespInbox(), ""
	if p.opts.Identity != nil {
		base := p.nc.NewInbox()
		inbox, subj = base+"."+BoundReplyMark+"all", base+".>"
	} else {
		subj = inbox
	}
	// Replies wait in the subscription's pending queue (nats.go's
	// limits, 512k messages), not in a small channel that would drop the
	// replies of a large fan-out as a slow consumer.
	ch := make(chan *nats.Msg, 64)
	gathered := make(chan struct{})
	sub, err := p.nc.Subscribe(subj, func(m *nats.Msg) {
		select {
		case ch <- m:
		case <-gathered:
		}
	})
	if err != nil {
		return nil, fmt.Errorf("peer: subscribe: %w", err)
	}
	defer sub.Unsubscribe()
	defer close(gathered)
	// The expected peers: from the live view when there is one, else
	// from a query only the peers serving tag (in the group) answer,
	// run while the replies come in.
	q := PeerQuery{Tag: tag, Group: cfg.group}
	expCh := make(chan []string, 1)
	qctx, qcancel := context.WithCancel(ctx)
	qdone := make(chan struct{})
	defer func() {
		qcancel()
		<-qdone
	}()
	if v := p.pres.currentView(); v != nil {
		go func() {
			defer close(qdone)
			select {
			case <-v.synced:
			case <-qctx.Done():
				return
			}
			infos := v.list(q, nil)
			ids := make([]string, len(infos))
			for i, in := range infos {
				ids[i] = in.ID
			}
			expCh <- ids
		}()
	} else {
		go func() {
			defer close(qdone)
			as, _ := p.queryPeers(qctx, q)
			ids := make([]string, len(as))
			for i, a := range as {
				ids[i] = a.ID
			}
			expCh <- ids
		}()
	}
	m.Reply = inbox
	ctx, stop := p.perm.wait(ctx, m.Subject)
	defer stop()
	if err := p.nc.PublishMsg(m); err != nil {
		return nil, fmt.Errorf("peer: call %q: %w", tag, err)
	}
	out, err := gatherReplies(ctx, tag, ch, expCh)
	if perr := permissionCause(ctx); perr != nil && len(out) == 0 {
		return nil, fmt.Errorf("peer: call %q: %w", tag, perr)
	}
	if len(out) == 0 && errors.Is(err, ErrNoResponders) && cfg.group != "" {
		err = fmt.Errorf("%w: no peer of group %q answered tag %q", ErrNoResponders, cfg.group, tag)
	}
	return out, err
}

// fanOutSettle is how long a fan-out call with no expectation from
// presence waits after the last reply before deciding every peer has
// answered.
const fanOutSettle = 250 * time.Millisecond

// gatherReplies collects the replies of a fan-out call from ch until
// every expected peer answered (the expected ids come on expCh; with
// none, until fanOutSettle passed without a reply), or ctx ends.
func gatherReplies(ctx context.Context, tag string, ch <-chan *nats.Msg, expCh <-chan []string) ([]RawReply, error) {
	var out []RawReply
	seen := map[string]bool{}
	pending := map[string]bool{}
	known, expected := false, 0
	var settleC <-chan time.Time
	for {
		if known {
			if expected > 0 && len(pending) == 0 {
				return out, nil
			}
			if expected == 0 && settleC == nil {
				settleC = time.After(fanOutSettle)
			}
		}
		select {
		case ids := <-expCh:
			known, expected, expCh = true, len(ids), nil
			for _, id := range ids {
				if !seen[id] {
					pending[id] = true
				}
			}
		case r := <-ch:
			if r.Header.Get("Status") == "503" {
				if len(out) == 0 {
					return nil, fmt.Errorf("%w: no peer offers tag %q", ErrNoResponders, tag)
				}
				continue
			}
			id, ok := BoundResponder(r.Subject)
			if !ok {
				id = r.Header.Get(HeaderPeer)
			}
			if seen[id] {
				continue
			}
			seen[id] = true
			data, err := parseReply(r)
			out = append(out, RawReply{Peer: id, Data: data, Err: err})
			delete(pending, id)
			if known && expected == 0 {
				settleC = time.After(fanOutSettle)
			}
		case <-settleC:
			if len(out) == 0 {
				return nil, fmt.Errorf("%w: no peer answered tag %q", ErrNoResponders, tag)
			}
			return out, nil
		case <-ctx.Done():
			for id := range pending {
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
			c.target, c.peer, c.group = targetPeer, id, ""
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
