// Command calc is a peerbus example: a peer that serves "multiply".
//
// It is configured by the PEERBUS_* environment variables. By default it
// runs its own embedded node (on PEERBUS_LISTEN, default
// 127.0.0.1:4222); with PEERBUS_NATS_URL set it joins the node (or NATS
// server) at that URL instead. From another process:
//
//	peerbus call --peer any multiply '{"a":5,"b":10}'
//
// prints 50. See README.md.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/peer"
)

// Args are the arguments of multiply.
type Args struct {
	A float64 `json:"a"`
	B float64 `json:"b"`
}

// Multiply returns a*b.
func Multiply(_ context.Context, in Args) (float64, error) { return in.A * in.B, nil }

func main() {
	if err := run(); err != nil {
		log.Fatalf("calc: %v", err)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	node, err := bus.Start(ctx, bus.FromEnv())
	if err != nil {
		return err
	}
	defer node.Close()

	p, err := peer.New(node.Conn(), peer.FromEnv())
	if err != nil {
		return err
	}
	defer p.Close()

	if _, err := peer.Register(p, "multiply", Multiply); err != nil {
		return err
	}
	fmt.Printf("calc: peer %s serves multiply on %s\n", p.ID(), node.ClientURL())

	<-ctx.Done()
	fmt.Println("calc: stopping")
	return nil
}
