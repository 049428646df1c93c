// Command calc is a peerbus example: a peer that serves "multiply".
//
// It is configured by the PEERBUS_* environment variables. By default it
// runs its own embedded node (on PEERBUS_LISTEN, default
// 127.0.0.1:4222), or joins the node that already listens there; with
// PEERBUS_NATS_URL set it joins the node (or NATS server) at that URL
// instead; with PEERBUS_IDENTITY set (a seed file of peerbus keygen) it
// connects and serves under that identity, as a node enforcing a policy
// requires. From another process:
//
//	peerbus call --peer any multiply '{"a":5,"b":10}'
//
// prints 50. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/identity"
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

	node, err := startNode(ctx)
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

// startNode starts an embedded node named calc-example (so that its data
// directory is its own), or connects to PEERBUS_NATS_URL. When the
// client port is taken, as by the node of README's Quick start, it joins
// the node on that port.
func startNode(ctx context.Context) (*bus.Node, error) {
	env := []bus.Option{bus.FromEnv()}
	if f := os.Getenv(peer.EnvIdentity); f != "" {
		id, err := identity.Load(f)
		if err != nil {
			return nil, err
		}
		env = append(env, bus.WithIdentity(id))
	}
	node, err := bus.Start(ctx, append([]bus.Option{bus.WithName("calc-example")}, env...)...)
	var inUse *bus.AddrInUseError
	if !errors.As(err, &inUse) || inUse.Listener != "client" {
		return node, err
	}
	joined, jerr := bus.Start(ctx, append(env, bus.WithExternalURL(inUse.JoinURL))...)
	if jerr != nil {
		return nil, fmt.Errorf("%w; joining it failed: %w", err, jerr)
	}
	fmt.Fprintf(os.Stderr, "calc: joined the node on %s\n", inUse.JoinURL)
	return joined, nil
}
