package bridge_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/bridge"
	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/peer"
)

// echo serves a TCP echo on loopback and returns its address.
func echo() (net.Listener, string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				_, _ = io.Copy(c, c)
				_ = c.Close()
			}()
		}
	}()
	return l, "tcp://" + l.Addr().String()
}

// One peer exposes a local TCP service; another dials it by name, here
// over the relay, and half-closes to read the whole answer.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	node, err := bus.Start(ctx, bus.WithListen("127.0.0.1:-1"), bus.WithoutJetStream())
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close()

	// The exposing peer.
	exposer, err := peer.New(node.Conn())
	if err != nil {
		log.Fatal(err)
	}
	defer exposer.Close()
	l, target := echo()
	defer l.Close()
	svc, err := bridge.Expose(ctx, exposer, "echo", target)
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()

	// The dialing peer, a client of the same bus.
	nc, err := nats.Connect(node.ClientURL())
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	dialer, err := peer.New(nc, peer.AsClient())
	if err != nil {
		log.Fatal(err)
	}
	defer dialer.Close()

	c, err := bridge.Dial(ctx, dialer, exposer.ID(), "echo", bridge.WithStrategies(bridge.Relay))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "hello over the bus")
	_ = c.CloseWrite()
	answer, err := io.ReadAll(c)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s via %s\n", answer, c.Path())
	// Output: hello over the bus via relay
}

// Without a restriction Dial takes the first strategy that works: peers
// on one machine connect directly.
func ExampleDial() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	node, err := bus.Start(ctx, bus.WithListen("127.0.0.1:-1"), bus.WithoutJetStream())
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close()
	p, err := peer.New(node.Conn())
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	l, target := echo()
	defer l.Close()
	svc, err := bridge.Expose(ctx, p, "echo", target)
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()

	c, err := bridge.Dial(ctx, p, bridge.AnyPeer, "echo")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	// The strategies run at once; on one host direct wins (the others
	// are in c.Result().Attempts, stopped).
	fmt.Println(c.Path())
	// Output: direct
}

// Regex subscriptions pick bus messages by subject and payload.
func ExampleSubscribeRegex() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	node, err := bus.Start(ctx, bus.WithListen("127.0.0.1:-1"), bus.WithoutJetStream())
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close()
	nc := node.Conn()
	sub, err := bridge.SubscribeRegex(nc, "demo.>", `^demo\.orders\.`, `"ok":true`, bridge.QueueSize(16))
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	_ = nc.Flush()
	_ = nc.Publish("demo.orders.1", []byte(`{"ok":false}`))
	_ = nc.Publish("demo.users.2", []byte(`{"ok":true}`))
	_ = nc.Publish("demo.orders.3", []byte(`{"ok":true}`))
	m, err := sub.Recv(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(m.Subject)
	// Output: demo.orders.3
}
