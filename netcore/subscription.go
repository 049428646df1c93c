package netcore

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"

	"github.com/peerbus/peerbus/internal/queue"
)

// DefaultQueueSize is a subscription's queue length when none is given.
const DefaultQueueSize = 128

// Overflow is what a subscription does with a message when its queue is
// full. Either way the loss is counted in Dropped and in the pipe's
// Stats.QueueDropped; the pipe's reader never blocks on a slow consumer.
type Overflow = queue.Overflow

// Overflow policies.
const (
	// DropOldest discards the oldest queued message to make room (the
	// default): a slow consumer sees the latest messages.
	DropOldest = queue.DropOldest
	// DropNewest discards the arriving message: a slow consumer sees the
	// earliest messages.
	DropNewest = queue.DropNewest
)

// SubscribeOption configures a Subscription. An invalid value makes
// Subscribe fail with an error wrapping ErrInvalidOption.
type SubscribeOption func(*Subscription) error

// From keeps only messages from addr. A zero port matches every port of
// that host; an address without zone matches any zone.
func From(addr netip.AddrPort) SubscribeOption {
	return func(s *Subscription) error {
		s.from = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
		s.hasFrom = addr.Addr().IsValid()
		return nil
	}
}

// QueueSize sets the subscription's queue length (default
// DefaultQueueSize; at least 1).
func QueueSize(n int) SubscribeOption {
	return func(s *Subscription) error { return optionErr(queue.SetSize(&s.size, n)) }
}

// WithOverflow sets the policy for a full queue (default DropOldest).
func WithOverflow(o Overflow) SubscribeOption {
	return func(s *Subscription) error { return optionErr(queue.SetPolicy(&s.policy, o)) }
}

// Subscription is a filtered queue of a pipe's messages, created by
// Pipe.Subscribe. It is safe for concurrent use.
type Subscription struct {
	pipe    *Pipe
	re      *regexp.Regexp
	from    netip.AddrPort
	hasFrom bool
	size    int
	policy  Overflow
	q       *queue.Queue[Message]
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
func (s *Subscription) Dropped() uint64 { return s.q.Dropped() }

// Len returns how many messages are queued.
func (s *Subscription) Len() int { return s.q.Len() }

// Close removes the subscription from its pipe. Queued messages are
// discarded and Recv returns ErrClosed. A second Close returns an error
// wrapping ErrClosed.
func (s *Subscription) Close() error {
	s.pipe.unsubscribe(s)
	if !s.q.Close() {
		return fmt.Errorf("netcore: close %s: %w", s, ErrClosed)
	}
	return nil
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
	if s.q.Push(m) {
		s.pipe.count(cQueueDropped, 1)
	}
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
		if m, ok := s.q.Pop(); ok {
			return m, nil
		}
		select {
		case <-s.q.Notify():
		case <-tok:
			// A message may have come with the token (the reader that
			// had it queued one and gave the token back): take it
			// rather than wait for the next.
			if m, ok := s.q.Pop(); ok {
				tok <- struct{}{}
				return m, nil
			}
			if err := p.pullOne(ctx); err != nil {
				if m, ok := s.q.Pop(); ok {
					return m, nil
				}
				return Message{}, err
			}
		case <-s.q.Closed():
			return Message{}, fmt.Errorf("netcore: recv %s: %w", s, ErrClosed)
		case <-p.done:
			if m, ok := s.q.Pop(); ok {
				return m, nil
			}
			return Message{}, fmt.Errorf("netcore: recv %s: %w", s, ErrClosed)
		case <-ctx.Done():
			if m, ok := s.q.Pop(); ok {
				return m, nil
			}
			return Message{}, ctxErr(ctx, fmt.Sprintf("recv %s", s))
		}
	}
}
