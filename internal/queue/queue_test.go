package queue

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestOverflowPolicies(t *testing.T) {
	for _, tc := range []struct {
		policy Overflow
		want   []int
	}{
		{DropOldest, []int{3, 4}},
		{DropNewest, []int{1, 2}},
	} {
		t.Run(tc.policy.String(), func(t *testing.T) {
			q := New[int](2, tc.policy)
			drops := 0
			for i := 1; i <= 4; i++ {
				if q.Push(i) {
					drops++
				}
			}
			if drops != 2 || q.Dropped() != 2 || q.Len() != 2 {
				t.Fatalf("drops %d, Dropped %d, Len %d; want 2, 2, 2", drops, q.Dropped(), q.Len())
			}
			for _, w := range tc.want {
				if v, ok := q.Pop(); !ok || v != w {
					t.Fatalf("Pop = %d, %v; want %d", v, ok, w)
				}
			}
			if _, ok := q.Pop(); ok {
				t.Fatal("Pop on an empty queue returned an item")
			}
		})
	}
}

func TestGrowKeepsOrder(t *testing.T) {
	q := New[int](100, DropOldest)
	for i := range 50 {
		q.Push(i)
		if i%3 == 0 {
			q.Pop()
		}
	}
	prev := -1
	for q.Len() > 0 {
		v, _ := q.Pop()
		if v <= prev {
			t.Fatalf("out of order: %d after %d", v, prev)
		}
		prev = v
	}
}

func TestRecvWaitsAndCloses(t *testing.T) {
	q := New[string](4, DropOldest)
	got := make(chan string)
	go func() {
		v, _ := q.Recv(context.Background())
		got <- v
	}()
	q.Push("a")
	if v := <-got; v != "a" {
		t.Fatalf("Recv = %q, want a", v)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := q.Recv(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Recv on an empty queue: %v, want DeadlineExceeded", err)
	}

	q.Push("b")
	if !q.Close() {
		t.Fatal("first Close reported false")
	}
	if q.Close() {
		t.Fatal("second Close reported true")
	}
	if q.Len() != 0 {
		t.Fatalf("closed queue holds %d items", q.Len())
	}
	if q.Push("c") || q.Len() != 0 {
		t.Fatal("closed queue took an item")
	}
	if _, err := q.Recv(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Recv on a closed queue: %v, want ErrClosed", err)
	}
}
