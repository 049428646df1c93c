// Command events is a peerbus example: events emitted by one process and
// received by another.
//
//	go run ./examples/events -mode listen   # embeds a node on 127.0.0.1:4222
//	go run ./examples/events -mode emit     # joins it
//
// Both modes are configured by the PEERBUS_* environment variables: with
// PEERBUS_NATS_URL set a process joins that node, otherwise it runs its
// own embedded node on PEERBUS_LISTEN (default 127.0.0.1:4222), or joins
// the node that already listens there (a "peerbus node", or the other
// mode). See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/peer"
)

// Tick is the payload of the demo.tick event.
type Tick struct {
	N    int    `json:"n"`
	Text string `json:"text"`
}

func main() {
	mode := flag.String("mode", "listen", `"listen" prints events, "emit" emits them`)
	pattern := flag.String("pattern", "demo.>", "event pattern to listen for")
	count := flag.Int("count", 3, "events to emit; in listen mode, exit after this many (0: run until interrupted)")
	interval := flag.Duration("interval", 200*time.Millisecond, "time between emitted events")
	flag.Parse()
	if err := run(*mode, *pattern, *count, *interval); err != nil {
		log.Fatalf("events: %v", err)
	}
}

func run(mode, pattern string, count int, interval time.Duration) error {
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
	defer p.Close() // closes the event log too
	lg, err := eventlog.New(p)
	if err != nil {
		return err
	}

	switch mode {
	case "listen":
		return listen(ctx, lg, node.ClientURL(), pattern, count)
	case "emit":
		return emit(ctx, lg, count, interval)
	}
	return fmt.Errorf("unknown -mode %q (want listen or emit)", mode)
}

// listen prints every event matching pattern, and returns after count
// events (0: when ctx ends).
func listen(ctx context.Context, lg *eventlog.Log, url, pattern string, count int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := make(chan struct{}, 64)
	sub, err := eventlog.On(lg, pattern, func(_ context.Context, e eventlog.Event, t Tick) error {
		fmt.Printf("%s from %s: n=%d text=%q\n", e.Name, e.Peer, t.N, t.Text)
		select {
		case got <- struct{}{}:
		default: // more events than counted: drop the signal
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer sub.Close()
	fmt.Fprintf(os.Stderr, "events: listening for %s on %s\n", pattern, url)
	for n := 0; count == 0 || n < count; n++ {
		select {
		case <-got:
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// emit emits count demo.tick events.
func emit(ctx context.Context, lg *eventlog.Log, count int, interval time.Duration) error {
	for n := 1; n <= count; n++ {
		ack, err := lg.Emit(ctx, "demo.tick", Tick{N: n, Text: "hello"})
		if err != nil {
			return err
		}
		fmt.Printf("emitted demo.tick n=%d id=%s\n", n, ack.ID)
		if n < count {
			select {
			case <-time.After(interval):
			case <-ctx.Done():
				return nil
			}
		}
	}
	return nil
}

// startNode starts an embedded node named events-example (so that its data
// directory is its own), or connects to PEERBUS_NATS_URL. When the
// client port is taken, as by the node of README's Quick start, it joins
// the node on that port.
func startNode(ctx context.Context) (*bus.Node, error) {
	node, err := bus.Start(ctx, bus.WithName("events-example"), bus.FromEnv())
	var inUse *bus.AddrInUseError
	if !errors.As(err, &inUse) || inUse.Listener != "client" {
		return node, err
	}
	joined, jerr := bus.Start(ctx, bus.FromEnv(), bus.WithExternalURL(inUse.JoinURL))
	if jerr != nil {
		return nil, fmt.Errorf("%w; joining it failed: %w", err, jerr)
	}
	fmt.Fprintf(os.Stderr, "events: joined the node on %s\n", inUse.JoinURL)
	return joined, nil
}
