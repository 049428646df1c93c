package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/peerbus/peerbus/peer"
)

// watchFlags holds the flags of "peerbus watch".
type watchFlags struct {
	server string
	groups []string
	peers  []string
	count  int
}

func init() { rootCmd.AddCommand(newWatchCmd()) }

// newWatchCmd builds the "watch" command.
func newWatchCmd() *cobra.Command {
	f := &watchFlags{}
	cmd := &cobra.Command{
		Use:   "watch [flags] PATTERN",
		Short: "Print live events matching a pattern, one JSON object per line",
		Long: `Print the events whose name matches PATTERN as they happen, one JSON object
per line, until interrupted:
  {"id":..,"name":..,"peer":..,"group":..,"time":..,"seq":..,"data":<JSON>}
In PATTERN, '*' matches one dot-separated token and a final '>' matches one
or more. --group and --peer keep events of these groups or peers only.
A line on stderr says when the subscription is in place.`,
		Example: `  peerbus watch 'demo.>'
  peerbus watch 'order.*' --group billing
  peerbus watch '>' --peer 3f1c9e2a-0f5e-4a4e-9d38-7b1c5a3d2e10
  peerbus watch 'job.done' --count 1    # wait for one event, then exit`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runWatch(cmd, f, args[0]) },
	}
	fl := cmd.Flags()
	fl.StringSliceVarP(&f.groups, "group", "g", nil, "only events from peers of these groups (repeatable)")
	fl.StringSliceVarP(&f.peers, "peer", "p", nil, "only events from these peer ids (repeatable)")
	fl.IntVarP(&f.count, "count", "n", 0, "exit after this many events (0: run until interrupted)")
	addServerFlag(cmd, &f.server)
	return cmd
}

// runWatch runs "peerbus watch".
func runWatch(cmd *cobra.Command, f *watchFlags, pattern string) error {
	if _, err := peer.FilterSubjects(pattern, f.groups, f.peers); err != nil {
		return err
	}
	if f.count < 0 {
		return fmt.Errorf("--count must not be negative")
	}
	ctx, stop := signalContext(cmd.Context())
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// failure records why the watch ended on its own (nil for a signal
	// or --count).
	var (
		mu      sync.Mutex
		failure error
		seen    int
	)
	fail := func(err error) {
		mu.Lock()
		if failure == nil && ctx.Err() == nil {
			failure = err
		}
		mu.Unlock()
		cancel()
	}

	stderr := cmd.ErrOrStderr()
	c, err := openClient(f.server, nil,
		nats.MaxReconnects(60), nats.ReconnectWait(2*time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				fmt.Fprintf(stderr, "peerbus: disconnected from node: %v; reconnecting\n", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			fmt.Fprintf(stderr, "peerbus: reconnected to %s\n", nc.ConnectedUrlRedacted())
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			fail(errors.New("lost the connection to the node"))
		}))
	if err != nil {
		return err
	}
	defer c.Close()

	ew := newEventWriter(cmd.OutOrStdout())
	var opts []peer.SubOption
	if len(f.groups) > 0 {
		opts = append(opts, peer.FromGroups(f.groups...))
	}
	if len(f.peers) > 0 {
		opts = append(opts, peer.FromPeers(f.peers...))
	}
	sub, err := c.p.Subscribe(pattern, func(_ context.Context, e peer.Event) error {
		mu.Lock()
		if f.count > 0 && seen >= f.count {
			mu.Unlock()
			return nil // events that arrive after --count was reached
		}
		seen++
		done := f.count > 0 && seen >= f.count
		mu.Unlock()
		if err := ew.Write(e); err != nil {
			fail(fmt.Errorf("write event: %w", err))
			return err
		}
		if done {
			cancel()
		}
		return nil
	}, opts...)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	fmt.Fprintf(stderr, "peerbus: watching %q on %s\n", pattern, c.server)

	<-ctx.Done()
	mu.Lock()
	defer mu.Unlock()
	return failure
}

// eventLine is the JSON shape of one printed event (watch, and later
// replay): data is the raw JSON payload (a JSON string when the payload
// is not JSON).
type eventLine struct {
	ID    string          `json:"id"`
	Name  string          `json:"name"`
	Peer  string          `json:"peer"`
	Group string          `json:"group"`
	Time  time.Time       `json:"time"`
	Seq   uint64          `json:"seq"`
	Data  json.RawMessage `json:"data"`
}

// formatEvent returns the JSON line of e, newline included.
func formatEvent(e peer.Event) ([]byte, error) {
	return jsonLine(eventLine{ID: e.ID, Name: e.Name, Peer: e.Peer, Group: e.Group,
		Time: e.Time, Seq: e.Seq, Data: jsonOrString(e.Data)})
}

// eventWriter prints events as JSON lines, one write per line, so that
// each line reaches a pipe as soon as the event arrives. It is safe for
// concurrent use.
type eventWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func newEventWriter(w io.Writer) *eventWriter { return &eventWriter{w: w} }

// Write prints one event.
func (ew *eventWriter) Write(e peer.Event) error {
	b, err := formatEvent(e)
	if err != nil {
		return err
	}
	ew.mu.Lock()
	defer ew.mu.Unlock()
	_, err = ew.w.Write(b)
	if err == nil {
		if f, ok := ew.w.(interface{ Flush() error }); ok {
			err = f.Flush()
		}
	}
	return err
}
