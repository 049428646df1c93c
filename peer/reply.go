package peer

// The replies of single calls (Peer.call): one wildcard subscription per
// peer, as nats.go's request/reply has, but without a context, a timer
// and a channel made for every call.

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// replyMux receives the replies of a peer's single calls on
// "<inbox>.*": each call publishes its request with the reply subject
// "<inbox>.pbc-<n>" (a caller that takes compact replies, see
// isCompactReply), n a number in base 36 the mux never gives out
// again, and waits on a waiter taken from a pool. A peer with an
// identity asks for bound replies instead: its reply subjects are
// "<inbox>.pbb-<n>", the responder answers on "<inbox>.pbb-<n>.<its id>"
// (see ReplySubject), which a policy lets no other identity publish on,
// and the mux subscribes "<inbox>.>". A waiter keeps its channel, timer, header
// and message from call to call. A permission violation on a request's
// subject (see permWatch), a lost connection and the peer's Close end
// the calls waiting, as they end a nats.go request.
type replyMux struct {
	nc     *nats.Conn
	prefix string // "<inbox>.pbc-", or "<inbox>.pbb-" for bound replies
	bound  bool
	sub    *nats.Subscription
	status chan nats.Status
	done   chan struct{}
	pool   sync.Pool

	mu      sync.Mutex
	next    uint64
	waiting map[uint64]*replyWaiter
	err     error // set when closed: calls fail with it
}

// replyWaiter is one call waiting for its reply.
type replyWaiter struct {
	n       uint64
	subject string         // the request's subject, which a permission violation names
	want    string         // the only responder whose bound reply is taken ("": any)
	ch      chan *nats.Msg // the reply, or nil with err set; sent to under replyMux.mu
	err     error
	timer   *time.Timer
	hdr     nats.Header
	dlv     [1]string // the value of the deadline header
	msg     nats.Msg
	reply   []byte
}

// newReplyMux subscribes the reply subjects of a peer on nc; bound
// asks for bound replies.
func newReplyMux(nc *nats.Conn, bound bool) (*replyMux, error) {
	inbox := nc.NewInbox()
	mark, wild := compactReplyMark, ".*"
	if bound {
		mark, wild = BoundReplyMark, ".>"
	}
	m := &replyMux{
		nc: nc, prefix: inbox + "." + mark, bound: bound, done: make(chan struct{}),
		waiting: make(map[uint64]*replyWaiter),
	}
	m.pool.New = func() any {
		t := time.NewTimer(time.Hour)
		t.Stop()
		return &replyWaiter{ch: make(chan *nats.Msg, 1), timer: t, hdr: make(nats.Header, 4)}
	}
	m.status = nc.StatusChanged(nats.RECONNECTING, nats.DISCONNECTED, nats.CLOSED)
	sub, err := nc.Subscribe(inbox+wild, m.onReply)
	if err != nil {
		nc.RemoveStatusListener(m.status)
		return nil, err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		nc.RemoveStatusListener(m.status)
		return nil, err
	}
	m.sub = sub
	go m.watch()
	return m, nil
}

// watch ends the waiting calls when the connection is lost: nats.go
// fails its pending requests then, and a reply published meanwhile is
// lost.
func (m *replyMux) watch() {
	for {
		select {
		case s, ok := <-m.status:
			if !ok {
				return
			}
			err := nats.ErrDisconnected
			if s == nats.CLOSED {
				err = nats.ErrConnectionClosed
			}
			m.failAll(err)
		case <-m.done:
			return
		}
	}
}

// close fails the waiting calls and further ones with err and
// unsubscribes.
func (m *replyMux) close(err error) {
	m.mu.Lock()
	if m.err != nil {
		m.mu.Unlock()
		return
	}
	m.err = err
	m.failLocked(func(*replyWaiter) bool { return true }, err)
	m.mu.Unlock()
	close(m.done)
	_ = m.sub.Unsubscribe()
	m.nc.RemoveStatusListener(m.status)
}

func (m *replyMux) failAll(err error) {
	m.mu.Lock()
	m.failLocked(func(*replyWaiter) bool { return true }, err)
	m.mu.Unlock()
}

// failSubject fails the calls whose request subject is subject.
func (m *replyMux) failSubject(subject string, err error) {
	m.mu.Lock()
	m.failLocked(func(w *replyWaiter) bool { return w.subject == subject }, err)
	m.mu.Unlock()
}

func (m *replyMux) failLocked(match func(*replyWaiter) bool, err error) {
	for n, w := range m.waiting {
		if match(w) {
			delete(m.waiting, n)
			w.err = err
			w.ch <- nil
		}
	}
}

// onReply hands a reply to its waiter; one reply per call, later ones
// are dropped. A bound reply of a call to one peer is taken only from
// that peer. An unbound reply on a bound reply subject is the server's
// no-responders status, or the reply of a peer that does not bind its
// replies, where no policy is in force.
func (m *replyMux) onReply(msg *nats.Msg) {
	tok, ok := strings.CutPrefix(msg.Subject, m.prefix)
	if !ok {
		return
	}
	from := ""
	if m.bound {
		if i := strings.IndexByte(tok, '.'); i >= 0 {
			tok, from = tok[:i], tok[i+1:]
		}
	}
	n, err := strconv.ParseUint(tok, 36, 64)
	if err != nil {
		return
	}
	m.mu.Lock()
	if w := m.waiting[n]; w != nil && (from == "" || w.want == "" || from == w.want) {
		delete(m.waiting, n)
		w.ch <- msg
	}
	m.mu.Unlock()
}

// acquire returns a registered waiter for a request on subject, with
// its reply subject set; want is the one peer whose bound reply the
// call takes ("": any peer).
func (m *replyMux) acquire(subject, want string) (*replyWaiter, error) {
	w := m.pool.Get().(*replyWaiter)
	w.subject, w.want = subject, want
	m.mu.Lock()
	if m.err != nil {
		err := m.err
		m.mu.Unlock()
		m.pool.Put(w)
		return nil, err
	}
	m.next++
	w.n = m.next
	m.waiting[w.n] = w
	m.mu.Unlock()
	w.reply = strconv.AppendUint(append(w.reply[:0], m.prefix...), w.n, 36)
	return w, nil
}

// release unregisters w if its call is still waiting, drops a reply
// that came meanwhile, and returns w to the pool.
func (m *replyMux) release(w *replyWaiter) {
	m.mu.Lock()
	if m.waiting[w.n] == w {
		delete(m.waiting, w.n)
	} else {
		select { // a reply, or a failure, was sent under mu
		case <-w.ch:
		default:
		}
	}
	m.mu.Unlock()
	m.put(w)
}

// put returns a waiter whose call is over to the pool.
func (m *replyMux) put(w *replyWaiter) {
	w.timer.Stop()
	w.msg = nats.Msg{}
	w.subject, w.want, w.err = "", "", nil
	m.pool.Put(w)
}

// replies returns the peer's reply mux, subscribing it on first use.
func (p *Peer) replies() (*replyMux, error) {
	if m := p.rmux.Load(); m != nil {
		return m, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	if m := p.rmux.Load(); m != nil {
		return m, nil
	}
	m, err := newReplyMux(p.nc, p.opts.Identity != nil)
	if err != nil {
		return nil, fmt.Errorf("peer: subscribe replies: %w", err)
	}
	p.perm.addMux(m)
	p.rmux.Store(m)
	return m, nil
}

// closeReplies ends the calls still waiting with ErrClosed.
func (p *Peer) closeReplies() {
	p.mu.Lock()
	m := p.rmux.Load()
	p.mu.Unlock()
	if m != nil {
		p.perm.removeMux(m)
		m.close(ErrClosed)
	}
}

// roundTrip publishes a request of args on subject and waits for its
// reply, for at most timeout and within ctx. It returns the reply, or
// ctx's error, context.DeadlineExceeded at the timeout, a nats.go error
// (nats.ErrNoResponders, nats.ErrDisconnected, ...), ErrClosed, an
// ErrPermission or an ErrPayloadTooLarge.
//
// want is the one peer whose bound reply the call takes ("": any).
func (p *Peer) roundTrip(ctx context.Context, subject, want string, args []byte, timeout time.Duration) (*nats.Msg, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dl := time.Now().Add(timeout)
	useTimer := true
	if cdl, ok := ctx.Deadline(); ok && !cdl.After(dl) {
		dl, useTimer = cdl, false // ctx ends first
	}
	m, err := p.replies()
	if err != nil {
		return nil, err
	}
	w, err := m.acquire(subject, want)
	if err != nil {
		return nil, err
	}
	h := w.hdr
	clear(h)
	p.requestHeader(h, time.Time{}, false, "")
	w.dlv[0] = strconv.FormatInt(dl.UnixNano(), 10)
	h[HeaderDeadline] = w.dlv[:]
	if len(args) > p.maxData(h)-len(subject)-64 {
		m.release(w)
		return nil, tooLargeArgs(len(args), p.nc.MaxPayload())
	}
	w.msg = nats.Msg{Subject: subject, Reply: string(w.reply), Header: h, Data: args}
	if err := p.nc.PublishMsg(&w.msg); err != nil {
		m.release(w)
		return nil, err
	}
	var expired <-chan time.Time
	if useTimer {
		w.timer.Reset(time.Until(dl)) // at the deadline the callee was sent, not later by the publish
		expired = w.timer.C
	}
	select {
	case r := <-w.ch:
		err := w.err
		m.put(w)
		if r == nil {
			return nil, err
		}
		if len(r.Data) == 0 && r.Header.Get("Status") == "503" {
			return nil, nats.ErrNoResponders
		}
		return r, nil
	case <-ctx.Done():
		m.release(w)
		return nil, ctx.Err()
	case <-expired:
		m.release(w)
		return nil, context.DeadlineExceeded
	}
}

// BoundReplyMark starts the last token of the reply subject of a
// request whose caller takes bound replies: a peer answers such a
// request on ReplySubject(reply, its id), "<reply>.<its id>", a subject
// that the policy lets only that peer publish on (see docs/PROTOCOL.md,
// "Bound replies"). The reply is compact, as with compactReplyMark.
const BoundReplyMark = "pbb-"

// ReplySubject returns the subject on which the peer with id id
// publishes its reply to a request whose reply subject is reply:
// "<reply>.<id>" when the caller asked for a bound reply (the last token
// of reply starts with BoundReplyMark), else reply.
func ReplySubject(reply, id string) string {
	if isBoundReply(reply) {
		return reply + "." + id
	}
	return reply
}

// isBoundReply reports whether a request's reply subject asks for a
// bound reply.
func isBoundReply(reply string) bool {
	i := strings.LastIndexByte(reply, '.')
	return strings.HasPrefix(reply[i+1:], BoundReplyMark)
}

// BoundResponder returns the responder named by the subject of a bound
// reply ("<reply>.<id>" where reply's last token starts with
// BoundReplyMark): its id, bound by the policy to the key of the
// connection that published it, and true; "", false for any other
// subject.
func BoundResponder(subject string) (string, bool) {
	i := strings.LastIndexByte(subject, '.')
	if i < 0 || !isBoundReply(subject[:i]) || i == len(subject)-1 {
		return "", false
	}
	return subject[i+1:], true
}
