package eventlog_test

import (
	"context"
	"encoding/json"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/peer"
)

// The event log benchmarks run each peerbus operation beside its raw
// nats.go baseline on the same node (file storage) and connection:
// compare the ns/op of .../peerbus with .../raw of the same group.
// Payloads are the same bytes ({"N":12345}); peerbus encodes a struct,
// adds the event headers (id, dedupe id, time, codec), and the server
// de-duplicates by id.

type benchEnv struct {
	n   *bus.Node
	p   *eventlog.Log
	nc  *nats.Conn
	js  jetstream.JetStream
	ctx context.Context
}

func newBenchEnv(b *testing.B) benchEnv {
	b.Helper()
	n := jsNode(b, b.TempDir(), "bench-log")
	pp, err := peer.New(n.Conn(), peer.AsClient())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pp.Close() })
	p, err := eventlog.New(pp)
	if err != nil {
		b.Fatal(err)
	}
	js, err := jetstream.New(n.Conn())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(js.CleanupPublisher)
	ctx := context.Background()
	if _, err := p.Info(ctx); err != nil { // creates the log
		b.Fatal(err)
	}
	return benchEnv{n: n, p: p, nc: n.Conn(), js: js, ctx: ctx}
}

// reset deletes and recreates the log, so each benchmark starts with an
// empty stream and an empty dedupe window.
func (env benchEnv) reset(b *testing.B) {
	b.Helper()
	if err := env.js.DeleteStream(env.ctx, eventlog.Stream); err != nil {
		b.Fatal(err)
	}
	if _, err := env.p.Info(env.ctx); err != nil {
		b.Fatal(err)
	}
}

var benchPayload, _ = json.Marshal(num{12345})

// asyncBatch is how many async emits the benchmarks send before they
// wait for the acks.
const asyncBatch = 1000

// benchSubject is an event subject as long as a peer's (the peer id
// is a uuid).
const benchSubject = "peerbus.evt._.00000000-0000-4000-8000-000000000000.bench.evt"

var benchSeq atomic.Uint64

// benchID returns a unique message id for the raw baselines, as long
// as an event id (a uuid).
func benchID() string {
	n := strconv.FormatUint(benchSeq.Add(1), 10)
	return "00000000-0000-4000-8000-000000000000"[:36-len(n)] + n
}

func BenchmarkLogEmit(b *testing.B) {
	env := newBenchEnv(b)
	b.Run("sync/peerbus", func(b *testing.B) {
		env.reset(b)
		for b.Loop() {
			if _, err := env.p.Emit(env.ctx, "bench.evt", num{12345}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sync/raw", func(b *testing.B) {
		env.reset(b)
		for b.Loop() {
			if _, err := env.js.Publish(env.ctx, benchSubject, benchPayload); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sync/raw-headers", func(b *testing.B) {
		env.reset(b)
		for b.Loop() {
			id := benchID()
			m := &nats.Msg{Subject: benchSubject, Data: benchPayload, Header: nats.Header{
				jetstream.MsgIDHeader: {id}, eventlog.HeaderEventID: {id},
				eventlog.HeaderTime: {"2026-11-21T07:50:30.123456789Z"}, peer.HeaderCodec: {"json"}}}
			if _, err := env.js.PublishMsg(env.ctx, m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sync/raw-msgid", func(b *testing.B) {
		env.reset(b)
		for b.Loop() {
			if _, err := env.js.Publish(env.ctx, benchSubject, benchPayload, jetstream.WithMsgID(benchID())); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Async: batches of asyncBatch emits, then wait for their acks.
	b.Run("async/peerbus", func(b *testing.B) {
		env.reset(b)
		fs := make([]*eventlog.EmitFuture, 0, asyncBatch)
		wait := func() {
			for _, f := range fs {
				if _, err := f.Wait(env.ctx); err != nil {
					b.Fatal(err)
				}
			}
			fs = fs[:0]
		}
		for b.Loop() {
			f, err := env.p.EmitAsync(env.ctx, "bench.evt", num{12345})
			if err != nil {
				b.Fatal(err)
			}
			if fs = append(fs, f); len(fs) == asyncBatch {
				wait()
			}
		}
		wait()
	})
	b.Run("async/raw", func(b *testing.B) {
		env.reset(b)
		n := 0
		for b.Loop() {
			if _, err := env.js.PublishAsync(benchSubject, benchPayload); err != nil {
				b.Fatal(err)
			}
			if n++; n%asyncBatch == 0 {
				<-env.js.PublishAsyncComplete()
			}
		}
		<-env.js.PublishAsyncComplete()
	})
	b.Run("async/raw-headers", func(b *testing.B) {
		env.reset(b)
		n := 0
		for b.Loop() {
			id := benchID()
			m := &nats.Msg{Subject: benchSubject, Data: benchPayload, Header: nats.Header{
				jetstream.MsgIDHeader: {id}, eventlog.HeaderEventID: {id},
				eventlog.HeaderTime: {"2026-11-21T07:50:30.123456789Z"}, peer.HeaderCodec: {"json"}}}
			if _, err := env.js.PublishMsgAsync(m); err != nil {
				b.Fatal(err)
			}
			if n++; n%asyncBatch == 0 {
				<-env.js.PublishAsyncComplete()
			}
		}
		<-env.js.PublishAsyncComplete()
	})
	b.Run("async/raw-msgid", func(b *testing.B) {
		env.reset(b)
		n := 0
		for b.Loop() {
			if _, err := env.js.PublishAsync(benchSubject, benchPayload, jetstream.WithMsgID(benchID())); err != nil {
				b.Fatal(err)
			}
			if n++; n%asyncBatch == 0 {
				<-env.js.PublishAsyncComplete()
			}
		}
		<-env.js.PublishAsyncComplete()
	})
}

// BenchmarkLogReplay reads 10000 stored events per op.
func BenchmarkLogReplay(b *testing.B) {
	env := newBenchEnv(b)
	const events = 10000
	var fs []*eventlog.EmitFuture
	for range events {
		f, err := env.p.EmitAsync(env.ctx, "bench.evt", num{12345})
		if err != nil {
			b.Fatal(err)
		}
		fs = append(fs, f)
	}
	for _, f := range fs {
		if _, err := f.Wait(env.ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("peerbus", func(b *testing.B) {
		for b.Loop() {
			n := 0
			for e, err := range env.p.Replay(env.ctx, "bench.>") {
				if err != nil || len(e.Data) == 0 {
					b.Fatal(err)
				}
				n++
			}
			if n != events {
				b.Fatal(n)
			}
		}
		b.ReportMetric(float64(events*b.N)/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("raw", func(b *testing.B) {
		for b.Loop() {
			cons, err := env.js.OrderedConsumer(env.ctx, eventlog.Stream, jetstream.OrderedConsumerConfig{
				FilterSubjects: []string{"peerbus.evt.*.*.bench.>"}})
			if err != nil {
				b.Fatal(err)
			}
			it, err := cons.Messages(jetstream.PullMaxMessages(1000))
			if err != nil {
				b.Fatal(err)
			}
			for range events {
				m, err := it.Next()
				if err != nil || len(m.Data()) == 0 {
					b.Fatal(err)
				}
				if _, err := m.Metadata(); err != nil {
					b.Fatal(err)
				}
			}
			it.Stop()
			_ = env.js.DeleteConsumer(env.ctx, eventlog.Stream, cons.CachedInfo().Name)
		}
		b.ReportMetric(float64(events*b.N)/b.Elapsed().Seconds(), "events/s")
	})
}

// BenchmarkLogTransient publishes live events to a subscriber on
// another connection.
func BenchmarkLogTransient(b *testing.B) {
	env := newBenchEnv(b)
	subNC, err := env.n.Connect()
	if err != nil {
		b.Fatal(err)
	}
	defer subNC.Close()
	var got atomic.Int64
	sub, err := subNC.Subscribe("peerbus.tevt.>", func(*nats.Msg) { got.Add(1) })
	if err != nil {
		b.Fatal(err)
	}
	sub.SetPendingLimits(-1, -1)
	if err := subNC.Flush(); err != nil {
		b.Fatal(err)
	}
	// rawSubject is a transient event subject as long as the peer's.
	const rawSubject = "peerbus.tevt._.00000000-0000-4000-8000-000000000000.bench.evt"
	b.Run("peerbus", func(b *testing.B) {
		for b.Loop() {
			if _, err := env.p.EmitTransient(env.ctx, "bench.evt", num{12345}); err != nil {
				b.Fatal(err)
			}
		}
		if err := env.nc.Flush(); err != nil {
			b.Fatal(err)
		}
	})
	b.Run("raw", func(b *testing.B) {
		for b.Loop() {
			if err := env.nc.Publish(rawSubject, benchPayload); err != nil {
				b.Fatal(err)
			}
		}
		if err := env.nc.Flush(); err != nil {
			b.Fatal(err)
		}
	})
	b.Run("raw-headers", func(b *testing.B) {
		for b.Loop() {
			m := &nats.Msg{Subject: rawSubject, Data: benchPayload, Header: nats.Header{
				eventlog.HeaderEventID: {benchID()}, eventlog.HeaderTime: {"2026-11-21T07:50:30.123456789Z"},
				peer.HeaderCodec: {"json"}}}
			if err := env.nc.PublishMsg(m); err != nil {
				b.Fatal(err)
			}
		}
		if err := env.nc.Flush(); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkTransientDelivered measures transient events until they are
// delivered, as peerbus bench's transient and transient-sub: emitted on
// one TCP client connection in batches of 1000, each batch waited for
// until a subscriber on another connection has it — a plain NATS
// subscription (transient), a peer's Subscribe handler (transient-sub),
// or, for the raw baseline, core publishes of the payload to a callback
// subscription. cpu-ns/op is the process's CPU time (server included)
// per event, steadier than ns/op on a shared machine:
//
//	go test -run '^$' -bench TransientDelivered -benchmem ./eventlog/
func BenchmarkTransientDelivered(b *testing.B) {
	n := jsNode(b, b.TempDir(), "bench-live")
	connect := func() *nats.Conn {
		nc, err := nats.Connect(n.ClientURL())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nc.Close)
		return nc
	}
	pubNC, subNC := connect(), connect()
	logOn := func(nc *nats.Conn) *eventlog.Log {
		p, err := peer.New(nc, peer.AsClient())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Close() })
		l, err := eventlog.New(p)
		if err != nil {
			b.Fatal(err)
		}
		return l
	}
	emitter, watcher := logOn(pubNC), logOn(subNC)
	plain, handled, raw := newDeliveries(), newDeliveries(), newDeliveries()
	sub, err := subNC.Subscribe(eventlog.TransientSubject("", emitter.Peer().ID(), "bench.plain"), func(*nats.Msg) { plain.add() })
	if err != nil {
		b.Fatal(err)
	}
	sub.SetPendingLimits(-1, -1)
	if _, err := watcher.Subscribe("bench.sub", func(context.Context, eventlog.Event) error {
		handled.add()
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	const rawSubject = "peerbus.tevt._.00000000-0000-4000-8000-000000000000.bench.raw"
	rsub, err := subNC.Subscribe(rawSubject, func(*nats.Msg) { raw.add() })
	if err != nil {
		b.Fatal(err)
	}
	rsub.SetPendingLimits(-1, -1)
	if err := subNC.Flush(); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	run := func(b *testing.B, got *deliveries, emit func() error) {
		b.ReportAllocs()
		defer reportCPU(b)()
		for done := 0; done < b.N; {
			k := min(1000, b.N-done)
			got.expect(int64(k))
			for range k {
				if err := emit(); err != nil {
					b.Fatal(err)
				}
			}
			select {
			case <-got.all:
			case <-time.After(10 * time.Second):
				b.Fatal("events not delivered")
			}
			done += k
		}
	}
	b.Run("transient/peerbus", func(b *testing.B) {
		run(b, plain, func() error { _, err := emitter.EmitTransient(ctx, "bench.plain", num{12345}); return err })
	})
	b.Run("transient-sub/peerbus", func(b *testing.B) {
		run(b, handled, func() error { _, err := emitter.EmitTransient(ctx, "bench.sub", num{12345}); return err })
	})
	b.Run("raw", func(b *testing.B) {
		run(b, raw, func() error { return pubNC.Publish(rawSubject, benchPayload) })
	})
}

// reportCPU starts counting the process's CPU time; the returned func
// reports it per op as cpu-ns/op.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

// deliveries counts delivered events and tells when the expected
// number arrived.
type deliveries struct {
	n, target atomic.Int64
	all       chan struct{}
}

func newDeliveries() *deliveries { return &deliveries{all: make(chan struct{}, 1)} }

// expect sets the target k events beyond what was counted so far.
func (d *deliveries) expect(k int64) { d.target.Store(d.n.Load() + k) }

func (d *deliveries) add() {
	if d.n.Add(1) == d.target.Load() {
		d.all <- struct{}{}
	}
}

// BenchmarkEmitAsyncLazy is async emits as in peerbus bench's
// emit-async-lazy and emit-async-lazy-msgid: batches of 1000, then
// every ack, on a node that syncs its store every 2 minutes (so the CPU,
// not the disk, is the limit), against JetStream async publishes of the
// payload with a Nats-Msg-Id each (raw-msgid) and without (raw).
// cpu-ns/op is the process's CPU time per event, server included:
//
//	go test -run '^$' -bench EmitAsyncLazy -benchmem ./eventlog/
func BenchmarkEmitAsyncLazy(b *testing.B) {
	n, err := bus.Start(context.Background(), bus.WithListen("127.0.0.1:-1"), bus.WithName("bench-lazy"),
		bus.WithDataDir(b.TempDir()), bus.WithLogSync(2*time.Minute))
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	pp, err := peer.New(n.Conn(), peer.AsClient())
	if err != nil {
		b.Fatal(err)
	}
	defer pp.Close()
	p, err := eventlog.New(pp)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := p.Info(ctx); err != nil { // creates the log
		b.Fatal(err)
	}
	js, err := jetstream.New(n.Conn())
	if err != nil {
		b.Fatal(err)
	}
	defer js.CleanupPublisher()
	b.Run("peerbus", func(b *testing.B) {
		b.ReportAllocs()
		defer reportCPU(b)()
		fs := make([]*eventlog.EmitFuture, 0, asyncBatch)
		wait := func() {
			for _, f := range fs {
				if _, err := f.Wait(ctx); err != nil {
					b.Fatal(err)
				}
			}
			fs = fs[:0]
		}
		for b.Loop() {
			f, err := p.EmitAsync(ctx, "bench.evt", num{12345})
			if err != nil {
				b.Fatal(err)
			}
			if fs = append(fs, f); len(fs) == asyncBatch {
				wait()
			}
		}
		wait()
	})
	for _, withID := range []bool{true, false} {
		name := "raw"
		if withID {
			name = "raw-msgid"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			defer reportCPU(b)()
			i := 0
			for b.Loop() {
				var err error
				if withID {
					_, err = js.PublishAsync(benchSubject, benchPayload, jetstream.WithMsgID(benchID()))
				} else {
					_, err = js.PublishAsync(benchSubject, benchPayload)
				}
				if err != nil {
					b.Fatal(err)
				}
				if i++; i%asyncBatch == 0 {
					<-js.PublishAsyncComplete()
				}
			}
			<-js.PublishAsyncComplete()
		})
	}
}
