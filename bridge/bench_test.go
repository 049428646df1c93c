package bridge

import (
	"context"
	"encoding/binary"

	"io"
	"net"
	"testing"
	"time"

	"github.com/peerbus/peerbus/internal/echotest"
	"github.com/peerbus/peerbus/peer"
)

// sinkServer reads each connection to EOF, then answers with the byte
// count (8 bytes) and closes; it returns "tcp://addr".
func sinkServer(tb testing.TB) string {
	return echotest.ServeTCP(tb, func(c net.Conn) {
		n, _ := io.CopyBuffer(io.Discard, c, make([]byte, 256<<10))
		_, _ = c.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
	})
}

// pushThrough writes total bytes to c in 256 KiB writes, half-closes and
// checks the sink's count.
func pushThrough(b *testing.B, c net.Conn, total int64) {
	buf := make([]byte, 256<<10)
	for sent := int64(0); sent < total; {
		n := min(int64(len(buf)), total-sent)
		if _, err := c.Write(buf[:n]); err != nil {
			b.Fatal(err)
		}
		sent += n
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		b.Fatal(err)
	}
	var cnt [8]byte
	if _, err := io.ReadFull(c, cnt[:]); err != nil {
		b.Fatal(err)
	}
	if got := int64(binary.BigEndian.Uint64(cnt[:])); got != total {
		b.Fatalf("sink counted %d bytes, want %d", got, total)
	}
}

// BenchmarkThroughput pushes data one way into a sink: over raw loopback
// TCP, over a bridge connection with a direct path, and over the relay
// (one node, and two clustered nodes), in the same run. MB/s is the
// figure to compare.
func BenchmarkThroughput(b *testing.B) {
	const chunk = 64 << 20 // bytes per iteration
	sink := sinkServer(b)
	_, addr, _ := ParseTarget(sink)
	nodes := startCluster(b, 2)
	pe := newPeer(b, connect(b, nodes[0]))
	same := newPeer(b, connect(b, nodes[0]), peer.AsClient())
	other := newPeer(b, connect(b, nodes[1]), peer.AsClient())
	waitPeer(b, other, pe.ID())
	svc, err := Expose(context.Background(), pe, "sink", sink)
	if err != nil {
		b.Fatal(err)
	}
	defer svc.Close()
	dial := func(p *peer.Peer, opts ...DialOption) func() net.Conn {
		return func() net.Conn {
			c, err := Dial(context.Background(), p, pe.ID(), "sink", opts...)
			if err != nil {
				b.Fatal(err)
			}
			return c
		}
	}
	for _, bc := range []struct {
		name string
		dial func() net.Conn
	}{
		{"raw-loopback-tcp", func() net.Conn {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			return c
		}},
		{"direct", dial(same, WithStrategies(Direct))},
		{"relay-one-node", dial(same, WithStrategies(Relay))},
		{"relay-two-nodes", dial(other, WithStrategies(Relay))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(chunk)
			for b.Loop() {
				c := bc.dial()
				pushThrough(b, c, chunk)
				_ = c.Close()
			}
		})
	}
}

// BenchmarkConnect measures how long Dial takes with each strategy alone,
// on one node (the raw paths go over loopback).
func BenchmarkConnect(b *testing.B) {
	nodes := startCluster(b, 1)
	pe := newPeer(b, connect(b, nodes[0]))
	pd := newPeer(b, connect(b, nodes[0]), peer.AsClient())
	tcp, err := Expose(context.Background(), pe, "sink", sinkServer(b))
	if err != nil {
		b.Fatal(err)
	}
	defer tcp.Close()
	udp, err := Expose(context.Background(), pe, "udp", echotest.UDP(b))
	if err != nil {
		b.Fatal(err)
	}
	defer udp.Close()
	for _, st := range []Strategy{Direct, Reverse, PunchTCP, Relay} {
		b.Run("tcp-"+string(st), func(b *testing.B) {
			for b.Loop() {
				c, err := Dial(context.Background(), pd, pe.ID(), "sink", WithStrategies(st))
				if err != nil {
					b.Fatal(err)
				}
				_ = c.Close()
			}
		})
	}
	for _, st := range []Strategy{Direct, Reverse, PunchUDP, Relay} {
		b.Run("udp-"+string(st), func(b *testing.B) {
			for b.Loop() {
				c, err := DialPacket(context.Background(), pd, pe.ID(), "udp", WithStrategies(st))
				if err != nil {
					b.Fatal(err)
				}
				_ = c.Close()
			}
		})
	}
	// Let the exposer's sessions end before the services close.
	deadline := time.Now().Add(5 * time.Second)
	for (tcp.Stats().Active > 0 || udp.Stats().Active > 0) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}

}
