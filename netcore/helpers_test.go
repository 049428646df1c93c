package netcore

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

var (
	v6Once sync.Once
	v6OK   bool
)

// haveIPv6 reports whether the machine has a usable ::1.
func haveIPv6() bool {
	v6Once.Do(func() {
		ln, err := net.Listen("tcp6", "[::1]:0")
		if err == nil {
			ln.Close()
			v6OK = true
		}
	})
	return v6OK
}

// testFamilies returns IPv4 and, when the machine has ::1, IPv6.
func testFamilies(t testing.TB) []Family {
	if haveIPv6() {
		return []Family{IPv4, IPv6}
	}
	t.Logf("no ::1 on this machine: IPv6 cases skipped")
	return []Family{IPv4}
}

// testCtx returns a context that ends with the test, after 20s at most.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// mustListen opens a loopback server pipe on a free port, closed with the
// test.
func mustListen(t testing.TB, proto Protocol, f Family, opts ...Option) *Pipe {
	t.Helper()
	p, err := Listen(testCtx(t), proto, LoopbackRoute(f), 0, opts...)
	if err != nil {
		t.Fatalf("listen %s %s: %v", proto, f, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// mustDial opens a client pipe to srv, closed with the test.
func mustDial(t testing.TB, proto Protocol, srv *Pipe, opts ...Option) *Pipe {
	t.Helper()
	p, err := Dial(testCtx(t), proto, srv.LocalAddr().String(), opts...)
	if err != nil {
		t.Fatalf("dial %s %s: %v", proto, srv.LocalAddr(), err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// mustSubscribe subscribes to pattern on p.
func mustSubscribe(t testing.TB, p *Pipe, pattern string, opts ...SubscribeOption) *Subscription {
	t.Helper()
	s, err := p.Subscribe(pattern, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// recvBytes receives from sub until n bytes have arrived (for Raw TCP,
// where a message may come in chunks) and returns them.
func recvBytes(t testing.TB, sub *Subscription, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for buf.Len() < n {
		m, err := sub.Recv(ctx)
		if err != nil {
			t.Fatalf("recv after %d of %d bytes: %v", buf.Len(), n, err)
		}
		buf.Write(m.Data)
	}
	return buf.Bytes()
}

// echo is a handler that sends every message back.
func echo(m Message) { m.Reply(context.Background(), m.Data) }
