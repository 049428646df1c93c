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
	"github.com/spf13/cobra"

	"github.com/peerbus/peerbus/eventlog"
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
	fl.IntVar(&f.maxDeliver, "max-deliver", eventlog.DefaultMaxDeliver, "with --durable: deliveries of an event before it is given up (dead letter); -1: no limit")
	fl.BoolVar(&f.mustExist, "must-exist", false, "with --durable: fail when the durable does not exist instead of creating it")
	addServerFlag(cmd, &f.server)
	return cmd
}

// runWatch runs "peerbus watch".
func runWatch(cmd *cobra.Command, f *watchFlags, pattern string) error {
	start, hasStart, err := f.check(cmd, pattern)
	if err != nil {
		return err
	}
	ctx, stop := signalContext(cmd.Context())
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := &watcher{f: f, cancel: cancel, ctx: ctx, ew: newEventWriter(cmd.OutOrStdout())}
	stderr := cmd.ErrOrStderr()
	c, err := w.open(stderr)
	if err != nil {
		return err
	}
	defer c.Close()
	sub, err := w.subscribe(c.lg, pattern, start, hasStart)
	if err != nil {
		return logError(err)
	}
	defer sub.Close()
	what := "watching"
	if f.durable != "" {
		what = fmt.Sprintf("watching (durable %q)", f.durable)
	}
	fmt.Fprintf(stderr, "peerbus: %s %q on %s\n", what, pattern, c.server)

	<-ctx.Done()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failure
}

// check checks the flags of "peerbus watch" and returns the start
// position they give, if any.
func (f *watchFlags) check(cmd *cobra.Command, pattern string) (eventlog.Start, bool, error) {
	if _, err := eventlog.FilterSubjects(pattern, f.groups, f.peers); err != nil {
		return eventlog.Start{}, false, err
	}
	if f.count < 0 {
		return eventlog.Start{}, false, fmt.Errorf("--count must not be negative")
	}
	start, hasStart, err := logStart(cmd, f.all, f.fromSeq, f.since)
	if err != nil {
		return eventlog.Start{}, false, err
	}
	if f.durable == "" {
		for _, fl := range []string{"max-deliver", "must-exist"} {
			if cmd.Flags().Changed(fl) {
				return eventlog.Start{}, false, fmt.Errorf("--%s needs --durable", fl)
			}
		}
	}
	if f.durable != "" && (f.maxDeliver == 0 || f.maxDeliver < -1) {
		return eventlog.Start{}, false, fmt.Errorf("--max-deliver must be positive or -1 (no limit), not %d", f.maxDeliver)
	}
	return start, hasStart, nil
}

// watcher is a running "peerbus watch": it prints events until --count
// is reached, the command is interrupted, or the watch fails.
type watcher struct {
	f      *watchFlags
	ctx    context.Context
	cancel context.CancelFunc
	ew     *eventWriter

	mu sync.Mutex
	// failure records why the watch ended on its own (nil for a signal
	// or --count).
	failure error
	seen    int
}

// fail ends the watch with err.
func (w *watcher) fail(err error) {
	w.mu.Lock()
	if w.failure == nil && w.ctx.Err() == nil {
		w.failure = err
	}
	w.mu.Unlock()
	w.cancel()
}

// open connects to the node with a client peer that reports its errors
// and the state of the connection on stderr, and reconnects.
func (w *watcher) open(stderr io.Writer) (*client, error) {
	onError := func(err error) {
		if errors.Is(err, eventlog.ErrUnknownDurable) {
			w.fail(fmt.Errorf("durable %q was deleted", w.f.durable))
			return
		}
		if w.ctx.Err() == nil {
			fmt.Fprintf(stderr, "peerbus: %v\n", err)
		}
	}
	return openClient(w.f.server, []peer.Option{peer.WithErrorHandler(onError)},
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
			w.fail(errors.New("lost the connection to the node"))
		}))
}

// subscribe starts the subscription of the watch: durable with
// --durable, else live or from the log's start position.
func (w *watcher) subscribe(lg *eventlog.Log, pattern string, start eventlog.Start, hasStart bool) (*eventlog.Subscription, error) {
	f := w.f
	filters := logFilters(f.groups, f.peers)
	if f.durable == "" {
		var opts []eventlog.SubscribeOption
		if hasStart {
			opts = append(opts, start)
		}
		for _, flt := range filters {
			opts = append(opts, flt)
		}
		return lg.Subscribe(pattern, w.handle, opts...)
	}
	opts := []eventlog.DurableOption{eventlog.MaxDeliver(f.maxDeliver)}
	if hasStart {
		opts = append(opts, start)
	}
	for _, flt := range filters {
		opts = append(opts, flt)
	}
	if f.mustExist {
		opts = append(opts, eventlog.MustExist())
	}
	return lg.SubscribeDurable(f.durable, pattern, w.handle, opts...)
}

// handle prints one event.
func (w *watcher) handle(hctx context.Context, e eventlog.Event) error {
	w.mu.Lock()
	if w.f.count > 0 && w.seen >= w.f.count {
		w.mu.Unlock()
		return w.unhandled(hctx, nil) // events that arrive after --count was reached
	}
	w.seen++
	done := w.f.count > 0 && w.seen >= w.f.count
	w.mu.Unlock()
	if err := w.ew.Write(e); err != nil {
		w.fail(fmt.Errorf("write event: %w", err))
		return w.unhandled(hctx, err)
	}
	if done {
		w.cancel()
	}
	return nil // printed: a durable acknowledges it now
}

// unhandled ends the handler of an event the watch does not print: a
// durable's event must not be acknowledged, so the handler waits until
// the subscription stops and the event is handed back (not counted as a
// failed delivery).
func (w *watcher) unhandled(hctx context.Context, err error) error {
	if w.f.durable == "" {
		return err
	}
	<-hctx.Done()
	if err == nil {
		err = hctx.Err()
	}
	return err
}

// logStart returns the start position of --all, --from-seq and --since
// (at most one of them), and whether one was given.
func logStart(cmd *cobra.Command, all bool, fromSeq uint64, since string) (eventlog.Start, bool, error) {
	var given []string
	for _, fl := range []string{"all", "from-seq", "since"} {
		if cmd.Flags().Changed(fl) {
			given = append(given, "--"+fl)
		}
	}
	if len(given) > 1 {
		return eventlog.Start{}, false, fmt.Errorf("%s: give only one of --all, --from-seq and --since", strings.Join(given, ", "))
	}
	switch {
	case cmd.Flags().Changed("all") && all:
		return eventlog.FromStart(), true, nil
	case cmd.Flags().Changed("from-seq"):
		return eventlog.FromSeq(fromSeq), true, nil
	case cmd.Flags().Changed("since"):
		t, err := parseSince(since, time.Now())
		if err != nil {
			return eventlog.Start{}, false, err
		}
		return eventlog.FromTime(t), true, nil
	}
	return eventlog.Start{}, false, nil
}

// logFilters returns the filters of --group and --peer.
func logFilters(groups, peers []string) []eventlog.Filter {
	var out []eventlog.Filter
	if len(groups) > 0 {
		out = append(out, eventlog.FromGroups(groups...))
	}
	if len(peers) > 0 {
		out = append(out, eventlog.FromPeers(peers...))
	}
	return out
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
func formatEvent(e eventlog.Event) ([]byte, error) {
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
func (ew *eventWriter) Write(e eventlog.Event) error {
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
