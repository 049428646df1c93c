package eventlog_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/peer"
)

func TestEventsFilteredByGroupAndPeer(t *testing.T) {
	na, nb := cluster(t)
	a := newPeer(t, na, peer.WithGroup("g1"))
	b := newPeer(t, nb, peer.WithGroup("g2"))
	c := newPeer(t, nb, peer.WithGroup("g2"))
	type got struct {
		mu  sync.Mutex
		evs []eventlog.Event
	}
	collect := func(g *got) eventlog.Handler {
		return func(_ context.Context, e eventlog.Event) error {
			g.mu.Lock()
			g.evs = append(g.evs, e)
			g.mu.Unlock()
			return nil
		}
	}
	var all, fromG2, fromB got
	if _, err := a.Subscribe("order.>", collect(&all)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Subscribe("order.*", collect(&fromG2), eventlog.FromGroups("g2")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Subscribe("order.created", collect(&fromB), eventlog.FromPeers(b.ID())); err != nil {
		t.Fatal(err)
	}
	// Handler errors are reported, not dropped.
	var reported sync.WaitGroup
	reported.Add(1)
	var once sync.Once
	d := newPeer(t, na, peer.WithErrorHandler(func(err error) {
		if strings.Contains(err.Error(), "refused") {
			once.Do(reported.Done)
		}
	}))
	failing, err := d.Subscribe("order.>", func(context.Context, eventlog.Event) error { return errors.New("refused") })
	if err != nil {
		t.Fatal(err)
	}
	// Wait until interest has crossed the route.
	waitPeers(t, b, "info", a.ID(), d.ID())
	ctx := context.Background()
	ack, err := b.Emit(ctx, "order.created", map[string]int{"n": 1})
	if err != nil || ack.ID == "" {
		t.Fatal(err)
	}
	c.Emit(ctx, "order.created", map[string]int{"n": 2})
	a.Emit(ctx, "order.shipped.late", map[string]int{"n": 3})
	c.Emit(ctx, "other", 4)
	waitFor(t, "events", func() bool {
		all.mu.Lock()
		defer all.mu.Unlock()
		return len(all.evs) == 3
	})
	waitFor(t, "g2 events", func() bool { fromG2.mu.Lock(); defer fromG2.mu.Unlock(); return len(fromG2.evs) == 2 })
	waitFor(t, "b events", func() bool { fromB.mu.Lock(); defer fromB.mu.Unlock(); return len(fromB.evs) == 1 })
	fromB.mu.Lock()
	e := fromB.evs[0]
	fromB.mu.Unlock()
	var payload map[string]int
	if e.Peer != b.ID() || e.Group != "g2" || e.Name != "order.created" || e.ID != ack.ID || e.Decode(&payload) != nil || payload["n"] != 1 || e.Time.IsZero() {
		t.Fatalf("event: %+v", e)
	}
	for _, ev := range fromG2.evs {
		if ev.Group != "g2" {
			t.Fatalf("group filter leaked %+v", ev)
		}
	}
	reported.Wait()
	waitFor(t, "error count", func() bool { return failing.Errors() >= 3 })
	if _, err := a.Emit(ctx, "bad name", 1); !errors.Is(err, eventlog.ErrInvalidName) {
		t.Fatalf("bad name: %v", err)
	}
	if _, err := a.Subscribe("a.>.b", collect(&all)); !errors.Is(err, eventlog.ErrInvalidName) {
		t.Fatalf("bad pattern: %v", err)
	}
}

// TestCloseContract checks the close contract of a Log and its
// subscriptions: Close is idempotent, a second call and every later use
// fail with an error wrapping net.ErrClosed; closing the peer closes its
// logs.
func TestCloseContract(t *testing.T) {
	n := jsNode(t, t.TempDir(), "close")
	ctx := context.Background()
	p, err := peer.New(n.Conn(), peer.WithName("x"))
	if err != nil {
		t.Fatal(err)
	}
	lg, err := eventlog.New(p)
	if err != nil {
		t.Fatal(err)
	}
	own, err := eventlog.New(p)
	if err != nil {
		t.Fatal(err)
	}
	var got collector
	live, err := lg.Subscribe("x.>", got.handle)
	if err != nil {
		t.Fatal(err)
	}
	fromLog, err := lg.Subscribe("x.>", got.handle, eventlog.FromStart())
	if err != nil {
		t.Fatal(err)
	}
	durable, err := lg.SubscribeDurable("d", "x.>", got.handle)
	if err != nil {
		t.Fatal(err)
	}
	// A subscription closes once; so does a Log, which leaves the peer
	// and its other logs open.
	if err := live.Close(); err != nil {
		t.Fatal(err)
	}
	if err := live.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second close of a subscription: %v", err)
	}
	if err := own.Close(); err != nil {
		t.Fatal(err)
	}
	if err := own.Close(); !errors.Is(err, net.ErrClosed) || !errors.Is(err, eventlog.ErrClosed) {
		t.Fatalf("second close of a log: %v", err)
	}
	if _, err := own.Emit(ctx, "x.a", 1); !errors.Is(err, eventlog.ErrClosed) || errors.Is(err, peer.ErrClosed) {
		t.Fatalf("emit on a closed log: %v", err)
	}
	if _, err := lg.Emit(ctx, "x.a", 1); err != nil {
		t.Fatalf("emit on the other log: %v", err)
	}
	waitFor(t, "events", func() bool { return got.len() == 2 })
	// Closing the peer closes its logs and their subscriptions.
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
	if _, err := lg.Emit(context.Background(), "x", 1); !errors.Is(err, peer.ErrClosed) || !errors.Is(err, eventlog.ErrClosed) {
		t.Fatalf("emit after close: %v", err)
	}
	for _, s := range []*eventlog.Subscription{fromLog, durable} {
		if err := s.Close(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("close of a subscription of a closed peer: %v", err)
		}
	}
	if err := lg.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("close of the log of a closed peer: %v", err)
	}
	if _, err := eventlog.New(p); !errors.Is(err, peer.ErrClosed) {
		t.Fatalf("log of a closed peer: %v", err)
	}
	if _, err := lg.Subscribe("x", got.handle); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("subscribe after close: %v", err)
	}
}

// TestCloseOfARunningHandler checks that closing a Log while a handler
// runs cancels the handler's context and returns within its bound when
// the handler does not heed it, with an error saying so.
func TestCloseOfARunningHandler(t *testing.T) {
	n := jsNode(t, t.TempDir(), "bounded")
	lg := newPeer(t, n)
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	canceled := make(chan struct{}, 1)
	if _, err := lg.Subscribe("slow", func(hctx context.Context, _ eventlog.Event) error {
		started <- struct{}{}
		<-hctx.Done()
		canceled <- struct{}{}
		<-release // goes on after its context ended
		return nil
	}, eventlog.FromStart()); err != nil {
		t.Fatal(err)
	}
	if _, err := lg.Emit(context.Background(), "slow", 1); err != nil {
		t.Fatal(err)
	}
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := lg.CloseContext(ctx); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "handler did not return") {
		t.Fatalf("close with a handler that ignores its context: %v", err)
	}
	<-canceled
	close(release)
	if err := lg.Log.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
}

// TestOptionsValidate checks that invalid options are errors wrapping
// ErrInvalidOption.
func TestOptionsValidate(t *testing.T) {
	n := jsNode(t, t.TempDir(), "opts")
	lg := newPeer(t, n)
	p := lg.p
	h := func(context.Context, eventlog.Event) error { return nil }
	for name, err := range map[string]error{
		"replicas": func() error { _, err := eventlog.New(p, eventlog.WithConfig(eventlog.Config{Replicas: 6})); return err }(),
		"negative dedupe": func() error {
			_, err := eventlog.New(p, eventlog.WithConfig(eventlog.Config{Duplicates: -1}))
			return err
		}(),
		"ack wait":     func() error { _, err := lg.SubscribeDurable("d", "x", h, eventlog.AckWait(0)); return err }(),
		"max ack":      func() error { _, err := lg.SubscribeDurable("d", "x", h, eventlog.MaxAckPending(-1)); return err }(),
		"backoff":      func() error { _, err := lg.SubscribeDurable("d", "x", h, eventlog.RetryBackoff()); return err }(),
		"durable name": func() error { _, err := lg.SubscribeDurable("a.b", "x", h); return err }(),
		"group":        func() error { _, err := lg.Subscribe("x", h, eventlog.FromGroups("a.b")); return err }(),
		"bucket": func() error {
			_, err := eventlog.NewProjection(lg.Log, "p", "x", 0, func(s int, _ eventlog.Event) (int, error) { return s, nil }, eventlog.SnapshotBucket("a.b"))
			return err
		}(),
	} {
		if !errors.Is(err, eventlog.ErrInvalidOption) {
			t.Errorf("%s: %v, want ErrInvalidOption", name, err)
		}
	}
}
