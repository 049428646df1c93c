package peer

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

type ctxTestKey struct{}

// TestServeCtx checks that the lazily made context of a served call
// behaves as a standard one: deadline, end of the call, the peer's
// context, values, causes and children.
func TestServeCtx(t *testing.T) {
	parent := context.WithValue(context.Background(), ctxTestKey{}, "v")

	t.Run("deadline without Done", func(t *testing.T) {
		c := newServeCtx(parent, time.Now().Add(20*time.Millisecond), true, "me")
		defer c.end()
		if err := c.Err(); err != nil {
			t.Fatalf("Err before the deadline: %v", err)
		}
		time.Sleep(30 * time.Millisecond)
		if err := c.Err(); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Err after the deadline: %v", err)
		}
		select {
		case <-c.Done():
		case <-time.After(time.Second):
			t.Fatal("Done not closed after the deadline")
		}
		if err := context.Cause(c); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Cause: %v", err)
		}
	})

	t.Run("deadline with Done", func(t *testing.T) {
		c := newServeCtx(parent, time.Now().Add(20*time.Millisecond), true, "me")
		defer c.end()
		start := time.Now()
		<-c.Done()
		if el := time.Since(start); el < 15*time.Millisecond {
			t.Fatalf("Done after %v", el)
		}
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Fatalf("Err: %v", c.Err())
		}
	})

	t.Run("end", func(t *testing.T) {
		for _, early := range []bool{true, false} {
			c := newServeCtx(parent, time.Time{}, false, "me")
			if _, ok := c.Deadline(); ok {
				t.Fatal("deadline without one")
			}
			if early {
				_ = c.Done()
			}
			fired := make(chan struct{})
			if early {
				context.AfterFunc(c, func() { close(fired) })
			}
			child, cancel := context.WithCancel(c)
			defer cancel()
			c.end()
			if !errors.Is(c.Err(), context.Canceled) {
				t.Fatalf("Err after end: %v", c.Err())
			}
			select {
			case <-c.Done():
			case <-time.After(time.Second):
				t.Fatal("Done not closed after end")
			}
			select {
			case <-child.Done():
			case <-time.After(time.Second):
				t.Fatal("child not canceled by end")
			}
			if early {
				select {
				case <-fired:
				case <-time.After(time.Second):
					t.Fatal("AfterFunc not run by end")
				}
			}
		}
	})

	t.Run("peer closes", func(t *testing.T) {
		pctx, pcancel := context.WithCancel(parent)
		c := newServeCtx(pctx, time.Now().Add(time.Hour), true, "me")
		defer c.end()
		pcancel()
		if !errors.Is(c.Err(), context.Canceled) {
			t.Fatalf("Err after the peer's context ended: %v", c.Err())
		}
		<-c.Done()
	})

	t.Run("values", func(t *testing.T) {
		c := newServeCtx(parent, time.Time{}, false, "caller-id")
		defer c.end()
		if got := CallerFrom(c); got != "caller-id" {
			t.Fatalf("CallerFrom %q", got)
		}
		if got := c.Value(ctxTestKey{}); got != "v" {
			t.Fatalf("parent value %v", got)
		}
		inner := context.WithValue(c, ctxTestKey{}, "w")
		if CallerFrom(inner) != "caller-id" || inner.Value(ctxTestKey{}) != "w" {
			t.Fatal("values through a child context")
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		c := newServeCtx(parent, time.Now().Add(10*time.Millisecond), true, "me")
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				_ = c.Err()
				<-c.Done()
				_ = c.Err()
			})
		}
		wg.Go(c.end)
		wg.Wait()
	})
}
