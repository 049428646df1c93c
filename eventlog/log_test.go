package eventlog_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/peer"
)

type num struct{ N int }

// emitN emits count events name with payloads from..from+count-1.
func emitN(t *testing.T, p tpeer, name string, from, count int) []eventlog.Ack {
	t.Helper()
	var acks []eventlog.Ack
	for i := from; i < from+count; i++ {
		ack, err := p.Emit(context.Background(), name, num{i})
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, ack)
	}
	return acks
}

// replayAll collects a replay.
func replayAll(t *testing.T, p tpeer, pattern string, opts ...eventlog.ReplayOption) []eventlog.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []eventlog.Event
	for e, err := range p.Replay(ctx, pattern, opts...) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func nums(t *testing.T, evs []eventlog.Event) []int {
	t.Helper()
	var out []int
	for _, e := range evs {
		var v num
		if err := e.Decode(&v); err != nil {
			t.Fatalf("decode %+v: %v", e, err)
		}
		out = append(out, v.N)
	}
	return out
}

func seqRange(from, to int) []int {
	var out []int
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// collector records the events a handler gets.
type collector struct {
	mu  sync.Mutex
	evs []eventlog.Event
}

func (c *collector) handle(_ context.Context, e eventlog.Event) error {
	c.mu.Lock()
	c.evs = append(c.evs, e)
	c.mu.Unlock()
	return nil
}

func (c *collector) len() int { c.mu.Lock(); defer c.mu.Unlock(); return len(c.evs) }

func (c *collector) events() []eventlog.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.evs)
}

func TestLogReplayFromStartSeqAndTime(t *testing.T) {
	n := jsNode(t, t.TempDir(), "replay")
	p := newPeer(t, n, peer.WithGroup("shop"))
	ctx := context.Background()

	acks := emitN(t, p, "order.created", 0, 5)
	mid := time.Now()
	if _, err := p.Emit(ctx, "user.joined", num{-1}); err != nil {
		t.Fatal(err)
	}
	acks = append(acks, emitN(t, p, "order.created", 5, 5)...)
	for i, a := range acks {
		if a.ID == "" || a.Time.IsZero() || a.Duplicate || (i > 0 && a.Seq <= acks[i-1].Seq) {
			t.Fatalf("ack %d: %+v", i, a)
		}
	}
	if acks[0].Seq != 1 || acks[9].Seq != 11 {
		t.Fatalf("seqs %d..%d, want 1..11", acks[0].Seq, acks[9].Seq)
	}

	// From the start: every order event, in order, as emitted.
	all := replayAll(t, p, "order.>")
	if got := nums(t, all); !slices.Equal(got, seqRange(0, 9)) {
		t.Fatalf("replay from start: %v", got)
	}
	for i, e := range all {
		if e.ID != acks[i].ID || e.Seq != acks[i].Seq || !e.Time.Equal(acks[i].Time) ||
			e.Peer != p.ID() || e.Group != "shop" || e.Name != "order.created" || e.Transient {
			t.Fatalf("event %d: %+v, ack %+v", i, e, acks[i])
		}
	}
	// From a sequence (included).
	if got := nums(t, replayAll(t, p, "order.created", eventlog.FromSeq(acks[6].Seq))); !slices.Equal(got, seqRange(6, 9)) {
		t.Fatalf("replay from seq %d: %v", acks[6].Seq, got)
	}
	// From a time: events stored at or after it.
	if got := nums(t, replayAll(t, p, "order.*", eventlog.FromTime(mid))); !slices.Equal(got, seqRange(5, 9)) {
		t.Fatalf("replay from time: %v", got)
	}
	if got := nums(t, replayAll(t, p, ">", eventlog.FromTime(mid))); !slices.Equal(got, append([]int{-1}, seqRange(5, 9)...)) {
		t.Fatalf("replay all names from time: %v", got)
	}
	// Nothing matches: the replay ends at once.
	if got := replayAll(t, p, "nothing.>"); len(got) != 0 {
		t.Fatalf("empty replay: %v", got)
	}
	// Breaking out of a replay is fine.
	for e, err := range p.Replay(ctx, "order.>") {
		if err != nil || e.Seq != 1 {
			t.Fatal(e, err)
		}
		break
	}
	if c, err := p.Count(ctx, "order.>"); err != nil || c != 10 {
		t.Fatalf("count: %d %v", c, err)
	}
	if c, err := p.Count(ctx, ">", eventlog.FromSeq(acks[9].Seq)); err != nil || c != 1 {
		t.Fatalf("count from last: %d %v", c, err)
	}
	info, err := p.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Stream != eventlog.Stream || info.Events != 11 || info.FirstSeq != 1 || info.LastSeq != 11 ||
		info.Bytes == 0 || info.Storage != "file" || info.Discard != "old" || info.Replicas != 1 ||
		info.MaxAge != eventlog.DefaultMaxAge || info.MaxBytes != eventlog.DefaultMaxBytes || info.MaxEvents != -1 ||
		info.Duplicates != eventlog.DefaultDuplicates || info.LastTime.Before(info.FirstTime) ||
		!slices.Equal(info.Subjects, []string{eventlog.Subjects}) {
		t.Fatalf("log info: %+v", info)
	}
	// Replays delete their consumers when they end.
	if info.Consumers != 0 {
		t.Fatalf("%d consumers left after replays", info.Consumers)
	}

	// A subscription from the start reads the log, then follows it.
	var got collector
	sub, err := p.Subscribe("order.>", got.handle, eventlog.FromStart())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "catch up", func() bool { return got.len() == 10 })
	last, err := p.Emit(ctx, "order.created", num{10})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "follow", func() bool { return got.len() == 11 })
	if ns := nums(t, got.events()); !slices.Equal(ns, seqRange(0, 10)) || sub.Seq() != last.Seq {
		t.Fatalf("subscription from start: %v, seq %d", ns, sub.Seq())
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	// Durable-only options are refused elsewhere: they are neither
	// subscription nor replay options, so a misuse does not compile.
	var durableOnly any = eventlog.MaxDeliver(2)
	if _, ok := durableOnly.(eventlog.SubscribeOption); ok {
		t.Fatalf("MaxDeliver without Durable: accepted by Subscribe")
	}
	if _, ok := durableOnly.(eventlog.ReplayOption); ok {
		t.Fatalf("durable replay: MaxDeliver accepted by Replay")
	}
	if _, err := p.SubscribeDurable("d", "x", got.handle, eventlog.MaxDeliver(0)); !errors.Is(err, eventlog.ErrInvalidOption) {
		t.Fatalf("MaxDeliver(0): %v", err)
	}
}

func TestLogDedupeOfRetriedEmit(t *testing.T) {
	n := jsNode(t, t.TempDir(), "dedupe")
	p := newPeer(t, n)
	ctx := context.Background()
	first, err := p.Emit(ctx, "payment.captured", num{1}, eventlog.WithEventID("pay-42"))
	if err != nil || first.ID != "pay-42" || first.Duplicate {
		t.Fatalf("first: %+v %v", first, err)
	}
	before, err := p.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The retry (same id) gives the same sequence and time, stores nothing.
	again, err := p.Emit(ctx, "payment.captured", num{1}, eventlog.WithEventID("pay-42"))
	if err != nil || again.Seq != first.Seq || !again.Duplicate || !again.Time.Equal(first.Time) || again.ID != first.ID {
		t.Fatalf("retry: %+v %v (first %+v)", again, err, first)
	}
	// So does an async retry.
	f, err := p.EmitAsync(ctx, "payment.captured", num{1}, eventlog.WithEventID("pay-42"))
	if err != nil {
		t.Fatal(err)
	}
	if a, err := f.Wait(ctx); err != nil || a.Seq != first.Seq || !a.Duplicate {
		t.Fatalf("async retry: %+v %v", a, err)
	}
	after, err := p.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if before.Events != 1 || after.Events != 1 || after.LastSeq != first.Seq {
		t.Fatalf("events before %d after %d (last seq %d)", before.Events, after.Events, after.LastSeq)
	}
	// A new id is a new event.
	other, err := p.Emit(ctx, "payment.captured", num{1})
	if err != nil || other.Seq != first.Seq+1 || other.ID == first.ID {
		t.Fatalf("new id: %+v %v", other, err)
	}
	if _, err := p.Emit(ctx, "x", 1, eventlog.WithEventID("has space")); !errors.Is(err, eventlog.ErrInvalidOption) {
		t.Fatalf("bad id: %v", err)
	}
}

func TestLogTransientEventsAreNotStored(t *testing.T) {
	n := jsNode(t, t.TempDir(), "transient")
	p := newPeer(t, n)
	ctx := context.Background()
	var live collector
	if _, err := p.Subscribe("progress.>", live.handle); err != nil {
		t.Fatal(err)
	}
	ta, err := p.EmitTransient(ctx, "progress.step", num{1})
	if err != nil || ta.ID == "" || ta.Seq != 0 {
		t.Fatalf("transient: %+v %v", ta, err)
	}
	pa, err := p.Emit(ctx, "progress.done", num{2})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "live events", func() bool { return live.len() == 2 })
	evs := live.events()
	if evs[0].ID != ta.ID || !evs[0].Transient || evs[0].Seq != 0 || evs[0].Name != "progress.step" ||
		evs[1].ID != pa.ID || evs[1].Transient {
		t.Fatalf("live: %+v", evs)
	}
	// Only the persisted one is in the log.
	info, err := p.Info(ctx)
	if err != nil || info.Events != 1 {
		t.Fatalf("log: %+v %v", info, err)
	}
	if got := replayAll(t, p, "progress.>"); len(got) != 1 || got[0].ID != pa.ID {
		t.Fatalf("replay: %+v", got)
	}
	if c, err := p.Count(ctx, "progress.step"); err != nil || c != 0 {
		t.Fatalf("count transient: %d %v", c, err)
	}
}

func TestLogWithoutJetStream(t *testing.T) {
	n := single(t) // no JetStream
	p := newPeer(t, n)
	ctx := context.Background()
	start := time.Now()
	_, err := p.Emit(ctx, "order.created", num{1})
	if !errors.Is(err, eventlog.ErrNoLog) || !errors.Is(err, eventlog.ErrNoJetStream) {
		t.Fatalf("emit: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("emit took %v to fail; no JetStream is not a transient condition", d)
	}
	if _, err := p.EmitAsync(ctx, "order.created", num{1}); !errors.Is(err, eventlog.ErrNoLog) {
		t.Fatalf("emit async: %v", err)
	}
	if _, err := p.Info(ctx); !errors.Is(err, eventlog.ErrNoLog) {
		t.Fatalf("log info: %v", err)
	}
	if _, err := p.SubscribeDurable("d", "order.>", func(context.Context, eventlog.Event) error { return nil }); !errors.Is(err, eventlog.ErrNoLog) {
		t.Fatalf("durable: %v", err)
	}
	for _, err := range p.Replay(ctx, ">") {
		if !errors.Is(err, eventlog.ErrNoLog) {
			t.Fatalf("replay: %v", err)
		}
	}
	// Transient events and live subscriptions work without JetStream.
	var live collector
	if _, err := p.Subscribe("order.>", live.handle); err != nil {
		t.Fatal(err)
	}
	if _, err := p.EmitTransient(ctx, "order.created", num{1}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "transient event", func() bool { return live.len() == 1 })
}

func TestLogServerSideFilters(t *testing.T) {
	n := jsNode(t, t.TempDir(), "filters")
	a := newPeer(t, n, peer.WithGroup("g1"))
	b := newPeer(t, n, peer.WithGroup("g2"))
	c := newPeer(t, n, peer.WithGroup("g2"))
	emitN(t, a, "order.created", 0, 3)
	emitN(t, a, "order.shipped", 0, 1)
	emitN(t, b, "order.created", 0, 2)
	emitN(t, b, "user.joined", 0, 2)
	emitN(t, c, "order.created", 0, 1)
	subj := func(g, id, rest string) string { return "peerbus.evt." + g + "." + id + "." + rest }
	cases := []struct {
		durable, pattern string
		opts             []eventlog.Filter
		want             uint64
		filters          []string
	}{
		{"by-name", "order.created", nil, 6, []string{subj("*", "*", "order.created")}},
		{"by-group", "order.*", []eventlog.Filter{eventlog.FromGroups("g2")}, 3, []string{subj("g2", "*", "order.*")}},
		{"by-peer", "order.>", []eventlog.Filter{eventlog.FromPeers(a.ID())}, 4, []string{subj("*", a.ID(), "order.>")}},
		{"two-peers", "*.*", []eventlog.Filter{eventlog.FromPeers(b.ID(), c.ID())}, 5,
			[]string{subj("*", b.ID(), "*.*"), subj("*", c.ID(), "*.*")}},
	}
	ctx := context.Background()
	sub := newPeer(t, n)
	for _, tc := range cases {
		t.Run(tc.durable, func(t *testing.T) {
			var ropts []eventlog.ReplayOption
			for _, o := range tc.opts {
				ropts = append(ropts, o)
			}
			if got, err := sub.Count(ctx, tc.pattern, ropts...); err != nil || got != tc.want {
				t.Fatalf("count: %d %v, want %d", got, err, tc.want)
			}
			// The handler holds the first event: the server counts what
			// is left for this consumer, by its filters.
			release := make(chan struct{})
			var got collector
			h := func(ctx context.Context, e eventlog.Event) error {
				<-release
				return got.handle(ctx, e)
			}
			dopts := []eventlog.DurableOption{eventlog.FromStart()}
			for _, o := range tc.opts {
				dopts = append(dopts, o)
			}
			s, err := sub.SubscribeDurable(tc.durable, tc.pattern, h, dopts...)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var di eventlog.DurableInfo
			waitFor(t, "first delivery", func() bool {
				di, err = sub.DurableInfo(ctx, tc.durable)
				return err == nil && di.AckPending == 1
			})
			if di.Pending+uint64(di.AckPending) != tc.want || !slices.Equal(di.Filters, tc.filters) || di.Pattern != tc.pattern {
				t.Fatalf("durable info: %+v, want %d matching with filters %v", di, tc.want, tc.filters)
			}
			close(release)
			waitFor(t, "all matching events", func() bool { return uint64(got.len()) == tc.want })
			for _, e := range got.events() {
				if !matches(tc.pattern, e.Name) {
					t.Fatalf("%s got %+v", tc.durable, e)
				}
			}
			waitFor(t, "acks", func() bool {
				di, err = sub.DurableInfo(ctx, tc.durable)
				return err == nil && di.Pending == 0 && di.AckPending == 0
			})
		})
	}
	info, err := sub.Info(ctx)
	if err != nil || len(info.Durables) != len(cases) {
		t.Fatalf("durables: %+v %v", info.Durables, err)
	}
	if err := sub.DeleteDurable(ctx, "by-name"); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.DurableInfo(ctx, "by-name"); !errors.Is(err, eventlog.ErrUnknownDurable) {
		t.Fatalf("deleted durable: %v", err)
	}
	if err := sub.DeleteDurable(ctx, "by-name"); !errors.Is(err, eventlog.ErrUnknownDurable) {
		t.Fatalf("delete twice: %v", err)
	}
}

// matches reports whether name matches a subscription pattern.
func matches(pattern, name string) bool {
	pt, nt := strings.Split(pattern, "."), strings.Split(name, ".")
	for i, p := range pt {
		if p == ">" {
			return len(nt) > i
		}
		if i >= len(nt) || (p != "*" && p != nt[i]) {
			return false
		}
	}
	return len(pt) == len(nt)
}

func TestLogDurableResumesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	n1 := jsNode(t, dir, "resume")
	pub := newPeer(t, n1)
	s1 := newPeer(t, n1)
	if _, err := s1.SubscribeDurable("billing", "job.>", func(context.Context, eventlog.Event) error { return nil }, eventlog.MustExist()); !errors.Is(err, eventlog.ErrUnknownDurable) {
		t.Fatalf("must exist: %v", err)
	}
	var first collector
	sub, err := s1.SubscribeDurable("billing", "job.>", first.handle, eventlog.FromStart())
	if err != nil || sub.Durable() != "billing" {
		t.Fatal(err)
	}
	acks := emitN(t, pub, "job.done", 1, 5)
	waitFor(t, "first five acked", func() bool {
		di, err := s1.DurableInfo(ctx, "billing")
		return err == nil && di.AckFloor == acks[4].Seq && di.AckPending == 0
	})
	if got := nums(t, first.events()); !slices.Equal(got, seqRange(1, 5)) {
		t.Fatalf("before restart: %v", got)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	// Events emitted while the subscriber is away.
	acks = append(acks, emitN(t, pub, "job.done", 6, 3)...)
	pub.Close()
	if err := n1.Close(); err != nil {
		t.Fatal(err)
	}

	// A new node on the same data directory, a new subscriber process.
	n2 := jsNode(t, dir, "resume")
	pub2 := newPeer(t, n2)
	acks = append(acks, emitN(t, pub2, "job.done", 9, 2)...)
	s2 := newPeer(t, n2)
	var second collector
	// Resuming keeps the position; delivery settings become the new ones.
	if _, err := s2.SubscribeDurable("billing", "job.>", second.handle, eventlog.MustExist(), eventlog.MaxDeliver(7)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "resumed events", func() bool { return second.len() >= 5 })
	waitFor(t, "all acked", func() bool {
		di, err := s2.DurableInfo(ctx, "billing")
		return err == nil && di.AckFloor == acks[9].Seq && di.AckPending == 0 && di.Pending == 0 && di.MaxDeliver == 7
	})
	evs := second.events()
	if got := nums(t, evs); !slices.Equal(got, seqRange(6, 10)) {
		t.Fatalf("after restart got %v, want only the unacknowledged 6..10", got)
	}
	for i, e := range evs {
		if e.Seq != acks[5+i].Seq || e.Deliveries != 1 {
			t.Fatalf("event %d: %+v", i, e)
		}
	}
}

func TestLogRedeliveryThenDeadLetter(t *testing.T) {
	n := jsNode(t, t.TempDir(), "deadletter")
	pub := newPeer(t, n)
	var reported atomic.Int64
	worker := newPeer(t, n, peer.WithErrorHandler(func(error) { reported.Add(1) }))
	ctx := context.Background()

	var dead collector
	if _, err := pub.SubscribeDurable("dead-watch", eventlog.DeadLetterPrefix+">", dead.handle); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []string
	var badTries atomic.Int32
	h := func(_ context.Context, e eventlog.Event) error {
		mu.Lock()
		order = append(order, fmt.Sprintf("%s#%d", e.Name, e.Deliveries))
		mu.Unlock()
		if e.Name == "job.bad" {
			if badTries.Add(1) == 2 {
				panic("bad job") // a panic is a failure too
			}
			return errors.New("boom")
		}
		return nil
	}
	sub, err := worker.SubscribeDurable("worker", "job.>", h, eventlog.FromStart(),
		eventlog.MaxDeliver(3), eventlog.RetryBackoff(5*time.Millisecond, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ok1, _ := pub.Emit(ctx, "job.ok", num{1})
	bad, err := pub.Emit(ctx, "job.bad", num{2})
	if err != nil {
		t.Fatal(err)
	}
	ok2, _ := pub.Emit(ctx, "job.ok", num{3})
	waitFor(t, "dead letter", func() bool { return dead.len() == 1 })
	waitFor(t, "worker done", func() bool { return sub.Seq() == ok2.Seq })
	mu.Lock()
	got := slices.Clone(order)
	mu.Unlock()
	want := []string{"job.ok#1", "job.bad#1", "job.bad#2", "job.bad#3", "job.ok#1"}
	if !slices.Equal(got, want) {
		t.Fatalf("deliveries %v, want %v", got, want)
	}
	de := dead.events()[0]
	var dl eventlog.DeadLetter
	if err := de.Decode(&dl); err != nil {
		t.Fatal(err)
	}
	if de.Name != eventlog.DeadLetterPrefix+"job.bad" || de.Peer != worker.ID() ||
		dl.EventID != bad.ID || dl.Seq != bad.Seq || dl.Name != "job.bad" || dl.Peer != pub.ID() ||
		dl.Deliveries != 3 || dl.Error != "boom" || dl.Durable != "worker" || dl.Subscriber != worker.ID() ||
		!dl.Time.Equal(bad.Time) {
		t.Fatalf("dead letter %+v: %+v", de, dl)
	}
	if sub.Errors() != 3 || reported.Load() < 3 {
		t.Fatalf("errors %d reported %d", sub.Errors(), reported.Load())
	}
	di, err := worker.DurableInfo(ctx, "worker")
	if err != nil || di.AckFloor != ok2.Seq || di.AckPending != 0 || di.Pending != 0 || di.MaxDeliver != 3 {
		t.Fatalf("durable: %+v %v", di, err)
	}
	_ = ok1
	// The dead letter is in the log, for later inspection.
	if got := replayAll(t, pub, eventlog.DeadLetterPrefix+">"); len(got) != 1 || got[0].ID != de.ID {
		t.Fatalf("dead letters in the log: %+v", got)
	}
}

func TestLogAckedEventsSurviveAbruptStop(t *testing.T) {
	dir := t.TempDir()
	n1 := jsNode(t, dir, "crash")
	p := newPeer(t, n1)
	ctx := context.Background()
	const total = 300
	var acks []eventlog.Ack
	for i := 0; i < total/2; i++ {
		a, err := p.Emit(ctx, "ledger.entry", num{i})
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, a)
	}
	var fs []*eventlog.EmitFuture
	for i := total / 2; i < total; i++ {
		f, err := p.EmitAsync(ctx, "ledger.entry", num{i})
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	for _, f := range fs {
		a, err := f.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, a)
	}
	// Stop the server under the connection: no drain, no goodbye.
	n1.Server().Shutdown()
	n1.Close()
	p.Close()

	n2 := jsNode(t, dir, "crash")
	q := newPeer(t, n2)
	evs := replayAll(t, q, ">")
	if len(evs) != total {
		t.Fatalf("%d events after restart, want %d", len(evs), total)
	}
	seen := map[string]bool{}
	for i, e := range evs {
		if e.ID != acks[i].ID || e.Seq != acks[i].Seq || seen[e.ID] {
			t.Fatalf("event %d: %+v, ack %+v", i, e, acks[i])
		}
		seen[e.ID] = true
	}
	if got := nums(t, evs); !slices.Equal(got, seqRange(0, total-1)) {
		t.Fatalf("payloads out of order: %v", got)
	}
	// The log goes on after the restart.
	if a, err := q.Emit(ctx, "ledger.entry", num{total}); err != nil || a.Seq != acks[total-1].Seq+1 {
		t.Fatalf("emit after restart: %+v %v", a, err)
	}
}

func TestLogRecreatedAfterDelete(t *testing.T) {
	n := jsNode(t, t.TempDir(), "recreate")
	p := newPeer(t, n)
	ctx := context.Background()
	emitN(t, p, "a", 0, 2)
	js, err := n.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, eventlog.Stream); err != nil {
		t.Fatal(err)
	}
	// The peer still thinks the log exists: its emit finds nobody
	// storing it, creates the log again and retries.
	a, err := p.Emit(ctx, "a", num{3})
	if err != nil || a.Seq != 1 {
		t.Fatalf("emit after delete: %+v %v", a, err)
	}
}

func TestLogLimitsAndConfig(t *testing.T) {
	n := jsNode(t, t.TempDir(), "limits")
	ctx := context.Background()
	p := newPeerLog(t, n, []eventlog.Option{eventlog.WithConfig(eventlog.Config{MaxEvents: 3, DiscardNew: true, Memory: true, MaxAge: time.Minute})})
	emitN(t, p, "x", 0, 3)
	if _, err := p.Emit(ctx, "x", num{4}); !errors.Is(err, eventlog.ErrLogFull) {
		t.Fatalf("full log: %v", err)
	}
	info, err := p.Info(ctx)
	if err != nil || info.Storage != "memory" || info.Discard != "new" || info.MaxEvents != 3 ||
		info.MaxAge != time.Minute || info.Duplicates != time.Minute || info.Events != 3 {
		t.Fatalf("info: %+v %v", info, err)
	}
	// A peer with other settings uses the existing log as it is...
	q := newPeerLog(t, n, []eventlog.Option{eventlog.WithConfig(eventlog.Config{MaxEvents: 10})})
	if _, err := q.Emit(ctx, "x", num{5}); !errors.Is(err, eventlog.ErrLogFull) {
		t.Fatalf("other config: %v", err)
	}
	// ...unless it is told to update it.
	r := newPeerLog(t, n, []eventlog.Option{eventlog.WithConfig(eventlog.Config{MaxEvents: 10, DiscardNew: true, Memory: true, Update: true})})
	if _, err := r.Emit(ctx, "x", num{5}); err != nil {
		t.Fatal(err)
	}
	if info, err := r.Info(ctx); err != nil || info.MaxEvents != 10 || info.MaxAge != eventlog.DefaultMaxAge || info.Events != 4 {
		t.Fatalf("updated: %+v %v", info, err)
	}
	// An event too large for the bus is refused before it is sent.
	big := strings.Repeat("x", int(n.Conn().MaxPayload()))
	if _, err := r.Emit(ctx, "x", big); !errors.Is(err, peer.ErrPayloadTooLarge) {
		t.Fatalf("too large: %v", err)
	}
}

func TestLogAsyncEmitKeepsOrder(t *testing.T) {
	n := jsNode(t, t.TempDir(), "async")
	p := newPeer(t, n)
	ctx := context.Background()
	var fs []*eventlog.EmitFuture
	for i := range 500 {
		f, err := p.EmitAsync(ctx, "tick", num{i})
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	for i, f := range fs {
		a, err := f.Wait(ctx)
		if err != nil || a.Seq != uint64(i+1) || a.ID != f.ID() {
			t.Fatalf("future %d: %+v %v", i, a, err)
		}
		if b, err := f.Wait(ctx); err != nil || b != a {
			t.Fatalf("second wait: %+v %v", b, err)
		}
	}
	if got := nums(t, replayAll(t, p, "tick")); !slices.Equal(got, seqRange(0, 499)) {
		t.Fatalf("order: %v", got)
	}
}

func TestLogOnClusteredNodes(t *testing.T) {
	na, nb := cluster(t)
	a := newPeer(t, na, peer.WithGroup("g1"))
	b := newPeer(t, nb, peer.WithGroup("g2"))
	ctx := context.Background()
	// Both peers emit into the one log, whichever node they are on.
	var acks []eventlog.Ack
	for i := range 10 {
		p := a
		if i%2 == 1 {
			p = b
		}
		ack, err := p.Emit(ctx, "order.created", num{i})
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, ack)
	}
	for i, a := range acks {
		if a.Seq != uint64(i+1) {
			t.Fatalf("emit %d stored at seq %d", i, a.Seq)
		}
	}
	evs := replayAll(t, b, "order.created", eventlog.FromGroups("g1"))
	if got := nums(t, evs); !slices.Equal(got, []int{0, 2, 4, 6, 8}) {
		t.Fatalf("replay on the other node: %v", got)
	}
	var got collector
	if _, err := a.SubscribeDurable("cl", "order.>", got.handle, eventlog.FromStart()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "durable across nodes", func() bool { return got.len() == 10 })
	if ns := nums(t, got.events()); !slices.Equal(ns, seqRange(0, 9)) {
		t.Fatalf("durable: %v", ns)
	}
}

func TestLogEmitThroughLeaderChange(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	nodes, err := bus.StartLocalCluster(ctx, 3, t.TempDir(), "lc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.Close()
		}
	})
	cfg := []eventlog.Option{eventlog.WithConfig(eventlog.Config{Replicas: 3})}
	a := newPeerLog(t, nodes[0], cfg)
	b := newPeerLog(t, nodes[1], cfg)
	before, err := a.Info(ctx)
	if err != nil || before.Replicas != 3 || before.Leader == "" {
		t.Fatalf("log: %+v %v", before, err)
	}
	const perPeer = 150
	acks := make([][]eventlog.Ack, 2)
	errs := make(chan error, 2)
	stepdown := make(chan struct{})
	for i, p := range []tpeer{a, b} {
		go func() {
			for j := range perPeer {
				if i == 0 && j == perPeer/3 {
					close(stepdown)
				}
				ack, err := p.Emit(ctx, "tick", num{j})
				if err != nil {
					errs <- fmt.Errorf("peer %d emit %d: %w", i, j, err)
					return
				}
				acks[i] = append(acks[i], ack)
			}
			errs <- nil
		}()
	}
	<-stepdown
	// Move the stream's leadership while both peers emit.
	if _, err := nodes[2].Conn().Request("$JS.API.STREAM.LEADER.STEPDOWN."+eventlog.Stream, nil, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	after, err := a.Info(ctx)
	if err != nil || after.Events != 2*perPeer || after.Leader == before.Leader {
		t.Fatalf("log after: %+v %v (leader before %s)", after, err, before.Leader)
	}
	// A peer that updates the log keeps its copies unless told otherwise.
	c := newPeerLog(t, nodes[2], []eventlog.Option{eventlog.WithConfig(eventlog.Config{Update: true, MaxAge: time.Hour})})
	if info, err := c.Info(ctx); err != nil || info.Replicas != 3 || info.MaxAge != time.Hour {
		t.Fatalf("updated log: %+v %v", info, err)
	}
	// Every acknowledged event is there once, each peer's in its order.
	evs := replayAll(t, b, "tick")
	byID := map[string]eventlog.Event{}
	for _, e := range evs {
		if _, dup := byID[e.ID]; dup {
			t.Fatalf("event %s stored twice", e.ID)
		}
		byID[e.ID] = e
	}
	for i, p := range []tpeer{a, b} {
		var last uint64
		for j, ack := range acks[i] {
			e, ok := byID[ack.ID]
			if !ok || e.Seq != ack.Seq || e.Peer != p.ID() || e.Seq <= last {
				t.Fatalf("peer %d event %d: %+v (ack %+v)", i, j, e, ack)
			}
			last = e.Seq
		}
	}
}

func TestLogEmitAcrossLeaderNodeShutdown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	nodes, err := bus.StartLocalCluster(ctx, 3, t.TempDir(), "ll")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.Close()
		}
	})
	cfg := []eventlog.Option{eventlog.WithConfig(eventlog.Config{Replicas: 3})}
	probe := newPeerLog(t, nodes[0], cfg)
	info, err := probe.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var victim *bus.Node
	var others []*bus.Node
	for _, n := range nodes {
		if n.Name() == info.Leader {
			victim = n
		} else {
			others = append(others, n)
		}
	}
	if victim == nil {
		t.Fatalf("leader %q is none of the nodes", info.Leader)
	}
	var retries atomic.Int64
	lg := slog.New(countHandler{&retries})
	p := newPeerLog(t, others[0], cfg, peer.WithLogger(lg), peer.WithCallTimeout(30*time.Second))
	acks := emitN(t, p, "tick", 0, 20)
	// The stream leader's node stops (no drain): the two others elect a
	// new leader; emits meanwhile are retried until it answers.
	victim.Server().Shutdown()
	acks = append(acks, emitN(t, p, "tick", 20, 20)...)
	t.Logf("%d emit retries while the leader changed", retries.Load())
	q := newPeer(t, others[1])
	evs := replayAll(t, q, "tick")
	if got := nums(t, evs); !slices.Equal(got, seqRange(0, 39)) {
		t.Fatalf("events after leader loss: %v", got)
	}
	for i, e := range evs {
		if e.ID != acks[i].ID || e.Seq != acks[i].Seq {
			t.Fatalf("event %d: %+v, ack %+v", i, e, acks[i])
		}
	}
}

// countHandler counts the event log's retry log lines.
type countHandler struct{ n *atomic.Int64 }

func (h countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "retrying") {
		h.n.Add(1)
	}
	return nil
}
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countHandler) WithGroup(string) slog.Handler      { return h }

func TestLogReplayEndsWhenEventsAreDeleted(t *testing.T) {
	n := jsNode(t, t.TempDir(), "purged")
	p := newPeer(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const total = 3000
	var fs []*eventlog.EmitFuture
	for i := range total {
		f, err := p.EmitAsync(ctx, "bulk", num{i})
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	for _, f := range fs {
		if _, err := f.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	js, err := n.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, eventlog.Stream)
	if err != nil {
		t.Fatal(err)
	}
	// Retention removes what the replay has not received yet: it ends
	// with what it got, rather than waiting for events that are gone.
	got := 0
	for e, err := range p.Replay(ctx, "bulk") {
		if err != nil {
			t.Fatal(err)
		}
		if got++; got == 1 {
			if err := s.Purge(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if e.Seq != uint64(got) {
			t.Fatalf("event %d has seq %d", got, e.Seq)
		}
	}
	if got == 0 || got >= total || ctx.Err() != nil {
		t.Fatalf("replay of a purged log gave %d events (ctx %v)", got, ctx.Err())
	}
	t.Logf("replay ended after %d buffered events", got)
}
