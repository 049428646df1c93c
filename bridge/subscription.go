package bridge

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/netcore"
)

// SubscribeOption configures a Subscription.
type SubscribeOption func(*Subscription)

// QueueSize sets the subscription's queue length (default
// netcore.DefaultQueueSize, minimum 1).
func QueueSize(n int) SubscribeOption { return func(s *Subscription) { s.size = max(n, 1) } }

// WithOverflow sets the policy for a full queue (default
// netcore.DropOldest), as for netcore subscriptions.
func WithOverflow(o netcore.Overflow) SubscribeOption { return func(s *Subscription) { s.policy = o } }

// Subscription is a bounded queue of bus messages whose subject and
// payload match regular expressions, made by SubscribeRegex. It has the
// semantics of a netcore pipe subscription: a full queue drops by its
// Overflow policy (counted in Dropped; the bus's delivery never blocks),
// and Recv waits with a context. It is safe for concurrent use.
type Subscription struct {
	sub    *nats.Subscription
	filter string
	subjRE *regexp.Regexp
	dataRE *regexp.Regexp
	size   int
	policy netcore.Overflow

	mu     sync.Mutex
	ring   []*nats.Msg
	head   int
	n      int
	notify chan struct{}
	closed chan struct{}
	once   sync.Once

	dropped atomic.Uint64
	matched atomic.Uint64
}

// SubscribeRegex subscribes to the bus subjects matching filter (a NATS
// subject with wildcards; "" means ">", everything) and keeps the
// messages whose subject matches subjectRE and whose payload matches
// payloadRE ("" matches all) in a bounded queue read with Recv.
func SubscribeRegex(nc *nats.Conn, filter, subjectRE, payloadRE string, opts ...SubscribeOption) (*Subscription, error) {
	if filter == "" {
		filter = ">"
	}
	sre, err := regexp.Compile(subjectRE)
	if err != nil {
		return nil, fmt.Errorf("bridge: subscribe: subject pattern: %w", err)
	}
	dre, err := regexp.Compile(payloadRE)
	if err != nil {
		return nil, fmt.Errorf("bridge: subscribe: payload pattern: %w", err)
	}
	s := &Subscription{
		filter: filter, subjRE: sre, dataRE: dre,
		size: netcore.DefaultQueueSize, policy: netcore.DropOldest,
		notify: make(chan struct{}, 1), closed: make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	sub, err := nc.Subscribe(filter, s.onMsg)
	if err != nil {
		return nil, fmt.Errorf("bridge: subscribe %s: %w", filter, err)
	}
	s.sub = sub
	return s, nil
}

// String describes the subscription, e.g. `">" subject "^demo\." payload "ok"`.
func (s *Subscription) String() string {
	return fmt.Sprintf("%q subject %q payload %q", s.filter, s.subjRE, s.dataRE)
}

func (s *Subscription) onMsg(m *nats.Msg) {
	if !s.subjRE.MatchString(m.Subject) || !s.dataRE.Match(m.Data) {
		return
	}
	s.matched.Add(1)
	s.mu.Lock()
	if isClosedChan(s.closed) {
		s.mu.Unlock()
		return
	}
	if s.n == s.size {
		s.dropped.Add(1)
		if s.policy == netcore.DropNewest {
			s.mu.Unlock()
			return
		}
		s.ring[s.head] = nil
		s.head = (s.head + 1) % len(s.ring)
		s.n--
	}
	if s.n == len(s.ring) {
		grown := make([]*nats.Msg, min(max(2*len(s.ring), 8), s.size))
		for i := range s.n {
			grown[i] = s.ring[(s.head+i)%len(s.ring)]
		}
		s.ring, s.head = grown, 0
	}
	s.ring[(s.head+s.n)%len(s.ring)] = m
	s.n++
	s.mu.Unlock()
	wake(s.notify)
}

func (s *Subscription) pop() (*nats.Msg, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == 0 {
		return nil, false
	}
	m := s.ring[s.head]
	s.ring[s.head] = nil
	s.head = (s.head + 1) % len(s.ring)
	s.n--
	if s.n > 0 {
		wake(s.notify)
	}
	return m, true
}

// Recv waits for the next matching message. It returns an error
// matching ErrTimeout (and context.DeadlineExceeded and
// netcore.ErrTimeout) when ctx's deadline passes first, ctx's error when
// ctx is cancelled, and ErrClosed once the subscription is closed.
func (s *Subscription) Recv(ctx context.Context) (*nats.Msg, error) {
	for {
		select {
		case <-s.closed:
			return nil, fmt.Errorf("bridge: recv %s: %w", s, ErrClosed)
		default:
		}
		if m, ok := s.pop(); ok {
			return m, nil
		}
		select {
		case <-s.notify:
		case <-s.closed:
		case <-ctx.Done():
			if m, ok := s.pop(); ok {
				return m, nil
			}
			return nil, ctxErr(ctx, "recv "+s.String())
		}
	}
}

// Dropped returns how many matching messages the full queue discarded.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Matched returns how many messages matched the patterns.
func (s *Subscription) Matched() uint64 { return s.matched.Load() }

// Len returns how many messages are queued.
func (s *Subscription) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// Close unsubscribes; queued messages are discarded and Recv returns
// ErrClosed. A second Close returns ErrClosed.
func (s *Subscription) Close() error {
	err := fmt.Errorf("bridge: close %s: %w", s, ErrClosed)
	s.once.Do(func() {
		s.mu.Lock()
		close(s.closed)
		s.ring, s.n = nil, 0
		s.mu.Unlock()
		err = s.sub.Unsubscribe()
		if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
			err = nil
		}
	})
	return err
}
