package eventlog_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peerbus/peerbus/eventlog"
)

// An interrupted handler (its subscription closed mid-handler) does not
// use up the event's deliveries: after more interruptions than
// MaxDeliver allows, a later subscriber still gets the event, and no dead
// letter is written for it.
func TestLogInterruptedDeliveryIsNotLost(t *testing.T) {
	n := jsNode(t, t.TempDir(), "interrupt")
	pub := newPeer(t, n)
	ctx := context.Background()
	var dead collector
	if _, err := pub.SubscribeDurable("dead-watch", eventlog.DeadLetterPrefix+">", dead.handle, eventlog.FromStart()); err != nil {
		t.Fatal(err)
	}
	ack, err := pub.Emit(ctx, "job.one", num{1})
	if err != nil {
		t.Fatal(err)
	}
	last := 0
	for round := 1; round <= 3; round++ {
		w := newPeer(t, n)
		started := make(chan int, 1)
		sub, err := w.SubscribeDurable("d", "job.>", func(hctx context.Context, e eventlog.Event) error {
			started <- e.Deliveries
			<-hctx.Done() // like a watch whose output failed: wait to be stopped
			return hctx.Err()
		}, eventlog.FromStart(), eventlog.MaxDeliver(2))
		if err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-started:
			// A stopping subscriber may hand a delivery back unhandled.
			if got <= last || got < round {
				t.Fatalf("round %d: delivery %d after %d", round, got, last)
			}
			last = got
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: the event was not delivered again", round)
		}
		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
	var got collector
	w := newPeer(t, n)
	if _, err := w.SubscribeDurable("d", "job.>", got.handle, eventlog.MaxDeliver(2)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the interrupted event delivered again", func() bool { return got.len() == 1 })
	if e := got.events()[0]; e.ID != ack.ID || e.Deliveries <= last {
		t.Fatalf("delivered %+v, want event %s after delivery %d", e, ack.ID, last)
	}
	waitFor(t, "acknowledged", func() bool {
		di, err := w.DurableInfo(ctx, "d")
		return err == nil && di.AckFloor == ack.Seq && di.AckPending == 0 && di.MaxDeliver == 2
	})
	if dead.len() != 0 {
		t.Fatalf("dead letters for an interrupted event: %+v", dead.events())
	}
}

// TestLiveSubscriberGetsARetriedEmitOnce checks that an emit retried
// with the same id, stored once, reaches a live subscriber once.
func TestLiveSubscriberGetsARetriedEmitOnce(t *testing.T) {
	n := jsNode(t, t.TempDir(), "live-dup")
	pub := newPeer(t, n)
	sub := newPeer(t, n)
	ctx := context.Background()
	var got collector
	if _, err := sub.Subscribe("order.*", got.handle); err != nil {
		t.Fatal(err)
	}
	first, err := pub.Emit(ctx, "order.placed", num{1}, eventlog.WithEventID("order-1"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := pub.Emit(ctx, "order.placed", num{1}, eventlog.WithEventID("order-1"))
	if err != nil || !again.Duplicate || again.Seq != first.Seq {
		t.Fatalf("retried emit: %+v %v", again, err)
	}
	// A later event on the same connection arrives after both copies.
	last, err := pub.Emit(ctx, "order.placed", num{2})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the later event", func() bool {
		evs := got.events()
		return len(evs) > 0 && evs[len(evs)-1].ID == last.ID
	})
	if evs := got.events(); len(evs) != 2 || evs[0].ID != "order-1" {
		t.Fatalf("live subscriber got %+v, want order-1 once, then %s", evs, last.ID)
	}
}

// TestDurableRedeliveryAfterAckIsNotHandledAgain checks that an event
// the bus delivers again because its handler outlasted AckWait is
// handled once: the redelivery that arrives after the acknowledgement is
// acknowledged without calling the handler.
func TestDurableRedeliveryAfterAckIsNotHandledAgain(t *testing.T) {
	n := jsNode(t, t.TempDir(), "redeliver")
	pub := newPeer(t, n)
	w := newPeer(t, n)
	ctx := context.Background()
	var calls atomic.Int32
	release := make(chan struct{})
	sub, err := w.SubscribeDurable("slow", "job.>", func(context.Context, eventlog.Event) error {
		if calls.Add(1) == 1 {
			<-release // outlasts AckWait: the bus delivers the event again meanwhile
		}
		return nil
	}, eventlog.FromStart(), eventlog.AckWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	first, err := pub.Emit(ctx, "job.one", num{1})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the redelivery", func() bool {
		di, err := w.DurableInfo(ctx, "slow")
		return err == nil && di.Redelivered > 0
	})
	close(release)
	waitFor(t, "acknowledged", func() bool { return sub.Seq() == first.Seq })
	second, err := pub.Emit(ctx, "job.two", num{2})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the next event", func() bool { return sub.Seq() == second.Seq })
	if got := calls.Load(); got != 2 {
		t.Fatalf("handler called %d times for two events, want 2", got)
	}
}
