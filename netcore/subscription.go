package netcore

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"sync"
	"sync/atomic"
)

// DefaultQueueSize is a subscription's queue length when none is given.
const DefaultQueueSize = 128

// Overflow is what a subscription does with a message when its queue is
// full. Either way the loss is counted in Dropped and in the pipe's
// Stats.QueueDropped; the pipe's reader never blocks on a slow consumer.
type Overflow uint8

// Overflow policies.
const (
	// DropOldest discards the oldest queued message to make room (the
	// default): a slow consumer sees the latest messages.
	DropOldest Overflow = iota
	// DropNewest discards the arriving message: a slow consumer sees the
	// earliest messages.
	DropNewest
)

// String returns "drop-oldest" or "drop-newest".
func (o Overflow) String() string {
	if o == DropNewest {
		return "drop-newest"
	}
	return "drop-oldest"
}

// SubscribeOption configures a Subscription.
type SubscribeOption func(*Subscription)

// From keeps only messages from addr. A zero port matches every port of
// that host; an address without zone matches any zone.
func From(addr netip.AddrPort) SubscribeOption {
	return func(s *Subscription) {
		s.from = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
		s.hasFrom = addr.Addr().IsValid()
	}
}

// QueueSize sets the subscription's queue length (default
// DefaultQueueSize, minimum 1).
func QueueSize(n int) SubscribeOption { return func(s *Subscription) { s.size = max(n, 1) } }

// WithOverflow sets the policy for a full queue (default DropOldest).
func WithOverflow(o Overflow) SubscribeOption { return func(s *Subscription) { s.policy = o } }

// Subscription is a filtered queue of a pipe's messages, created by
// Pipe.Subscribe. It is safe for concurrent use.
type Subscription struct {
	pipe    *Pipe
	re      *regexp.Regexp
	from    netip.AddrPort
	hasFrom bool
	size    int
	policy  Overflow

	mu     sync.Mutex
	ring   []Message
	head   int
	n      int
	notify chan struct{} // one token: messages may be queued
	closed chan struct{}
	once   sync.Once

	dropped atomic.Uint64
}

// String describes the subscription, e.g. `"^ping" from 127.0.0.1:0`.
func (s *Subscription) String() string {
	if s.hasFrom {
		return fmt.Sprintf("%q from %s", s.re.String(), s.from)
	}
	return fmt.Sprintf("%q", s.re.String())
}

// Dropped returns how many messages the subscription discarded because its
// queue was full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Len returns how many messages are queued.
func (s *Subscription) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// Close removes the subscription from its pipe. Queued messages are
// discarded and Recv returns ErrClosed. Close is idempotent.
func (s *Subscription) Close() {
	s.pipe.unsubscribe(s)
	s.once.Do(func() { close(s.closed) })
}

// matches reports whether m passes the address filter and the pattern.
func (s *Subscription) matches(m *Message) bool {
	if s.hasFrom {
		fa, ma := s.from.Addr(), m.From.Addr()
		if fa.Zone() == "" {
			ma = ma.WithZone("")
		}
		if ma != fa {
			return false
		}
		if s.from.Port() != 0 && m.From.Port() != s.from.Port() {
			return false
		}
	}
	return s.re.Match(m.Data)
}

// push queues m, applying the overflow policy.
func (s *Subscription) push(m Message) {
	s.mu.Lock()
	if s.n == s.size {
		s.dropped.Add(1)
		s.pipe.count(cQueueDropped, 1)
		if s.policy == DropNewest {
			s.mu.Unlock()
			return
		}
		s.ring[s.head] = Message{}
		s.head = (s.head + 1) % len(s.ring)
		s.n--
	}
	if s.n == len(s.ring) { // grow, up to size
		grown := make([]Message, min(max(2*len(s.ring), 8), s.size))
		for i := range s.n {
			grown[i] = s.ring[(s.head+i)%len(s.ring)]
		}
		s.ring, s.head = grown, 0
	}
	s.ring[(s.head+s.n)%len(s.ring)] = m
	s.n++
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// pop takes the oldest queued message.
func (s *Subscription) pop() (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == 0 {
		return Message{}, false
	}
	m := s.ring[s.head]
	s.ring[s.head] = Message{}
	s.head = (s.head + 1) % len(s.ring)
	s.n--
	if s.n > 0 { // let another waiting Recv in
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
	return m, true
}

// Recv waits for the next message matching the subscription and returns
// it. It returns an error matching ErrTimeout (and
// context.DeadlineExceeded) when ctx's deadline passes first, ctx's error
// when ctx is cancelled, and ErrClosed once the subscription is closed, or
// the pipe is closed and the queue is empty. On a pipe in direct receive
// mode (WithDirectRecv), and on a client pipe that lent reading to its Recv
// calls (see the package documentation), Recv reads the socket itself
// while no other Recv does.
func (s *Subscription) Recv(ctx context.Context) (Message, error) {
	p := s.pipe
	var tok chan struct{} // nil unless reading may be up to Recv
	if p.pull || p.lending {
		tok = p.rtok
	}
	if p.lending {
		p.recvs.Add(1)
		defer p.recvs.Add(-1)
	}
	for {
		if m, ok := s.pop(); ok {
			return m, nil
		}
		select {
		case <-s.notify:
		case <-tok:
			// A message may have come with the token (the reader that
			// had it queued one and gave the token back): take it
			// rather than wait for the next.
			if m, ok := s.pop(); ok {
				tok <- struct{}{}
				return m, nil
			}
			if err := p.pullOne(ctx); err != nil {
				if m, ok := s.pop(); ok {
					return m, nil
				}
				return Message{}, err
			}
		case <-s.closed:
			return Message{}, fmt.Errorf("netcore: recv %s: %w", s, ErrClosed)
		case <-p.done:
			if m, ok := s.pop(); ok {
				return m, nil
			}
			return Message{}, fmt.Errorf("netcore: recv %s: %w", s, ErrClosed)
		case <-ctx.Done():
			if m, ok := s.pop(); ok {
				return m, nil
			}
			return Message{}, ctxErr(ctx, fmt.Sprintf("recv %s", s))
		}
	}
}
