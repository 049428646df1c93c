package bridge

import (
	"bytes"
	"io"
	"testing"
	"time"
)

func echoOnce(t *testing.T, c io.ReadWriter, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, []byte(msg)) {
		t.Fatalf("echo %q, want %q", buf, msg)
	}
}

func TestDialStrategiesLocal(t *testing.T) {
	nodes := startCluster(t, 1)
	target := echoServer(t)
	pe := newPeer(t, connect(t, nodes[0]))
	pd := newPeer(t, connect(t, nodes[0]))
	svc, err := Expose(ctxT(t, 5*time.Second), pe, "echo", target)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	for _, st := range []Strategy{Direct, Reverse, PunchTCP, Relay} {
		t.Run(string(st), func(t *testing.T) {
			c, err := Dial(ctxT(t, 20*time.Second), pd, pe.ID(), "echo", WithStrategies(st))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.Path() != st {
				t.Fatalf("path %s, want %s (%v)", c.Path(), st, c.Result().Attempts)
			}
			echoOnce(t, c, "hello "+string(st))
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
				t.Fatalf("after half-close: %q, %v", b, err)
			}
			t.Logf("%s: %+v", st, c.Result().Attempts)
		})
	}
}
