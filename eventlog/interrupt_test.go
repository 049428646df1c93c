package eventlog_test

import (
	"context"
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
