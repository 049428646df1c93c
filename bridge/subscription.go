package bridge

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/internal/queue"
	"github.com/peerbus/peerbus/netcore"
)

// SubscribeOption configures a Subscription. An invalid value makes
// SubscribeRegex fail with an error wrapping ErrInvalidOption.
type SubscribeOption func(*Subscription) error

// QueueSize sets the subscription's queue length (default
// netcore.DefaultQueueSize; at least 1).
func QueueSize(n int) SubscribeOption {
	return func(s *Subscription) error { return optionErr(queue.SetSize(&s.size, n)) }
}

// WithOverflow sets the policy for a full queue (default
// netcore.DropOldest), as for netcore subscriptions.
func WithOverflow(o netcore.Overflow) SubscribeOption {
	return func(s *Subscription) error { return optionErr(queue.SetPolicy(&s.policy, o)) }
}

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
	q      *queue.Queue[*nats.Msg]

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
	}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(s); err != nil {
			return nil, fmt.Errorf("bridge: subscribe: %w", err)
		}
	}
	s.q = queue.New[*nats.Msg](s.size, s.policy)
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
	s.q.Push(m)
}

// Recv waits for the next matching message. It returns an error
// matching ErrTimeout (and context.DeadlineExceeded and
// netcore.ErrTimeout) when ctx's deadline passes first, ctx's error when
// ctx is cancelled, and ErrClosed once the subscription is closed.
func (s *Subscription) Recv(ctx context.Context) (*nats.Msg, error) {
	m, err := s.q.Recv(ctx)
	switch {
	case err == nil:
		return m, nil
	case errors.Is(err, queue.ErrClosed):
		return nil, fmt.Errorf("bridge: recv %s: %w", s, ErrClosed)
	}
	return nil, ctxErr(ctx, "recv "+s.String())
}

// Dropped returns how many matching messages the full queue discarded.
func (s *Subscription) Dropped() uint64 { return s.q.Dropped() }

// Matched returns how many messages matched the patterns.
func (s *Subscription) Matched() uint64 { return s.matched.Load() }

// Len returns how many messages are queued.
func (s *Subscription) Len() int { return s.q.Len() }

// Close unsubscribes; queued messages are discarded and Recv returns
// ErrClosed. A second Close returns ErrClosed.
func (s *Subscription) Close() error {
	if !s.q.Close() {
		return fmt.Errorf("bridge: close %s: %w", s, ErrClosed)
	}
	err := s.sub.Unsubscribe()
	if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
		err = nil
	}
	return err
}
