package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/peer"
)

// num is the event payload: {"N":12345}, the bytes the raw baselines
// publish.
type num struct{ N int }

var rawEvent, _ = json.Marshal(num{12345})

// Batch sizes of the event cases.
const (
	// liveBatch events are published, then the case waits until the
	// subscriber has them all.
	liveBatch = 1000
	// asyncBatch events are published asynchronously, then the case
	// waits for their acks.
	asyncBatch = 1000
	// replayEvents is the length of one replay.
	replayEvents = 10000
)

// fakeID is as long as a peer id: raw subjects as long as peerbus's.
const fakeID = "00000000-0000-4000-8000-000000000000"

func eventCases() []Case {
	return []Case{
		{
			Name: "transient", Kind: Rate, Unit: "events/s",
			What:     "EmitTransient, batches of 1000 until a plain NATS subscription on another connection has them all",
			Baseline: "nats.go core publish of the same payload to the same kind of subscription",
			Setup:    transientSetup(false),
		},
		{
			Name: "transient-sub", Kind: Rate, Unit: "events/s",
			What:     "EmitTransient to a live peer subscription (Subscribe) on another connection: emit to handler",
			Baseline: "nats.go core publish to a callback subscription on another connection",
			Setup:    transientSetup(true),
		},
		{
			Name: "emit", Kind: Rate, Unit: "events/s",
			What:     "Emit: one persisted event at a time, waiting for the log's ack (file storage, dedupe id; --log-sync always: fsync before each ack)",
			Baseline: "JetStream synchronous publish to the same stream (no message id)",
			Setup:    emitSetup(false, false, false),
		},
		{
			Name: "emit-lazy", Kind: Rate, Unit: "events/s",
			What:     "Emit as in emit, on a node with --log-sync 2m (fsync every 2 minutes, nats-server's default)",
			Baseline: "JetStream synchronous publish to the same stream on that node",
			Setup:    emitSetup(false, true, false),
		},
		{
			Name: "emit-async", Kind: Rate, Unit: "events/s",
			What:     "EmitAsync: batches of 1000 persisted events, then Wait for every ack (--log-sync always)",
			Baseline: "JetStream async publish of 1000 messages to the same stream, then wait for completion",
			Setup:    emitSetup(true, false, false),
		},
		{
			Name: "emit-async-msgid", Kind: Rate, Unit: "events/s",
			What:     "EmitAsync as in emit-async",
			Baseline: "JetStream async publish of 1000 messages to the same stream, each with its own Nats-Msg-Id (de-duplicated as peerbus events are), then wait for completion",
			Setup:    emitSetup(true, false, true),
		},
		{
			Name: "emit-async-lazy", Kind: Rate, Unit: "events/s",
			What:     "EmitAsync as in emit-async, on a node with --log-sync 2m",
			Baseline: "JetStream async publish of 1000 messages to the same stream on that node",
			Setup:    emitSetup(true, true, false),
		},
		{
			Name: "emit-async-lazy-msgid", Kind: Rate, Unit: "events/s",
			What:     "EmitAsync as in emit-async-lazy",
			Baseline: "JetStream async publish of 1000 messages, each with its own Nats-Msg-Id, to the same stream on that node",
			Setup:    emitSetup(true, true, true),
		},
		{
			Name: "replay", Kind: Rate, Unit: "events/s",
			What:     "Replay of 10000 stored events (ordered consumer, decoded events)",
			Baseline: "JetStream ordered consumer over the same 10000 messages, with their metadata",
			Setup:    replaySetup,
		},
	}
}

// counter counts deliveries and wakes a waiter.
type counter struct {
	n    atomic.Int64
	wake chan struct{}
}

func newCounter() *counter { return &counter{wake: make(chan struct{}, 1)} }

func (c *counter) add(n int64) {
	c.n.Add(n)
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// wait waits until the count reaches target, for up to 10 s.
func (c *counter) wait(ctx context.Context, target int64) error {
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	for c.n.Load() < target {
		select {
		case <-c.wake:
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return fmt.Errorf("delivered %d of %d", c.n.Load(), target)
		}
	}
	return nil
}

// twoConns opens two client connections to n.
func twoConns(n *bus.Node, cl *cleanups) (a, b *nats.Conn, err error) {
	if a, err = Connect(n, "bench-a"); err != nil {
		return nil, nil, err
	}
	cl.add(a.Close)
	if b, err = Connect(n, "bench-b"); err != nil {
		return nil, nil, err
	}
	cl.add(b.Close)
	return a, b, nil
}

// transientSetup compares EmitTransient with a core publish; the events
// are received by a peer subscription (peerSub) or by a plain NATS
// subscription like the baseline's.
func transientSetup(peerSub bool) func(context.Context, *Env) (Side, Side, func(), error) {
	return func(ctx context.Context, env *Env) (pb, raw Side, cleanup func(), err error) {
		var cl cleanups
		cleanup = cl.run
		n, err := env.Node(ctx)
		if err != nil {
			return pb, raw, cleanup, err
		}
		pubNC, subNC, err := twoConns(n, &cl)
		if err != nil {
			return pb, raw, cleanup, err
		}
		emitter, err := clientLog(pubNC, &cl)
		if err != nil {
			return pb, raw, cleanup, err
		}
		got := newCounter()
		if peerSub {
			watcher, err := clientLog(subNC, &cl)
			if err != nil {
				return pb, raw, cleanup, err
			}
			if _, err := watcher.Subscribe("bench.live", func(context.Context, eventlog.Event) error {
				got.add(1)
				return nil
			}); err != nil {
				return pb, raw, cleanup, err
			}
		} else {
			sub, err := subNC.Subscribe(eventlog.TransientSubject("", emitter.Peer().ID(), "bench.live"), func(*nats.Msg) { got.add(1) })
			if err != nil {
				return pb, raw, cleanup, err
			}
			cl.add(func() { _ = sub.Unsubscribe() })
			if err := subNC.Flush(); err != nil {
				return pb, raw, cleanup, err
			}
		}
		raw, err = rawLive(subNC, pubNC, &cl)
		return liveEmit(emitter, got), raw, cleanup, err
	}
}

// liveEmit emits batches of transient events and waits until got
// counted them.
func liveEmit(emitter *eventlog.Log, got *counter) Side {
	var pb Side
	pb.Op = func(ctx context.Context) (int, error) {
		target := got.n.Load() + liveBatch
		for range liveBatch {
			if _, err := emitter.EmitTransient(ctx, "bench.live", num{12345}); err != nil {
				return 0, err
			}
		}
		return liveBatch, got.wait(ctx, target)
	}
	return pb
}

// rawLive is the baseline of the transient cases: core publishes on
// pubNC to a callback subscription on subNC.
func rawLive(subNC, pubNC *nats.Conn, cl *cleanups) (raw Side, err error) {
	const subject = "bench.tevt._." + fakeID + ".bench.live"
	rawGot := newCounter()
	sub, err := subNC.Subscribe(subject, func(*nats.Msg) { rawGot.add(1) })
	if err != nil {
		return raw, err
	}
	cl.add(func() { _ = sub.Unsubscribe() })
	if err := subNC.Flush(); err != nil {
		return raw, err
	}
	raw.Op = func(ctx context.Context) (int, error) {
		target := rawGot.n.Load() + liveBatch
		for range liveBatch {
			if err := pubNC.Publish(subject, rawEvent); err != nil {
				return 0, err
			}
		}
		return liveBatch, rawGot.wait(ctx, target)
	}
	return raw, nil
}

// clientLog starts a client peer on nc and its event log, closed by cl.
func clientLog(nc *nats.Conn, cl *cleanups) (*eventlog.Log, error) {
	p, err := peer.New(nc, peer.AsClient())
	if err != nil {
		return nil, err
	}
	cl.closer(p)
	return eventlog.New(p)
}

// logPeer starts a client peer on its own connection to the shared
// node, with its event log, and makes sure the log exists; it also
// returns a raw JetStream context on another connection.
func logPeer(ctx context.Context, env *Env, cl *cleanups) (*eventlog.Log, jetstream.JetStream, error) {
	return logPeerOn(ctx, env.Node, cl)
}

// logPeerOn is logPeer on the node that node returns.
func logPeerOn(ctx context.Context, node func(context.Context) (*bus.Node, error), cl *cleanups) (*eventlog.Log, jetstream.JetStream, error) {
	n, err := node(ctx)
	if err != nil {
		return nil, nil, err
	}
	pnc, rnc, err := twoConns(n, cl)
	if err != nil {
		return nil, nil, err
	}
	p, err := clientLog(pnc, cl)
	if err != nil {
		return nil, nil, err
	}
	if _, err := p.Info(ctx); err != nil { // creates the log
		return nil, nil, err
	}
	js, err := jetstream.New(rnc)
	if err != nil {
		return nil, nil, err
	}
	cl.add(js.CleanupPublisher)
	return p, js, nil
}

// emitSetup measures Emit (EmitAsync with async) on the shared node, or
// with lazy on the node that syncs every 2 minutes. With msgID the
// baseline's messages carry a Nats-Msg-Id each, as peerbus events do.
func emitSetup(async, lazy, msgID bool) func(ctx context.Context, env *Env) (Side, Side, func(), error) {
	return func(ctx context.Context, env *Env) (pb, raw Side, cleanup func(), err error) {
		var cl cleanups
		cleanup = cl.run
		node := env.Node
		if lazy {
			node = env.LazyNode
		}
		p, js, err := logPeerOn(ctx, node, &cl)
		if err != nil {
			return pb, raw, cleanup, err
		}
		// A persisted event subject as long as the peer's.
		const subject = "peerbus.evt._." + fakeID + ".bench.rawemit"
		if !async {
			pb.Op = func(ctx context.Context) (int, error) {
				_, err := p.Emit(ctx, "bench.emit", num{12345})
				return 1, err
			}
			raw.Op = func(ctx context.Context) (int, error) {
				_, err := js.Publish(ctx, subject, rawEvent)
				return 1, err
			}
			return pb, raw, cleanup, nil
		}
		fs := make([]*eventlog.EmitFuture, 0, asyncBatch)
		pb.Op = func(ctx context.Context) (int, error) {
			fs = fs[:0]
			for range asyncBatch {
				f, err := p.EmitAsync(ctx, "bench.emit", num{12345})
				if err != nil {
					return 0, err
				}
				fs = append(fs, f)
			}
			for _, f := range fs {
				if _, err := f.Wait(ctx); err != nil {
					return 0, err
				}
			}
			return asyncBatch, nil
		}
		ids := newMsgIDs()
		raw.Op = func(ctx context.Context) (int, error) {
			var last jetstream.PubAckFuture
			for range asyncBatch {
				var f jetstream.PubAckFuture
				var err error
				if msgID {
					f, err = js.PublishAsync(subject, rawEvent, jetstream.WithMsgID(ids.next()))
				} else {
					f, err = js.PublishAsync(subject, rawEvent)
				}
				if err != nil {
					return 0, err
				}
				last = f
			}
			select {
			case <-js.PublishAsyncComplete():
			case <-ctx.Done():
				return 0, ctx.Err()
			}
			select {
			case err := <-last.Err():
				return 0, err
			default:
			}
			return asyncBatch, nil
		}
		return pb, raw, cleanup, nil
	}
}

// msgIDs makes message ids as long as event ids (36 bytes), unique in
// the process: a random prefix and a counter, the cheapest way to give
// every message an id of its own.
type msgIDs struct {
	buf [36]byte
	n   uint64
}

func newMsgIDs() *msgIDs {
	m := &msgIDs{}
	copy(m.buf[:], newPrefix())
	return m
}

// newPrefix returns 20 random hex digits and a dash.
func newPrefix() string {
	return fmt.Sprintf("%016x%04x-", rand.Uint64(), rand.Uint32()&0xffff)
}

// next returns the next id: the prefix and 15 decimal digits of the
// counter.
func (m *msgIDs) next() string {
	m.n++
	v := m.n
	for i := len(m.buf) - 1; i >= 21; i-- {
		m.buf[i] = byte('0' + v%10)
		v /= 10
	}
	return string(m.buf[:])
}

func replaySetup(ctx context.Context, env *Env) (pb, raw Side, cleanup func(), err error) {
	var cl cleanups
	cleanup = cl.run
	p, js, err := logPeer(ctx, env, &cl)
	if err != nil {
		return pb, raw, cleanup, err
	}
	// A name of its own per setup, so that a second run on the same
	// node replays only its own events.
	env.mu.Lock()
	env.seq++
	name := fmt.Sprintf("bench.replay%d", env.seq)
	env.mu.Unlock()
	fs := make([]*eventlog.EmitFuture, 0, replayEvents)
	for range replayEvents {
		f, err := p.EmitAsync(ctx, name, num{12345})
		if err != nil {
			return pb, raw, cleanup, err
		}
		fs = append(fs, f)
	}
	for _, f := range fs {
		if _, err := f.Wait(ctx); err != nil {
			return pb, raw, cleanup, err
		}
	}
	pb.Op = func(ctx context.Context) (int, error) {
		n := 0
		for e, err := range p.Replay(ctx, name) {
			if err != nil {
				return n, err
			}
			if len(e.Data) == 0 {
				return n, fmt.Errorf("empty event")
			}
			n++
		}
		if n != replayEvents {
			return n, fmt.Errorf("replayed %d of %d events", n, replayEvents)
		}
		return n, nil
	}
	raw.Op = func(ctx context.Context) (int, error) {
		cons, err := js.OrderedConsumer(ctx, eventlog.Stream, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{"peerbus.evt.*.*." + name}})
		if err != nil {
			return 0, err
		}
		defer func() {
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = js.DeleteConsumer(dctx, eventlog.Stream, cons.CachedInfo().Name)
			cancel()
		}()
		it, err := cons.Messages(jetstream.PullMaxMessages(1000))
		if err != nil {
			return 0, err
		}
		defer it.Stop()
		for i := range replayEvents {
			m, err := it.Next(jetstream.NextContext(ctx))
			if err != nil {
				return i, err
			}
			if len(m.Data()) == 0 {
				return i, fmt.Errorf("empty message")
			}
			if _, err := m.Metadata(); err != nil {
				return i, err
			}
		}
		return replayEvents, nil
	}
	return pb, raw, cleanup, nil
}
