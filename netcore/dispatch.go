package netcore

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"slices"

	"github.com/peerbus/peerbus/internal/queue"
)

// receive delivers a message that arrived on p to p's handlers and
// subscriptions, then to those of its server; if none took it, it is kept
// in p's backlog.
func (p *Pipe) receive(data []byte, from netip.AddrPort) {
	p.count(cMessagesIn, 1)
	p.count(cBytesIn, uint64(len(data)))
	m := Message{Data: data, From: from, Pipe: p}
	taken := p.deliver(&m)
	if p.parent != nil && p.parent.deliver(&m) {
		taken = true
	}
	if !taken {
		p.keepUnclaimed(m)
	}
}

// deliver hands m to p's handlers and matching subscriptions and reports
// whether any took it.
func (p *Pipe) deliver(m *Message) bool {
	taken := false
	if hs := p.handlers.Load(); hs != nil && len(*hs) > 0 {
		for _, h := range *hs {
			h.fn(*m)
		}
		taken = true
	}
	if ss := p.subs.Load(); ss != nil {
		for _, s := range *ss {
			if s.matches(m) {
				s.push(*m)
				taken = true
			}
		}
	}
	return taken
}

// keepUnclaimed handles a message that no handler or subscription took:
// a subscription added meanwhile may still take it; otherwise it is counted
// as unmatched and kept in the backlog of p and of p's server.
func (p *Pipe) keepUnclaimed(m Message) {
	taken := p.keepIfUnclaimed(m)
	if p.parent != nil && p.parent.keepIfUnclaimed(m) {
		taken = true
	}
	if !taken {
		p.count(cUnmatched, 1)
	}
}

// keepIfUnclaimed gives m to a subscription of p added since delivery, or
// keeps it in p's backlog. It reports whether a subscription took it.
func (p *Pipe) keepIfUnclaimed(m Message) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ss := p.subs.Load(); ss != nil {
		for _, s := range *ss {
			if s.matches(&m) {
				s.push(m)
				return true
			}
		}
	}
	if p.shut.Load() {
		return false
	}
	if p.cfg.backlog == 0 {
		p.ctr[cBacklogDropped].Add(1)
		return false
	}
	if len(p.backlog) >= p.cfg.backlog {
		copy(p.backlog, p.backlog[1:])
		p.backlog[len(p.backlog)-1] = Message{}
		p.backlog = p.backlog[:len(p.backlog)-1]
		p.ctr[cBacklogDropped].Add(1)
	}
	p.backlog = append(p.backlog, m)
	return false
}

// AddHandler adds h, called for every message the pipe receives (for a
// server: from every client), and returns a function that removes it.
// Removing is idempotent; a message being delivered when it is removed may
// still reach h. Messages already in the backlog are not replayed to h:
// use Subscribe for those.
func (p *Pipe) AddHandler(h Handler) (remove func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nextID++
	id := p.nextID
	var list []handlerEntry
	if old := p.handlers.Load(); old != nil {
		list = slices.Clone(*old)
	}
	list = append(list, handlerEntry{id: id, fn: h})
	p.handlers.Store(&list)
	if p.lending { // a lent read token comes back to the reader
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		old := p.handlers.Load()
		list := slices.DeleteFunc(slices.Clone(*old), func(e handlerEntry) bool { return e.id == id })
		p.handlers.Store(&list)
	}
}

// OnClose adds fn, called once when the pipe closes with the reason (nil
// after Close, io.EOF when the peer closed, otherwise the error that
// closed the pipe), and returns a function that removes it. If the pipe is
// already closed, fn runs at once. Close does not wait for close callbacks
// started by a failing reader.
func (p *Pipe) OnClose(fn func(reason error)) (remove func()) {
	p.mu.Lock()
	if p.fnsRun {
		reason := p.reason
		p.mu.Unlock()
		fn(reason)
		return func() {}
	}
	p.nextID++
	id := p.nextID
	p.closeFns = append(p.closeFns, closeEntry{id: id, fn: fn})
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.closeFns = slices.DeleteFunc(p.closeFns, func(e closeEntry) bool { return e.id == id })
	}
}

// Subscribe returns a subscription to the pipe's messages whose content
// matches the regular expression pattern ("" matches all), optionally only
// from one address (From). Messages waiting in the pipe's backlog that
// match are moved to the new subscription first, in order. On a server
// pipe the subscription sees the messages of every client.
//
// The backlog holds messages no handler or subscription took when they
// arrived. A message from a server's client is kept both by the client
// pipe and by the server, so either may claim it.
func (p *Pipe) Subscribe(pattern string, opts ...SubscribeOption) (*Subscription, error) {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("netcore: subscribe: %w", err)
	}
	s := &Subscription{
		pipe: p,
		re:   re,
		size: DefaultQueueSize,
	}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(s); err != nil {
			return nil, fmt.Errorf("netcore: subscribe: %w", err)
		}
	}
	s.q = queue.New[Message](s.size, s.policy)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shut.Load() {
		return nil, fmt.Errorf("netcore: subscribe on %s: %w", p, ErrClosed)
	}
	kept := p.backlog[:0]
	for _, m := range p.backlog {
		if s.matches(&m) {
			s.push(m)
		} else {
			kept = append(kept, m)
		}
	}
	clear(p.backlog[len(kept):])
	p.backlog = kept
	var list []*Subscription
	if old := p.subs.Load(); old != nil {
		list = slices.Clone(*old)
	}
	list = append(list, s)
	p.subs.Store(&list)
	return s, nil
}

func (p *Pipe) unsubscribe(s *Subscription) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if old := p.subs.Load(); old != nil {
		list := slices.DeleteFunc(slices.Clone(*old), func(x *Subscription) bool { return x == s })
		p.subs.Store(&list)
	}
}

// Recv waits for the next message of sub, which must belong to p; see
// Subscription.Recv.
func (p *Pipe) Recv(ctx context.Context, sub *Subscription) (Message, error) {
	if sub == nil || sub.pipe != p {
		return Message{}, fmt.Errorf("netcore: recv on %s: subscription belongs to another pipe", p)
	}
	return sub.Recv(ctx)
}
