package bridge

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/peerbus/peerbus/internal/netlab"
)

// TestMain runs the lab helper modes when asked to, and fails the
// package's tests if any goroutine outlives them.
func TestMain(m *testing.M) {
	netlab.RunHelpers(labHelpers)
	goleak.VerifyTestMain(m)
}
