package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peerbus/peerbus/peer"
)

func runFunc(t *testing.T, command, args string, timeout time.Duration, maxOut int) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	f := &commandFunc{spec: funcSpec{Tag: "t", Command: command}, maxOut: func() int { return maxOut }}
	return f.run(ctx, []byte(args))
}

func TestCommandFunc(t *testing.T) {
	t.Parallel()
	t.Run("echo", func(t *testing.T) {
		out, err := runFunc(t, "cat", `{"a":1}`, 10*time.Second, 0)
		if err != nil || string(out) != `{"a":1}` {
			t.Fatalf("got %q, %v", out, err)
		}
	})
	t.Run("empty stdout is null", func(t *testing.T) {
		out, err := runFunc(t, "true", `{}`, 10*time.Second, 0)
		if err != nil || string(out) != "null" {
			t.Fatalf("got %q, %v", out, err)
		}
	})
	t.Run("environment", func(t *testing.T) {
		out, err := runFunc(t, `printf '"%s"' "$PEERBUS_TAG"`, ``, 10*time.Second, 0)
		if err != nil || string(out) != `"t"` {
			t.Fatalf("got %q, %v", out, err)
		}
	})
	t.Run("exit status", func(t *testing.T) {
		_, err := runFunc(t, "echo oops >&2; exit 3", `{}`, 10*time.Second, 0)
		var ce *CommandError
		if !errors.As(err, &ce) {
			t.Fatalf("err = %v (%T), want *CommandError", err, err)
		}
		if ce.State != "exit status 3" || ce.Stderr != "oops" {
			t.Errorf("state %q stderr %q", ce.State, ce.Stderr)
		}
		if msg := err.Error(); !strings.Contains(msg, "exit status 3") || !strings.Contains(msg, "oops") {
			t.Errorf("message %q lacks the exit status or stderr", msg)
		}
	})
	t.Run("invalid JSON", func(t *testing.T) {
		_, err := runFunc(t, "echo hello", ``, 10*time.Second, 0)
		if err == nil || !strings.Contains(err.Error(), "invalid JSON") || !strings.Contains(err.Error(), "hello") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("arguments not JSON", func(t *testing.T) {
		marker := filepath.Join(t.TempDir(), "ran")
		_, err := runFunc(t, "touch "+marker+"; cat", `{bad`, 10*time.Second, 0)
		var se *json.SyntaxError
		if !errors.Is(err, peer.ErrBadRequest) || !errors.As(err, &se) {
			t.Fatalf("err = %v, want ErrBadRequest wrapping the *json.SyntaxError", err)
		}
		if _, serr := os.Stat(marker); serr == nil {
			t.Error("the command ran for arguments that are not JSON")
		}
	})
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		f := &commandFunc{spec: funcSpec{Tag: "t", Command: "sleep 30"}}
		time.AfterFunc(100*time.Millisecond, cancel)
		_, err := f.run(ctx, nil)
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "canceled") {
			t.Fatalf("err = %v, want a cancellation", err)
		}
	})
	t.Run("output cap", func(t *testing.T) {
		_, err := runFunc(t, `head -c 100000 /dev/zero | tr '\0' a`, ``, 10*time.Second, 1000)
		if !errors.Is(err, peer.ErrPayloadTooLarge) {
			t.Fatalf("err = %v, want ErrPayloadTooLarge", err)
		}
	})
	t.Run("deadline kills the process group", func(t *testing.T) {
		start := time.Now()
		// The pipeline's sleep holds stdout open: only killing the whole
		// group ends the run before the pipes' wait delay.
		_, err := runFunc(t, "sleep 30 | cat", ``, 200*time.Millisecond, 0)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want a deadline error", err)
		}
		if d := time.Since(start); d >= funcWaitDelay {
			t.Errorf("run took %v after a 200ms deadline", d)
		}
		if !strings.Contains(err.Error(), "did not finish before the caller's deadline") {
			t.Errorf("message %q", err)
		}
	})
}

func TestParseFuncSpecs(t *testing.T) {
	got, err := parseFuncSpecs([]string{"upper=tr a-z A-Z", "a.b = echo '{\"x\":1}' | cat"})
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != (funcSpec{"upper", "tr a-z A-Z"}) || got[1] != (funcSpec{"a.b", `echo '{"x":1}' | cat`}) {
		t.Errorf("got %+v", got)
	}
	for _, bad := range [][]string{{"noequals"}, {"=cmd"}, {"tag="}, {"bad*=x"}, {"a=x", "a=y"}, {"ping=x"}} {
		if _, err := parseFuncSpecs(bad); err == nil {
			t.Errorf("parseFuncSpecs(%q): no error", bad)
		}
	}
}
