// Package queue is the bounded message queue behind the subscriptions of
// netcore and bridge: a ring that grows up to a fixed size, an overflow
// policy for a full ring, a wake-up channel for waiting readers, and one
// close rule (a closed queue discards what it holds and takes nothing
// more).
package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Overflow is what a queue does with an item when it is full.
type Overflow uint8

// Overflow policies.
const (
	// DropOldest discards the oldest queued item to make room.
	DropOldest Overflow = iota
	// DropNewest discards the arriving item.
	DropNewest
)

// String returns "drop-oldest" or "drop-newest".
func (o Overflow) String() string {
	if o == DropNewest {
		return "drop-newest"
	}
	return "drop-oldest"
}

// SetSize sets *size to n, the length of a queue to be made; n must be
// at least 1.
func SetSize(size *int, n int) error {
	if n < 1 {
		return fmt.Errorf("queue size %d must be at least 1", n)
	}
	*size = n
	return nil
}

// SetPolicy sets *policy to o, which must be DropOldest or DropNewest.
func SetPolicy(policy *Overflow, o Overflow) error {
	if o != DropOldest && o != DropNewest {
		return fmt.Errorf("unknown overflow policy %d", o)
	}
	*policy = o
	return nil
}

// ErrClosed is returned by Recv on a closed queue.
var ErrClosed = errors.New("queue: closed")

// Queue is a bounded FIFO of T, safe for concurrent use. The zero value
// is not usable; make one with New.
type Queue[T any] struct {
	size   int
	policy Overflow

	mu     sync.Mutex
	ring   []T
	head   int
	n      int
	notify chan struct{} // one token: items may be queued
	closed chan struct{}
	once   sync.Once

	dropped atomic.Uint64
}

// New returns an empty queue holding at most size items (at least 1).
func New[T any](size int, policy Overflow) *Queue[T] {
	return &Queue[T]{
		size:   max(size, 1),
		policy: policy,
		notify: make(chan struct{}, 1),
		closed: make(chan struct{}),
	}
}

// Push queues v, applying the overflow policy when the queue is full. It
// reports whether an item was dropped to do so (v itself under
// DropNewest). A closed queue takes nothing and drops nothing.
func (q *Queue[T]) Push(v T) (dropped bool) {
	q.mu.Lock()
	select {
	case <-q.closed:
		q.mu.Unlock()
		return false
	default:
	}
	if q.n == q.size {
		q.dropped.Add(1)
		dropped = true
		if q.policy == DropNewest {
			q.mu.Unlock()
			return true
		}
		var zero T
		q.ring[q.head] = zero
		q.head = (q.head + 1) % len(q.ring)
		q.n--
	}
	if q.n == len(q.ring) { // grow, up to size
		grown := make([]T, min(max(2*len(q.ring), 8), q.size))
		for i := range q.n {
			grown[i] = q.ring[(q.head+i)%len(q.ring)]
		}
		q.ring, q.head = grown, 0
	}
	q.ring[(q.head+q.n)%len(q.ring)] = v
	q.n++
	q.mu.Unlock()
	q.wake()
	return dropped
}

func (q *Queue[T]) wake() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// Pop takes the oldest queued item, if any. When items remain it leaves
// a token in Notify for another waiting reader.
func (q *Queue[T]) Pop() (T, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var zero T
	if q.n == 0 {
		return zero, false
	}
	v := q.ring[q.head]
	q.ring[q.head] = zero
	q.head = (q.head + 1) % len(q.ring)
	q.n--
	if q.n > 0 {
		q.wake()
	}
	return v, true
}

// Notify has a token when items may be queued; a reader that takes it
// calls Pop.
func (q *Queue[T]) Notify() <-chan struct{} { return q.notify }

// Closed is closed by Close.
func (q *Queue[T]) Closed() <-chan struct{} { return q.closed }

// Recv waits for the next item. It returns ErrClosed once the queue is
// closed, and ctx's error when ctx is done first (unless an item came
// meanwhile).
func (q *Queue[T]) Recv(ctx context.Context) (T, error) {
	var zero T
	for {
		if v, ok := q.Pop(); ok {
			return v, nil
		}
		select {
		case <-q.notify:
		case <-q.closed:
			return zero, ErrClosed
		case <-ctx.Done():
			if v, ok := q.Pop(); ok {
				return v, nil
			}
			return zero, ctx.Err()
		}
	}
}

// Close discards the queued items and makes Push a no-op and Recv return
// ErrClosed. It reports whether this call closed the queue (false for a
// second call).
func (q *Queue[T]) Close() bool {
	first := false
	q.once.Do(func() {
		first = true
		q.mu.Lock()
		close(q.closed)
		q.ring, q.head, q.n = nil, 0, 0
		q.mu.Unlock()
	})
	return first
}

// Dropped returns how many items the full queue discarded.
func (q *Queue[T]) Dropped() uint64 { return q.dropped.Load() }

// Len returns how many items are queued.
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}
