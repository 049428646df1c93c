package bridge

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/peerbus/peerbus/internal/echotest"
	"github.com/peerbus/peerbus/peer"
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
	target := echotest.TCP(t)
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

func TestDialPacketStrategiesLocal(t *testing.T) {
	nodes := startCluster(t, 1)
	target := echotest.UDP(t)
	pe := newPeer(t, connect(t, nodes[0]))
	pd := newPeer(t, connect(t, nodes[0]))
	svc, err := Expose(ctxT(t, 5*time.Second), pe, "uecho", target)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	for _, st := range []Strategy{Direct, Reverse, PunchUDP, Relay} {
		t.Run(string(st), func(t *testing.T) {
			c, err := DialPacket(ctxT(t, 20*time.Second), pd, pe.ID(), "uecho", WithStrategies(st))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.Path() != st {
				t.Fatalf("path %s, want %s (%v)", c.Path(), st, c.Result().Attempts)
			}
			buf := make([]byte, 2048)
			for i := range 5 {
				msg := []byte("datagram " + string(st) + " " + string(rune('a'+i)))
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := c.Read(buf)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(buf[:n], msg) {
					t.Fatalf("got %q, want %q", buf[:n], msg)
				}
			}
			t.Logf("%s: %+v", st, c.Result().Attempts)
		})
	}
	waitFor(t, "udp sessions to end", 5*time.Second, func() bool { return svc.Stats().Active == 0 })
}

func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConcurrentStreamsAcrossCluster(t *testing.T) {
	nodes := startCluster(t, 2)
	pe := newPeer(t, connect(t, nodes[0]))
	pd := newPeer(t, connect(t, nodes[1]))
	waitPeer(t, pd, pe.ID())
	svc, err := Expose(ctxT(t, 5*time.Second), pe, "echo", echotest.TCP(t))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	const streams, size = 50, 256 << 10
	errs := make(chan error, streams)
	for i := range streams {
		go func() {
			errs <- func() error {
				c, err := Dial(ctxT(t, 30*time.Second), pd, pe.ID(), "echo", WithStrategies(Relay), WithWindow(256<<10))
				if err != nil {
					return err
				}
				defer c.Close()
				data := bytes.Repeat([]byte{byte(i)}, size)
				go func() {
					_, _ = c.Write(data)
					_ = c.CloseWrite()
				}()
				got, err := io.ReadAll(c)
				if err != nil {
					return err
				}
				if !bytes.Equal(got, data) {
					return fmt.Errorf("stream %d: echoed %d bytes, wrong content", i, len(got))
				}
				return nil
			}()
		}()
	}
	for range streams {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	st := svc.Stats()
	if st.Opened != streams || st.Paths[Relay] != streams {
		t.Errorf("stats %+v", st)
	}
	waitFor(t, "sessions to end", 10*time.Second, func() bool { return svc.Stats().Active == 0 })
}

func TestDialErrors(t *testing.T) {
	nodes := startCluster(t, 1)
	pe := newPeer(t, connect(t, nodes[0]))
	pd := newPeer(t, connect(t, nodes[0]), peer.AsClient())
	ctx := ctxT(t, 30*time.Second)
	tcp, err := Expose(ctx, pe, "echo", echotest.TCP(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	udp, err := Expose(ctx, pe, "uecho", echotest.UDP(t))
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	// A port nothing listens on.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "tcp://" + l.Addr().String()
	_ = l.Close()
	down, err := Expose(ctx, pe, "down", dead)
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()

	if _, err := Expose(ctx, pe, "echo", echotest.TCP(t)); !errors.Is(err, ErrAlreadyExposed) {
		t.Errorf("second expose: %v", err)
	}
	for _, bad := range []string{"127.0.0.1:80", "http://x:1", "tcp://nohost", "tcp://:80", "udp://h:1/path"} {
		if _, err := Expose(ctx, pe, "bad", bad); !errors.Is(err, ErrBadTarget) {
			t.Errorf("expose %q: %v", bad, err)
		}
	}
	for _, bad := range []string{"", "a b", "a..b", "x>", "*", ".a"} {
		if _, err := Expose(ctx, pe, bad, "tcp://127.0.0.1:1"); !errors.Is(err, ErrBadTarget) {
			t.Errorf("expose name %q: %v", bad, err)
		}
	}
	for _, tc := range []struct {
		name string
		dial func() error
		want error
	}{
		{"unknown name on the peer", func() error { _, err := Dial(ctx, pd, pe.ID(), "nope"); return err }, ErrNoSuchService},
		{"unknown name anywhere", func() error { _, err := Dial(ctx, pd, AnyPeer, "nope"); return err }, ErrNoSuchService},
		{"unknown peer", func() error { _, err := Dial(ctx, pd, "no-such-peer", "echo"); return err }, ErrNoSuchService},
		{"tcp dial of udp", func() error { _, err := Dial(ctx, pd, pe.ID(), "uecho"); return err }, ErrWrongProtocol},
		{"udp dial of tcp", func() error { _, err := DialPacket(ctx, pd, pe.ID(), "echo"); return err }, ErrWrongProtocol},
		{"service down", func() error { _, err := Dial(ctx, pd, pe.ID(), "down"); return err }, ErrServiceUnavailable},
		{"bad name", func() error { _, err := Dial(ctx, pd, pe.ID(), "a b"); return err }, ErrBadTarget},
		{"no strategy", func() error { _, err := Dial(ctx, pd, pe.ID(), "echo", WithStrategies()); return err }, ErrNoPath},
		{"udp only strategy", func() error { _, err := Dial(ctx, pd, pe.ID(), "echo", WithStrategies(PunchUDP)); return err }, ErrNoPath},
	} {
		if err := tc.dial(); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
	waitFor(t, "refused sessions to be gone", 5*time.Second, func() bool {
		return tcp.Stats().Active == 0 && udp.Stats().Active == 0 && down.Stats().Active == 0
	})
}

// TestOnlyExposedServices checks that an open request cannot name an
// address: a hand-made offer with extra fields still reaches only the
// exposed target.
func TestOnlyExposedServices(t *testing.T) {
	nodes := startCluster(t, 1)
	pe := newPeer(t, connect(t, nodes[0]))
	nc := connect(t, nodes[0])
	svc, err := Expose(ctxT(t, 5*time.Second), pe, "echo", echotest.TCP(t))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := other.Accept(); err == nil {
			accepted <- struct{}{}
			c.Close()
		}
	}()
	// An offer for a name that is not exposed, carrying an address.
	req := fmt.Sprintf(`{"v":1,"session":"00112233445566778899aabbccddeeff","name":"x","proto":"tcp","target":"tcp://%s","addr":"%s"}`,
		other.Addr(), other.Addr())
	m, err := nc.Request(peer.CallSubject(pe.ID(), OpenTag("x")), []byte(req), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(peer.HeaderStatus) != "error" || !strings.Contains(string(m.Data), "no_such_tag") {
		t.Fatalf("open of an unexposed name: %s %s", m.Header, m.Data)
	}
	select {
	case <-accepted:
		t.Fatal("the exposer connected to an address from the request")
	case <-time.After(200 * time.Millisecond):
	}
}

func TestDefaultStrategiesPreferDirect(t *testing.T) {
	nodes := startCluster(t, 2)
	pe := newPeer(t, connect(t, nodes[0]))
	pd := newPeer(t, connect(t, nodes[1]))
	waitPeer(t, pd, pe.ID())
	svc, err := Expose(ctxT(t, 5*time.Second), pe, "echo", echotest.TCP(t))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	// The service's subscription reaches the other node asynchronously.
	var c *Conn
	waitFor(t, "the service on the other node", 10*time.Second, func() bool {
		c, err = Dial(ctxT(t, 20*time.Second), pd, AnyPeer, "echo")
		return err == nil
	})
	defer c.Close()
	// The strategies run at once; direct, first in preference, is the
	// path, the others stopped.
	if c.Path() != Direct {
		t.Fatalf("path %s, attempts %v", c.Path(), c.Result().Attempts)
	}
	for _, a := range c.Result().Attempts {
		if (a.Strategy == Direct) != (a.Err == nil && a.Skipped == "") {
			t.Fatalf("attempt %v of path %s (attempts %v)", a, c.Path(), c.Result().Attempts)
		}
	}
	if !c.Result().Remote.IsValid() {
		t.Fatalf("no remote address on a direct path: %+v", c.Result())
	}
	echoOnce(t, c, "direct")
}

// TestServiceCloseEndsSessions closes a service with a live relayed and
// a live direct session: both connections end.
func TestServiceCloseEndsSessions(t *testing.T) {
	nodes := startCluster(t, 1)
	pe := newPeer(t, connect(t, nodes[0]))
	pd := newPeer(t, connect(t, nodes[0]))
	svc, err := Expose(ctxT(t, 5*time.Second), pe, "echo", echotest.TCP(t))
	if err != nil {
		t.Fatal(err)
	}
	var conns []*Conn
	for _, st := range []Strategy{Relay, Direct} {
		c, err := Dial(ctxT(t, 20*time.Second), pd, pe.ID(), "echo", WithStrategies(st), WithKeepAlive(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		echoOnce(t, c, "before close")
		conns = append(conns, c)
	}
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := svc.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); err != nil && errors.Is(err, ErrTimeout) {
			t.Fatalf("%s: connection still open after the service closed", c.Path())
		}
	}
	if _, err := Dial(ctxT(t, 5*time.Second), pd, pe.ID(), "echo"); !errors.Is(err, ErrNoSuchService) {
		t.Fatalf("dial after close: %v", err)
	}
}
