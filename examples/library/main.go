// Command library is the library tour of README.md as a program: it
// serves and calls a tag, lists peers, and emits, watches and replays
// events. It runs a node of its own on a free port, or joins the node at
// PEERBUS_NATS_URL:
//
//	go run ./examples/library
//	PEERBUS_NATS_URL=nats://127.0.0.1:4222 go run ./examples/library
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/peer"
)

type MulArgs struct{ A, B int }

type Order struct {
	ID    string `json:"id"`
	Total int    `json:"total"`
}

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, out io.Writer) error {
	// An embedded NATS server with JetStream, named so that its data
	// directory is its own; PEERBUS_* variables override both options.
	node, err := bus.Start(ctx, bus.WithName("library-example"), bus.WithListen("127.0.0.1:-1"), bus.FromEnv())
	if err != nil {
		return err // a taken PEERBUS_LISTEN port: the error says how to join its node
	}
	defer node.Close()
	p, err := peer.New(node.Conn(), peer.FromEnv(), peer.WithGroup("math"))
	if err != nil {
		return err
	}
	defer p.Close() // bounded; a second Close wraps net.ErrClosed

	mul, err := peer.Register(p, "multiply", func(ctx context.Context, in MulArgs) (int, error) {
		return in.A * in.B, nil
	})
	if err != nil {
		return err
	}
	v, err := mul.Call(ctx, MulArgs{5, 10}) // local pass-through
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "local:", v)
	v, err = mul.Call(ctx, MulArgs{5, 10}, peer.OnPeer(p.ID())) // one chosen peer, over the bus
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "on this peer:", v)
	v, err = mul.Call(ctx, MulArgs{5, 10}, peer.OnAny(), peer.InGroup("math")) // any peer of the group
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "any peer of math:", v)
	all, err := mul.CallAll(ctx, MulArgs{5, 10}, peer.InGroup("math")) // every peer of the group
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "replies from the peers of math:", len(all))

	divide, err := peer.Stub[MulArgs, int](p, "divide") // a tag this peer does not serve
	if err != nil {
		return err
	}
	_, err = divide.Call(ctx, MulArgs{5, 10}, peer.OnPeer(p.ID()))
	var re *peer.RemoteError // the remote error: peer, tag, code, type, message, stack
	if errors.As(err, &re) && errors.Is(err, peer.ErrNoSuchTag) {
		fmt.Fprintf(out, "divide: %s (the peer offers %v)\n", re.Code, re.Tags)
	}

	peers, err := p.Peers(ctx, peer.ByGroup("math"))
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "peers of math:", len(peers))

	lg, err := eventlog.New(p) // the event log (closed with p)
	if err != nil {
		return err
	}
	got := make(chan Order, 1)
	sub, err := eventlog.On(lg, "order.>", func(ctx context.Context, e eventlog.Event, o Order) error {
		got <- o
		return nil
	}, eventlog.FromPeers(p.ID())) // subscribe before emitting: a live subscription sees new events
	if err != nil {
		return err
	}
	defer sub.Close()

	ack, err := lg.Emit(ctx, "order.created", Order{ID: "o-1", Total: 50}) // stored
	if err != nil {
		return err
	}
	select {
	case o := <-got:
		fmt.Fprintln(out, "watched:", o.ID, o.Total)
	case <-ctx.Done():
		return ctx.Err()
	}
	for e, err := range lg.Replay(ctx, "order.>", eventlog.FromSeq(ack.Seq)) { // the log from ack.Seq on
		if err != nil {
			return err
		}
		fmt.Fprintln(out, "replayed:", e.Name, e.Seq == ack.Seq)
		break
	}
	return nil
}
