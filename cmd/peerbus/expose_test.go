package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/bridge"
	"github.com/peerbus/peerbus/internal/echotest"
	"github.com/peerbus/peerbus/peer"
)

// startBridgeCluster starts two clustered nodes without JetStream and
// returns their client URLs.
func startBridgeCluster(t *testing.T) (a, b string) {
	t.Helper()
	ports := freePorts(t, 4)
	addr := func(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }
	routes := "nats-route://" + addr(ports[2]) + ",nats-route://" + addr(ports[3])
	n1 := startNodeProc(t, "node-a", "--name", "a", "--listen", addr(ports[0]), "--cluster", addr(ports[2]),
		"--routes", routes, "--no-jetstream")
	n2 := startNodeProc(t, "node-b", "--name", "b", "--listen", addr(ports[1]), "--cluster", addr(ports[3]),
		"--routes", routes, "--no-jetstream")
	n1.waitReady(t, 60*time.Second)
	n2.waitReady(t, 60*time.Second)
	return n1.info["client"], n2.info["client"]
}

// exposeProc is a running "peerbus expose".
type exposeProc struct {
	*proc
	peer string
}

// startExpose starts "peerbus expose --server server args..." and waits
// for its ready line.
func startExpose(t *testing.T, server string, args ...string) *exposeProc {
	t.Helper()
	p := startProc(t, "expose", testEnv(), peerbusBin(t), append([]string{"expose", "--server", server}, args...)...)
	e := &exposeProc{proc: p}
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, ok := p.nextLine(time.Until(deadline))
		if !ok {
			t.Fatalf("expose: no ready line; stderr:\n%s", p.stderr.String())
		}
		if l == "ready" {
			break
		}
		if id, ok := strings.CutPrefix(l, "peer: "); ok {
			e.peer = id
		}
	}
	if e.peer == "" {
		t.Fatal("expose printed no peer line")
	}
	return e
}

// bridgeClient connects to server with a client-only peer.
func bridgeClient(t *testing.T, server string) *peer.Peer {
	t.Helper()
	nc, err := nats.Connect(server)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	p, err := peer.New(nc, peer.AsClient())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// dialWhenReady dials until the service is reachable from p (its
// subscriptions reach the other node asynchronously).
func dialWhenReady(t *testing.T, p *peer.Peer, id, name string, opts ...bridge.DialOption) *bridge.Conn {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c, err := bridge.Dial(ctx, p, id, name, opts...)
		cancel()
		if err == nil {
			return c
		}
		if !errors.Is(err, bridge.ErrNoSuchService) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestExposeProcessAcrossCluster exposes a TCP and a UDP echo service
// from a "peerbus expose" process on one node of a two-node cluster and
// dials them from a client of the other node: 100 MiB through the relay
// with matching sha256, half-close, 50 concurrent streams, datagrams.
func TestExposeProcessAcrossCluster(t *testing.T) {
	a, b := startBridgeCluster(t)
	ex := startExpose(t, a, "echo", echotest.TCP(t), "uecho", echotest.UDP(t))
	p := bridgeClient(t, b)

	t.Run("100MiB", func(t *testing.T) {
		c := dialWhenReady(t, p, ex.peer, "echo", bridge.WithStrategies(bridge.Relay))
		defer c.Close()
		if c.Path() != bridge.Relay {
			t.Fatalf("path %s", c.Path())
		}
		const size = 100 << 20
		start := time.Now()
		sent := make(chan []byte, 1)
		go func() {
			h := sha256.New()
			src := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{3}), size), h)
			if _, err := io.CopyBuffer(c, src, make([]byte, 256<<10)); err != nil {
				t.Error(err)
			}
			if err := c.CloseWrite(); err != nil {
				t.Error(err)
			}
			sent <- h.Sum(nil)
		}()
		h := sha256.New()
		n, err := io.CopyBuffer(h, c, make([]byte, 256<<10))
		if err != nil {
			t.Fatal(err)
		}
		el := time.Since(start)
		if n != size || !bytes.Equal(h.Sum(nil), <-sent) {
			t.Fatalf("echoed %d bytes of %d, or corrupted", n, size)
		}
		t.Logf("100 MiB each way over the relay in %v (%.0f MiB/s each way)", el, float64(size>>20)/el.Seconds())
	})

	t.Run("half-close", func(t *testing.T) {
		for _, st := range []bridge.Strategy{bridge.Relay, bridge.Direct} {
			c := dialWhenReady(t, p, ex.peer, "echo", bridge.WithStrategies(st))
			if _, err := c.Write([]byte("question")); err != nil {
				t.Fatal(err)
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "question" {
				t.Fatalf("%s: after half-close read %q, %v", st, got, err)
			}
			_ = c.Close()
		}
	})

	t.Run("50 streams", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 50)
		for i := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				c, err := bridge.Dial(ctx, p, ex.peer, "echo", bridge.WithStrategies(bridge.Relay), bridge.WithWindow(256<<10))
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				data := bytes.Repeat([]byte{byte(i)}, 512<<10)
				go func() {
					_, _ = c.Write(data)
					_ = c.CloseWrite()
				}()
				got, err := io.ReadAll(c)
				if err != nil || !bytes.Equal(got, data) {
					errs <- fmt.Errorf("stream %d: %d bytes, %v", i, len(got), err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("udp", func(t *testing.T) {
		for _, st := range []bridge.Strategy{bridge.Relay, bridge.Direct} {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			c, err := bridge.DialPacket(ctx, p, ex.peer, "uecho", bridge.WithStrategies(st))
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if c.Path() != st {
				t.Fatalf("path %s, want %s", c.Path(), st)
			}
			buf := make([]byte, 2048)
			got := 0
			for i := range 20 {
				msg := fmt.Sprintf("%s datagram %d", st, i)
				if _, err := c.Write([]byte(msg)); err != nil {
					t.Fatal(err)
				}
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
				n, err := c.Read(buf)
				if err == nil && string(buf[:n]) == msg {
					got++
				}
			}
			if got < 18 { // loopback UDP loses nothing in practice
				t.Fatalf("%s: %d of 20 datagrams came back", st, got)
			}
			_ = c.Close()
		}
	})

	// The exposer reports each session's path on stderr.
	for _, want := range []string{"path=relay", "path=direct", "service=uecho"} {
		if !strings.Contains(ex.stderr.String(), want) {
			t.Errorf("expose stderr lacks %q:\n%s", want, ex.stderr.String())
		}
	}

	// Last: the exposing process dies (SIGKILL, no goodbye). A relayed
	// connection fails with ErrPeerGone after the keepalive timeout
	// instead of hanging.
	t.Run("peer gone", func(t *testing.T) {
		c := dialWhenReady(t, p, ex.peer, "echo", bridge.WithStrategies(bridge.Relay), bridge.WithKeepAlive(200*time.Millisecond))
		defer c.Close()
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		_ = ex.cmd.Process.Kill()
		start := time.Now()
		_, err := c.Read(make([]byte, 1))
		if !errors.Is(err, bridge.ErrPeerGone) {
			t.Fatalf("read after the exposer died: %v", err)
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Fatalf("noticed after %v", el)
		}
		t.Logf("noticed in %v: %v", time.Since(start).Round(time.Millisecond), err)
	})
}

// TestExposeLimitFlags runs the built binary: limit flags out of range,
// or a network that is not IPv4 CIDR, fail before it connects, naming
// the flag; in-range limits bind the exposer, whose second session
// beyond --max-sessions 1 is refused with bridge.ErrLimit.
func TestExposeLimitFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-candidates", "0"}, "--max-candidates 0 (want 1 to 256)"},
		{[]string{"--max-strategy-timeout", "10ms"}, "--max-strategy-timeout 10ms (want 100ms to 2m)"},
		{[]string{"--setup-timeout", "10m"}, "--setup-timeout 10m0s (want 1s to 5m)"},
		{[]string{"--max-pending", "0"}, "--max-pending 0 (want at least 1)"},
		{[]string{"--max-pending-per-peer", "200"}, "--max-pending-per-peer 200 (want 1 to --max-pending, 128)"},
		{[]string{"--max-sessions", "10"}, "--max-sessions 10 (want at least --max-pending, 128)"},
		{[]string{"--punch-rate", "0"}, "--punch-rate 0 (want 1 to 100000)"},
		{[]string{"--allow-net", "10.0.0.0/33"}, `--allow-net "10.0.0.0/33": want an IPv4 network in CIDR notation`},
		{[]string{"--allow-net", "fd00::/8"}, `--allow-net "fd00::/8": want an IPv4 network`},
		{[]string{"--max-candidates", "x"}, `invalid argument "x" for "--max-candidates"`},
	} {
		// The server does not exist: the flags fail first.
		r := runCLI(t, "", append(append([]string{"expose", "--server", "nats://127.0.0.1:1"}, tc.args...), "echo", "tcp://127.0.0.1:1")...)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("expose %v: exit %d, stderr %q; want exit 1 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}

	n := startNodeProc(t, "node", "--listen", "127.0.0.1:-1", "--no-jetstream")
	n.waitReady(t, 30*time.Second)
	ex := startExpose(t, n.info["client"], "--max-sessions", "1", "--max-pending", "1", "--max-pending-per-peer", "1",
		"--max-candidates", "4", "--setup-timeout", "20s", "--punch-rate", "50", "--allow-net", "10.0.0.0/8", "--allow-net", "192.0.2.0/24",
		"echo", echotest.TCP(t))
	p := bridgeClient(t, n.info["client"])
	c := dialWhenReady(t, p, ex.peer, "echo", bridge.WithStrategies(bridge.Relay))
	defer c.Close()
	msg := []byte("within the limits")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo %q, %v", got, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if c2, err := bridge.Dial(ctx, p, ex.peer, "echo", bridge.WithStrategies(bridge.Relay)); !errors.Is(err, bridge.ErrLimit) {
		if c2 != nil {
			c2.Close()
		}
		t.Fatalf("a second session beyond --max-sessions 1: %v", err)
	}
}
