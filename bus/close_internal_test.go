package bus

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// TestCloseBounded checks that Close does not wait without bound for a
// background goroutine that does not end: it reports the wait that ran
// out, still drains the connection and shuts the server down, and a
// second Close returns net.ErrClosed.
func TestCloseBounded(t *testing.T) {
	defer func(d time.Duration) { closeBackgroundWait = d }(closeBackgroundWait)
	closeBackgroundWait = 50 * time.Millisecond

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := Start(ctx, WithListen("127.0.0.1:-1"), WithoutJetStream())
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		<-release // a goroutine that ignores bgStop
	}()
	defer close(release)

	err = n.Close()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with a stuck goroutine = %v, want context.DeadlineExceeded", err)
	}
	if !n.nc.IsClosed() {
		t.Error("the in-process connection is still open after Close")
	}
	if n.srv.Running() {
		t.Error("the server still runs after Close")
	}
	if err := n.Close(); !errors.Is(err, net.ErrClosed) || !errors.Is(err, ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed wrapping net.ErrClosed", err)
	}
}

// TestCloseNotStarted closes a node that was never started: the first
// Close succeeds, the second returns net.ErrClosed, and Start fails.
func TestCloseNotStarted(t *testing.T) {
	n, err := New(WithListen("127.0.0.1:-1"), WithoutJetStream())
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := n.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
	if err := n.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
}
