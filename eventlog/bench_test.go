package eventlog_test

import (
	"context"
	"encoding/json"
	"strconv"
	"sync/atomic"
	"testing"

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
