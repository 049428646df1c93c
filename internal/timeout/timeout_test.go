package timeout

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
)

func TestMatches(t *testing.T) {
	low := New("low: timeout")
	high := New("high: timeout", low)
	err := fmt.Errorf("high: recv: %w", high)
	for _, target := range []error{high, low, context.DeadlineExceeded, os.ErrDeadlineExceeded} {
		if !errors.Is(err, target) {
			t.Errorf("errors.Is(%v, %v) = false", err, target)
		}
	}
	if errors.Is(low, high) || errors.Is(err, context.Canceled) {
		t.Error("a timeout matches what it is not")
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("%v is not a net.Error with Timeout()", err)
	}
}

func TestCause(t *testing.T) {
	tm := New("x: timeout")
	ctx, cancel := context.WithTimeout(context.Background(), 0)
	defer cancel()
	<-ctx.Done()
	if err := Cause(ctx, tm); err != tm {
		t.Errorf("Cause after the deadline = %v, want the sentinel", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if err := Cause(ctx, tm); err != context.Canceled {
		t.Errorf("Cause after cancel = %v, want context.Canceled", err)
	}
}
