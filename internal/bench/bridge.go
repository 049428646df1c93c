package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

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
			Setup:    tunnelSetup(bridge.Relay, false),
		},
		{
			Name: "bridge-relay-nats", Kind: Rate, Unit: "MB/s", Scale: 1e6,
			What:     "bridge tunnel, relay path, as in bridge-relay",
			Baseline: "raw nats.go relay between the same two client connections: 256 KiB messages in a 4 MiB credit window, the receiver writing into a TCP connection to the same kind of sink",
			Setup:    tunnelSetup(bridge.Relay, true),
		},
		{
			Name: "bridge-direct", Kind: Rate, Unit: "MB/s", Scale: 1e6,
			What:     "bridge tunnel, direct path (dialer to exposer over loopback TCP, exposer to the sink)",
			Baseline: "loopback TCP straight to the same kind of sink",
			Setup:    tunnelSetup(bridge.Direct, false),
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

// tunnelSetup compares a tunnel on path with loopback TCP to a sink, or
// with natsRelay with a raw nats.go relay between the tunnel's two
// connections.
func tunnelSetup(path bridge.Strategy, natsRelay bool) func(context.Context, *Env) (Side, Side, func(), error) {
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
		var rw io.Writer = rc
		if natsRelay {
			r, err := newRawRelay(dnc, enc, rc, "bench.rawrelay."+exposer.ID())
			if err != nil {
				return pb, raw, cleanup, err
			}
			cl.add(r.close)
			rw = r
		}
		chunk := make([]byte, tunnelChunk)
		for i := range chunk {
			chunk[i] = byte(i)
		}
		pb.Op = func(ctx context.Context) (int, error) { return writeBatch(ctx, conn, pbSink, chunk) }
		raw.Op = func(ctx context.Context) (int, error) { return writeBatch(ctx, rw, rawSink, chunk) }
		return pb, raw, cleanup, nil
	}
}

// Window and chunk size of the raw relay: the bridge relay's defaults.
const (
	rawRelayWindow = bridge.DefaultWindow
	rawRelayChunk  = bridge.DefaultChunkSize
)

// rawRelay is the plainest relay over NATS with the bridge relay's flow
// control: Write publishes chunks of at most rawRelayChunk bytes on
// subject+".data" from one connection while the receiver's credit
// allows; the receiver, a callback subscription on another connection,
// grants credit up to rawRelayWindow bytes beyond what it has taken
// (in steps of a quarter window, on subject+".credit") and writes the
// bytes into out.
type rawRelay struct {
	send    *nats.Conn
	subject string
	data    *nats.Subscription
	credits *nats.Subscription

	credit   atomic.Uint64 // bytes the receiver allows in total
	sent     uint64        // bytes published (Write's)
	writable chan struct{}

	received, granted uint64 // the receiver's (its callback's)
}

func newRawRelay(send, recv *nats.Conn, out io.Writer, subject string) (*rawRelay, error) {
	r := &rawRelay{send: send, subject: subject, writable: make(chan struct{}, 1)}
	r.credit.Store(rawRelayWindow)
	r.granted = rawRelayWindow
	var err error
	r.credits, err = send.Subscribe(subject+".credit", func(m *nats.Msg) {
		if len(m.Data) == 8 {
			r.credit.Store(binary.BigEndian.Uint64(m.Data))
			select {
			case r.writable <- struct{}{}:
			default:
			}
		}
	})
	if err != nil {
		return nil, err
	}
	var grant [8]byte
	r.data, err = recv.Subscribe(subject+".data", func(m *nats.Msg) {
		r.received += uint64(len(m.Data))
		if limit := r.received + rawRelayWindow; limit-r.granted >= rawRelayWindow/4 {
			r.granted = limit
			binary.BigEndian.PutUint64(grant[:], limit)
			_ = recv.Publish(subject+".credit", grant[:])
		}
		_, _ = out.Write(m.Data)
	})
	if err != nil {
		_ = r.credits.Unsubscribe()
		return nil, err
	}
	if err := r.data.SetPendingLimits(-1, -1); err != nil {
		r.close()
		return nil, err
	}
	for _, nc := range []*nats.Conn{send, recv} {
		if err := nc.Flush(); err != nil {
			r.close()
			return nil, err
		}
	}
	return r, nil
}

// Write publishes b in chunks, waiting for credit.
func (r *rawRelay) Write(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		credit := r.credit.Load()
		if credit <= r.sent {
			select {
			case <-r.writable:
			case <-time.After(10 * time.Second):
				return n, fmt.Errorf("raw relay: no credit for 10 s")
			}
			continue
		}
		k := min(int(min(credit-r.sent, rawRelayChunk)), len(b)-n)
		if err := r.send.Publish(r.subject+".data", b[n:n+k]); err != nil {
			return n, err
		}
		r.sent += uint64(k)
		n += k
	}
	return n, nil
}

func (r *rawRelay) close() {
	_ = r.data.Unsubscribe()
	_ = r.credits.Unsubscribe()
}
