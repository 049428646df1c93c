package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/peerbus/peerbus/peer"
)

// watchFlags holds the flags of "peerbus watch".
type watchFlags struct {
	server     string
	groups     []string
	peers      []string
	count      int
	all        bool
	fromSeq    uint64
	since      string
	durable    string
	maxDeliver int
	mustExist  bool
}

func init() { rootCmd.AddCommand(newWatchCmd()) }

// newWatchCmd builds the "watch" command.
func newWatchCmd() *cobra.Command {
	f := &watchFlags{}
	cmd := &cobra.Command{
		Use:   "watch [flags] PATTERN",
		Short: "Print events matching a pattern as they happen, one JSON object per line",
		Long: `Print the events whose name matches PATTERN as they happen, one JSON object
per line, until interrupted:
  {"id":..,"name":..,"peer":..,"group":..,"time":..,"seq":..,"data":<JSON>}
In PATTERN, '*' matches one dot-separated token and a final '>' matches one
or more. --group and --peer keep events of these groups or peers only.
A line on stderr says when the subscription is in place.

By default watch is live: it prints the events emitted from now on,
persisted and transient (seq is 0: live delivery does not go through the
log). --all, --from-seq or --since first print the stored events from the
start of the log, from a sequence, or from a time (a duration before now,
or an RFC 3339 time), then follow the log (persisted events only, with seq).

--durable NAME makes a durable watch: the node remembers how far it got.
Each event is acknowledged once printed, and a watch started again with the
same NAME resumes with the first event not acknowledged, so events emitted
while no watcher ran are printed then (an event printed just before a crash
may be printed again). A new durable starts with the events emitted from
now on, or where --all, --from-seq or --since say; a resumed one ignores
them. --must-exist fails instead of creating a durable that does not exist;
"peerbus log durables" lists them, "peerbus log delete-durable" forgets one.`,
		Example: `  peerbus watch 'demo.>'
  peerbus watch 'order.*' --group billing
  peerbus watch '>' --peer 3f1c9e2a-0f5e-4a4e-9d38-7b1c5a3d2e10
  peerbus watch 'job.done' --count 1    # wait for one event, then exit
  peerbus watch 'order.>' --all         # the stored orders, then new ones
  peerbus watch 'order.>' --since 10m
  peerbus watch 'order.>' --durable invoicing   # resumes where it stopped`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runWatch(cmd, f, args[0]) },
	}
	fl := cmd.Flags()
	fl.StringSliceVarP(&f.groups, "group", "g", nil, "only events from peers of these groups (repeatable)")
	fl.StringSliceVarP(&f.peers, "peer", "p", nil, "only events from these peer ids (repeatable)")
	fl.IntVarP(&f.count, "count", "n", 0, "exit after this many events (0: run until interrupted)")
	fl.BoolVar(&f.all, "all", false, "print the stored events from the start of the log first")
	fl.Uint64Var(&f.fromSeq, "from-seq", 0, "print the stored events from this log sequence `N` first")
	fl.StringVar(&f.since, "since", "", "print the stored events since this long ago (10m, 2h, 1d) or this RFC 3339 `TIME` first")
	fl.StringVar(&f.durable, "durable", "", "durable watch `NAME`: resume where the last watch of that name stopped")
	fl.IntVar(&f.maxDeliver, "max-deliver", peer.DefaultMaxDeliver, "with --durable: deliveries of an event before it is given up (dead letter); -1: no limit")
	fl.BoolVar(&f.mustExist, "must-exist", false, "with --durable: fail when the durable does not exist instead of creating it")
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
	logOpts, err := logStartOptions(cmd, f.all, f.fromSeq, f.since)
	if err != nil {
		return err
	}
	durable := f.durable != ""
	if !durable {
		for _, fl := range []string{"max-deliver", "must-exist"} {
			if cmd.Flags().Changed(fl) {
				return fmt.Errorf("--%s needs --durable", fl)
			}
		}
	}
	if durable && (f.maxDeliver == 0 || f.maxDeliver < -1) {
		return fmt.Errorf("--max-deliver must be positive or -1 (no limit), not %d", f.maxDeliver)
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
	onError := func(err error) {
		if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
			fail(fmt.Errorf("durable %q was deleted", f.durable))
			return
		}
		if ctx.Err() == nil {
			fmt.Fprintf(stderr, "peerbus: %v\n", err)
		}
	}
	c, err := openClient(f.server, []peer.Option{peer.WithErrorHandler(onError)},
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
	opts := logOpts
	if len(f.groups) > 0 {
		opts = append(opts, peer.FromGroups(f.groups...))
	}
	if len(f.peers) > 0 {
		opts = append(opts, peer.FromPeers(f.peers...))
	}
	if durable {
		opts = append(opts, peer.Durable(f.durable), peer.MaxDeliver(f.maxDeliver))
		if f.mustExist {
			opts = append(opts, peer.MustExist())
		}
	}
	// unhandled ends the handler of an event the watch does not print:
	// a durable's event must not be acknowledged, so the handler waits
	// until the subscription stops and the event is handed back (not
	// counted as a failed delivery).
	unhandled := func(hctx context.Context, err error) error {
		if !durable {
			return err
		}
		<-hctx.Done()
		if err == nil {
			err = hctx.Err()
		}
		return err
	}
	sub, err := c.p.Subscribe(pattern, func(hctx context.Context, e peer.Event) error {
		mu.Lock()
		if f.count > 0 && seen >= f.count {
			mu.Unlock()
			return unhandled(hctx, nil) // events that arrive after --count was reached
		}
		seen++
		done := f.count > 0 && seen >= f.count
		mu.Unlock()
		if err := ew.Write(e); err != nil {
			fail(fmt.Errorf("write event: %w", err))
			return unhandled(hctx, err)
		}
		if done {
			cancel()
		}
		return nil // printed: a durable acknowledges it now
	}, opts...)
	if err != nil {
		return logError(err)
	}
	defer sub.Unsubscribe()
	what := "watching"
	if durable {
		what = fmt.Sprintf("watching (durable %q)", f.durable)
	}
	fmt.Fprintf(stderr, "peerbus: %s %q on %s\n", what, pattern, c.server)

	<-ctx.Done()
	mu.Lock()
	err = failure
	mu.Unlock()
	return err
}

// logStartOptions returns the subscription option of --all, --from-seq
// and --since (at most one of them), none when no flag was given.
func logStartOptions(cmd *cobra.Command, all bool, fromSeq uint64, since string) ([]peer.SubOption, error) {
	var given []string
	for _, fl := range []string{"all", "from-seq", "since"} {
		if cmd.Flags().Changed(fl) {
			given = append(given, "--"+fl)
		}
	}
	if len(given) > 1 {
		return nil, fmt.Errorf("%s: give only one of --all, --from-seq and --since", strings.Join(given, ", "))
	}
	switch {
	case cmd.Flags().Changed("all") && all:
		return []peer.SubOption{peer.FromStart()}, nil
	case cmd.Flags().Changed("from-seq"):
		return []peer.SubOption{peer.FromSeq(fromSeq)}, nil
	case cmd.Flags().Changed("since"):
		t, err := parseSince(since, time.Now())
		if err != nil {
			return nil, err
		}
		return []peer.SubOption{peer.FromTime(t)}, nil
	}
	return nil, nil
}

// parseSince parses --since: a duration before now (10m, 2h, 1d) or an
// RFC 3339 time.
func parseSince(v string, now time.Time) (time.Time, error) {
	v = strings.TrimSpace(v)
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	d, err := parseDays(v)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("--since %q: want a duration before now (10m, 2h, 1d) or an RFC 3339 time (2026-01-02T15:04:05Z)", v)
	}
	return now.Add(-d), nil
}

// eventLine is the JSON shape of one printed event (watch and replay): data is the raw JSON payload (a JSON string when the payload
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
