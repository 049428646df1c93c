package bridge

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// relayPair makes two connected relays, a on nca and b on ncb.
func relayPair(t *testing.T, nca, ncb *nats.Conn, packet bool, cfg relayConfig) (a, b *relay) {
	t.Helper()
	subj := "test.relay." + strings.ReplaceAll(t.Name(), "/", "_")
	a, err := newRelay(nca, subj+".a", subj+".b", packet, cfg, Addr{Peer: "a"}, Addr{Peer: "b"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err = newRelay(ncb, subj+".b", subj+".a", packet, cfg, Addr{Peer: "b"}, Addr{Peer: "a"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = nca.Flush()
	_ = ncb.Flush()
	if err := a.start(); err != nil {
		t.Fatal(err)
	}
	if err := b.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = a.Close()
		_ = b.Close()
	})
	return a, b
}

func TestRelayBackPressure(t *testing.T) {
	nodes := startCluster(t, 1)
	nc := connect(t, nodes[0])
	const window, chunk = 64 << 10, 8 << 10
	a, b := relayPair(t, nc, connect(t, nodes[0]), false, relayConfig{window: window, chunk: chunk, keepalive: time.Second})
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	done := make(chan error, 1)
	go func() {
		_, err := a.Write(data)
		if err == nil {
			err = a.CloseWrite()
		}
		done <- err
	}()
	// Nobody reads b: the writer must stop at the window.
	time.Sleep(300 * time.Millisecond)
	a.mu.Lock()
	sent := a.sendOff
	a.mu.Unlock()
	b.mu.Lock()
	queued := b.rqBytes
	b.mu.Unlock()
	if sent > window || queued > window {
		t.Fatalf("sent %d, queued %d: more than the window of %d", sent, queued, window)
	}
	if sent < window/2 {
		t.Fatalf("sent only %d bytes of a %d window", sent, window)
	}
	select {
	case err := <-done:
		t.Fatalf("write finished without a reader: %v", err)
	default:
	}
	got, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, not the %d written", len(got), len(data))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestRelayHalfCloseAndClose(t *testing.T) {
	nodes := startCluster(t, 1)
	a, b := relayPair(t, connect(t, nodes[0]), connect(t, nodes[0]), false, relayConfig{})
	if _, err := a.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if err := a.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write([]byte("x")); !errors.Is(err, ErrWriteClosed) {
		t.Fatalf("write after CloseWrite: %v", err)
	}
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "ping" {
		t.Fatalf("b read %q, %v", got, err)
	}
	// The other direction still flows.
	if _, err := b.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(a, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("a read %q, %v", buf, err)
	}
	// Close: b's reader sees EOF, b's writer an error; a second Close fails.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := a.Read(buf); err != io.EOF {
		t.Fatalf("read after peer close: %d, %v; want EOF", n, err)
	}
	if err := b.Close(); !errors.Is(err, ErrClosed) || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
	if _, err := b.Read(buf); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
}

func TestRelayWriteAfterPeerClosed(t *testing.T) {
	nodes := startCluster(t, 1)
	a, b := relayPair(t, connect(t, nodes[0]), connect(t, nodes[0]), false, relayConfig{})
	_ = b.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := a.Write([]byte("x"))
		if errors.Is(err, ErrPeerClosed) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("writes never failed after the peer closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRelayDeadlines(t *testing.T) {
	nodes := startCluster(t, 1)
	a, b := relayPair(t, connect(t, nodes[0]), connect(t, nodes[0]), false, relayConfig{window: 16 << 10, chunk: 4 << 10})
	_ = a.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	_, err := a.Read(make([]byte, 10))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past deadline: %v", err)
	}
	if el := time.Since(start); el < 40*time.Millisecond || el > 2*time.Second {
		t.Fatalf("read deadline hit after %v", el)
	}
	// A cleared deadline reads again.
	_ = a.SetReadDeadline(time.Time{})
	go func() { _, _ = b.Write([]byte("ok")) }()
	buf := make([]byte, 2)
	if _, err := io.ReadFull(a, buf); err != nil {
		t.Fatal(err)
	}
	// A write without credit times out, having written what it could.
	_ = a.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	n, err := a.Write(make([]byte, 64<<10))
	if !errors.Is(err, ErrTimeout) || n > 16<<10 {
		t.Fatalf("write past deadline: %d, %v", n, err)
	}
	// A deadline in the past fails at once.
	_ = a.SetDeadline(time.Now().Add(-time.Second))
	if _, err := a.Write([]byte("x")); !errors.Is(err, ErrTimeout) {
		t.Fatalf("write with a past deadline: %v", err)
	}
}

func TestRelayPeerGone(t *testing.T) {
	nodes := startCluster(t, 1)
	ncb, err := nats.Connect(nodes[0].ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	a, b := relayPair(t, connect(t, nodes[0]), ncb, false, relayConfig{keepalive: 50 * time.Millisecond})
	_ = b
	// b's process vanishes: its connection drops without a close frame.
	ncb.Close()
	start := time.Now()
	_, err = a.Read(make([]byte, 10))
	if !errors.Is(err, ErrPeerGone) {
		t.Fatalf("read from a gone peer: %v", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("gone detected after %v", el)
	}
	if _, err := a.Write([]byte("x")); !errors.Is(err, ErrPeerGone) {
		t.Fatalf("write to a gone peer: %v", err)
	}
}

// TestRelayDetectsLoss injects frames that break the stream: a gap, a
// credit violation, and a ping announcing bytes that never came.
func TestRelayDetectsLoss(t *testing.T) {
	nodes := startCluster(t, 1)
	for _, tc := range []struct {
		name   string
		frames []frame
		want   error
	}{
		{"gap", []frame{{typ: frameData, value: 0, payload: []byte("abc")}, {typ: frameData, value: 10, payload: []byte("x")}}, ErrRelayLost},
		{"duplicate", []frame{{typ: frameData, value: 0, payload: []byte("abc")}, {typ: frameData, value: 0, payload: []byte("abc")}}, ErrRelayLost},
		{"lost tail", []frame{{typ: frameData, value: 0, payload: []byte("abc")}, {typ: framePing, value: 1 << 20, sent: 10}}, ErrRelayLost},
		{"fin mismatch", []frame{{typ: frameData, value: 0, payload: []byte("abc")}, {typ: frameFin, value: 9}}, ErrRelayLost},
		{"over credit", []frame{{typ: frameData, value: 0, payload: make([]byte, 5000)}}, ErrProtocol},
		{"garbage", nil, ErrProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc := connect(t, nodes[0])
			subj := "test.loss." + strings.ReplaceAll(tc.name, " ", "_")
			r, err := newRelay(nc, subj, subj+".back", false, relayConfig{window: 4096, chunk: 1024}, Addr{}, Addr{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			back, _ := nc.SubscribeSync(subj + ".back")
			if err := r.start(); err != nil {
				t.Fatal(err)
			}
			_ = nc.Flush()
			inj := connect(t, nodes[0])
			if tc.frames == nil {
				_ = inj.Publish(subj, []byte{9, 9, 9})
			}
			for _, f := range tc.frames {
				_ = inj.Publish(subj, appendFrame(nil, f))
			}
			_ = inj.Flush()
			_ = r.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = io.ReadAll(r)
			if !errors.Is(err, tc.want) {
				t.Fatalf("read: %v, want %v", err, tc.want)
			}
			// The other side is told with a close frame.
			for {
				m, err := back.NextMsg(5 * time.Second)
				if err != nil {
					t.Fatal("no close frame sent")
				}
				if f, err := decodeFrame(m.Data); err == nil && f.typ == frameClose {
					if !strings.Contains(string(f.payload), "bridge:") {
						t.Fatalf("close reason %q", f.payload)
					}
					return
				}
			}
		})
	}
}

func TestRelayPackets(t *testing.T) {
	nodes := startCluster(t, 1)
	a, b := relayPair(t, connect(t, nodes[0]), connect(t, nodes[0]), true, relayConfig{queue: 4, chunk: 2048})
	for i := range 10 {
		if _, err := a.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Write(make([]byte, 4096)); !errors.Is(err, ErrProtocol) {
		t.Fatalf("oversized datagram: %v", err)
	}
	waitFor(t, "drops", 5*time.Second, func() bool { return b.Dropped() == 6 })
	buf := make([]byte, 1)
	for i := range 4 {
		if n, err := b.Read(buf); err != nil || n != 1 || buf[0] != byte(i) {
			t.Fatalf("datagram %d: %v %v", i, buf[:n], err)
		}
	}
	// Empty datagrams travel too.
	if _, err := b.Write(nil); err != nil {
		t.Fatal(err)
	}
	_ = a.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := a.Read(buf); err != nil || n != 0 {
		t.Fatalf("empty datagram: %d %v", n, err)
	}
	_ = b.Close()
	if _, err := a.Read(buf); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("read after peer close: %v", err)
	}
}

func TestRelayConcurrentWriters(t *testing.T) {
	nodes := startCluster(t, 1)
	a, b := relayPair(t, connect(t, nodes[0]), connect(t, nodes[0]), false, relayConfig{window: 32 << 10, chunk: 4 << 10})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = a.Write(bytes.Repeat([]byte{byte('a' + i)}, 10000))
		}()
	}
	go func() {
		wg.Wait()
		_ = a.CloseWrite()
	}()
	got, err := io.ReadAll(b)
	if err != nil || len(got) != 80000 {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	// Each Write is contiguous in the stream.
	for i := 0; i < len(got); i += 10000 {
		if bytes.Count(got[i:i+10000], got[i:i+1]) != 10000 {
			t.Fatalf("writes interleaved at %d", i)
		}
	}
}
