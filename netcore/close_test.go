package netcore

import (
	"errors"
	"net"
	"testing"
)

// TestSubscriptionCloseTwice checks the close contract of a
// subscription: the first Close succeeds, the second reports ErrClosed.
func TestSubscriptionCloseTwice(t *testing.T) {
	srv := mustListen(t, UDP, IPv4)
	sub, err := srv.Subscribe("")
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := sub.Close(); !errors.Is(err, ErrClosed) || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v, want ErrClosed", err)
	}
}
