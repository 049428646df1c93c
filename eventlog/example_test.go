package eventlog_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/peer"
)

// exampleNode starts a node on a free loopback port, with JetStream in a
// temporary directory; stop closes it and removes the directory.
func exampleNode() (n *bus.Node, stop func(), err error) {
	dir, err := os.MkdirTemp("", "peerbus-example-")
	if err != nil {
		return nil, nil, err
	}
	n, err = bus.Start(context.Background(), bus.WithListen("127.0.0.1:-1"), bus.WithDataDir(dir))
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return n, func() { n.Close(); os.RemoveAll(dir) }, nil
}

// Events are delivered to the subscriptions whose pattern matches.
func ExampleLog_Subscribe() {
	n, stop, err := exampleNode()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	p, err := peer.New(n.Conn(), peer.WithGroup("shop"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close() // closes the log too
	lg, err := eventlog.New(p)
	if err != nil {
		fmt.Println(err)
		return
	}

	got := make(chan eventlog.Event, 1)
	sub, err := lg.Subscribe("order.*", func(_ context.Context, e eventlog.Event) error {
		got <- e
		return nil
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sub.Close()

	if _, err := lg.Emit(context.Background(), "order.created", map[string]int{"id": 42}); err != nil {
		fmt.Println(err)
		return
	}
	select {
	case e := <-got:
		fmt.Println(e.Name, e.Group, string(e.Data), e.Peer == p.ID())
	case <-time.After(10 * time.Second):
		fmt.Println("no event")
	}
	// Output: order.created shop {"id":42} true
}

// A replay reads the stored events, oldest first, from a chosen
// position.
func ExampleLog_Replay() {
	n, stop, err := exampleNode()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	p, err := peer.New(n.Conn(), peer.AsClient())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()
	lg, err := eventlog.New(p)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	var second eventlog.Ack
	for i := 1; i <= 3; i++ {
		ack, err := lg.Emit(ctx, "tick", i)
		if err != nil {
			fmt.Println(err)
			return
		}
		if i == 2 {
			second = ack
		}
	}

	for e, err := range lg.Replay(ctx, "tick", eventlog.FromSeq(second.Seq)) {
		if err != nil {
			fmt.Println(err)
			return
		}
		var v int
		_ = e.Decode(&v)
		fmt.Println(e.Seq, v)
	}
	// Output:
	// 2 2
	// 3 3
}

// A durable subscription acknowledges what its handler did, and a new
// subscriber of the same name resumes after it.
func ExampleLog_SubscribeDurable() {
	n, stop, err := exampleNode()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	p, err := peer.New(n.Conn(), peer.AsClient())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()
	lg, err := eventlog.New(p)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()

	done := make(chan uint64, 10)
	handle := func(_ context.Context, e eventlog.Event) error {
		done <- e.Seq
		return nil // acknowledged
	}
	sub, err := lg.SubscribeDurable("billing", "invoice.>", handle, eventlog.FromStart(), eventlog.MaxDeliver(3))
	if err != nil {
		fmt.Println(err)
		return
	}
	if _, err := lg.Emit(ctx, "invoice.paid", 1); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("handled", <-done)
	if err := sub.Close(); err != nil {
		fmt.Println(err)
		return
	}

	// Emitted while nobody subscribes; the durable resumes with it.
	if _, err := lg.Emit(ctx, "invoice.paid", 2); err != nil {
		fmt.Println(err)
		return
	}
	sub, err = lg.SubscribeDurable("billing", "invoice.>", handle, eventlog.MustExist())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sub.Close()
	fmt.Println("handled", <-done)
	// Output:
	// handled 1
	// handled 2
}
