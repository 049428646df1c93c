package netcore

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// pipe and daemon the tests open must be closed without leaks.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
