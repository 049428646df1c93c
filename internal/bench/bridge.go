package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/peerbus/peerbus/bridge"
	"github.com/peerbus/peerbus/peer"
)

// Tunnel writes: tunnelBatch bytes per Op, in writes of tunnelChunk
// (the relay's chunk size).
const (
	tunnelChunk = 256 << 10
	tunnelBatch = 8 << 20
)

func bridgeCases() []Case {
	return []Case{
		{
			Name: "bridge-relay", Kind: Rate, Unit: "MB/s", Scale: 1e6,
			What:     "bridge tunnel, relay path: bytes written into a Dial'd connection until a TCP sink behind Expose has them",
			Baseline: "loopback TCP straight to the same kind of sink",
			Setup:    tunnelSetup(bridge.Relay),
		},
		{
			Name: "bridge-direct", Kind: Rate, Unit: "MB/s", Scale: 1e6,
			What:     "bridge tunnel, direct path (dialer to exposer over loopback TCP, exposer to the sink)",
			Baseline: "loopback TCP straight to the same kind of sink",
			Setup:    tunnelSetup(bridge.Direct),
		},
	}
}

// sink is a TCP server that discards what it reads and counts it.
type sink struct {
	ln    net.Listener
	got   *counter
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func newSink() (*sink, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &sink{ln: ln, got: newCounter()}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Go(func() {
				defer c.Close()
				buf := make([]byte, 256<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						s.got.add(int64(n))
					}
					if err != nil {
						return
					}
				}
			})
		}
	})
	return s, nil
}

// Close stops accepting, closes the connections and waits for them.
func (s *sink) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// writeBatch writes tunnelBatch bytes to w and waits until s counted
// them.
func writeBatch(ctx context.Context, w io.Writer, s *sink, chunk []byte) (int, error) {
	target := s.got.n.Load() + tunnelBatch
	for sent := 0; sent < tunnelBatch; sent += len(chunk) {
		if _, err := w.Write(chunk); err != nil {
			return 0, err
		}
	}
	return tunnelBatch, s.got.wait(ctx, target)
}

func tunnelSetup(path bridge.Strategy) func(context.Context, *Env) (Side, Side, func(), error) {
	return func(ctx context.Context, env *Env) (pb, raw Side, cleanup func(), err error) {
		var cl cleanups
		cleanup = cl.run
		n, err := env.Node(ctx)
		if err != nil {
			return pb, raw, cleanup, err
		}
		enc, dnc, err := twoConns(n, &cl)
		if err != nil {
			return pb, raw, cleanup, err
		}
		exposer, err := peer.New(enc, peer.WithName("bench-exposer"))
		if err != nil {
			return pb, raw, cleanup, err
		}
		cl.closer(exposer)
		dialer, err := peer.New(dnc, peer.AsClient())
		if err != nil {
			return pb, raw, cleanup, err
		}
		cl.closer(dialer)
		// Sinks close last: their connections end when the writers close.
		pbSink, err := newSink()
		if err != nil {
			return pb, raw, cleanup, err
		}
		rawSink, err := newSink()
		if err != nil {
			_ = pbSink.Close()
			return pb, raw, cleanup, err
		}
		cl = append(cleanups{func() { _ = pbSink.Close() }, func() { _ = rawSink.Close() }}, cl...)
		cleanup = cl.run

		name := "bench-sink-" + string(path)
		svc, err := bridge.Expose(ctx, exposer, name, "tcp://"+pbSink.ln.Addr().String())
		if err != nil {
			return pb, raw, cleanup, err
		}
		cl.closer(svc)
		conn, err := bridge.Dial(ctx, dialer, exposer.ID(), name, bridge.WithStrategies(path))
		if err != nil {
			return pb, raw, cleanup, err
		}
		cl.closer(conn)
		if conn.Path() != path {
			return pb, raw, cleanup, fmt.Errorf("tunnel took path %s, not %s", conn.Path(), path)
		}
		rc, err := net.Dial("tcp4", rawSink.ln.Addr().String())
		if err != nil {
			return pb, raw, cleanup, err
		}
		cl.closer(rc)
		chunk := make([]byte, tunnelChunk)
		for i := range chunk {
			chunk[i] = byte(i)
		}
		pb.Op = func(ctx context.Context) (int, error) { return writeBatch(ctx, conn, pbSink, chunk) }
		raw.Op = func(ctx context.Context) (int, error) { return writeBatch(ctx, rc, rawSink, chunk) }
		return pb, raw, cleanup, nil
	}
}
