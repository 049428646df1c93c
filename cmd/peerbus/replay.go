package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/peerbus/peerbus/eventlog"
)

// replayFlags holds the flags of "peerbus replay".
type replayFlags struct {
	server  string
	groups  []string
	peers   []string
	fromSeq uint64
	since   string
	limit   int
	asJSON  bool
	timeout time.Duration
}

func init() { rootCmd.AddCommand(newReplayCmd()) }

// newReplayCmd builds the "replay" command.
func newReplayCmd() *cobra.Command {
	f := &replayFlags{}
	cmd := &cobra.Command{
		Use:   "replay [flags] PATTERN",
		Short: "Print the stored events matching a pattern, then exit",
		Long: `Print the events of the event log whose name matches PATTERN, oldest first,
then exit: every stored event, or those from log sequence --from-seq, or
those stored since --since (a duration before now, or an RFC 3339 time).
Only the events stored when replay starts are printed; "peerbus watch --all"
goes on with new ones.

The output is a table (SEQ, TIME, NAME, PEER, GROUP, DATA), or with --json
one JSON object per event, as "peerbus watch" prints them:
  {"id":..,"name":..,"peer":..,"group":..,"time":..,"seq":..,"data":<JSON>}
In PATTERN, '*' matches one dot-separated token and a final '>' matches one
or more. --group and --peer keep events of these groups or peers only.`,
		Example: `  peerbus replay '>'
  peerbus replay 'order.>' --since 1h
  peerbus replay 'order.created' --from-seq 1200 --group shop --json | jq .data
  peerbus replay '>' --limit 10`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runReplay(cmd, f, args[0]) },
	}
	fl := cmd.Flags()
	fl.StringSliceVarP(&f.groups, "group", "g", nil, "only events from peers of these groups (repeatable)")
	fl.StringSliceVarP(&f.peers, "peer", "p", nil, "only events from these peer ids (repeatable)")
	fl.Uint64Var(&f.fromSeq, "from-seq", 0, "start at this log sequence `N`")
	fl.StringVar(&f.since, "since", "", "start at events stored since this long ago (10m, 2h, 1d) or this RFC 3339 `TIME`")
	fl.IntVarP(&f.limit, "limit", "n", 0, "print at most this many events (0: all)")
	fl.BoolVar(&f.asJSON, "json", false, "print one JSON object per event")
	fl.DurationVarP(&f.timeout, "timeout", "t", 0, "give up after this long (0: no limit)")
	addServerFlag(cmd, &f.server)
	return cmd
}

// runReplay runs "peerbus replay".
func runReplay(cmd *cobra.Command, f *replayFlags, pattern string) error {
	if _, err := eventlog.FilterSubjects(pattern, f.groups, f.peers); err != nil {
		return err
	}
	if f.limit < 0 {
		return fmt.Errorf("--limit must not be negative")
	}
	if f.timeout < 0 {
		return fmt.Errorf("--timeout must not be negative")
	}
	start, hasStart, err := logStart(cmd, false, f.fromSeq, f.since)
	if err != nil {
		return err
	}
	var opts []eventlog.ReplayOption
	if hasStart {
		opts = append(opts, start)
	}
	for _, flt := range logFilters(f.groups, f.peers) {
		opts = append(opts, flt)
	}
	c, err := openClient(f.server, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	sigCtx, stop := signalContext(cmd.Context())
	defer stop()
	ctx := sigCtx
	if f.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.timeout)
		defer cancel()
	}

	var out eventPrinter
	if f.asJSON {
		out = &jsonPrinter{w: bufio.NewWriter(cmd.OutOrStdout())}
	} else {
		out = newTablePrinter(cmd.OutOrStdout())
	}
	n := 0
	for e, err := range c.lg.Replay(ctx, pattern, opts...) {
		if err != nil {
			_ = out.Flush()
			switch {
			case sigCtx.Err() != nil:
				return fmt.Errorf("replay interrupted after %d events", n)
			case errors.Is(ctx.Err(), context.DeadlineExceeded):
				return fmt.Errorf("replay: --timeout %v reached after %d events: %w", f.timeout, n, err)
			}
			return logError(err)
		}
		if err := out.Print(e); err != nil {
			return err
		}
		n++
		if f.limit > 0 && n >= f.limit {
			break
		}
	}
	if err := out.Flush(); err != nil {
		return err
	}
	if n == 0 {
		fmt.Fprintln(cmd.ErrOrStderr(), "no events")
	}
	return nil
}

// eventPrinter prints replayed events.
type eventPrinter interface {
	Print(e eventlog.Event) error
	Flush() error
}

// jsonPrinter prints events as JSON lines, buffered.
type jsonPrinter struct{ w *bufio.Writer }

func (p *jsonPrinter) Print(e eventlog.Event) error {
	b, err := formatEvent(e)
	if err != nil {
		return err
	}
	_, err = p.w.Write(b)
	return err
}

func (p *jsonPrinter) Flush() error { return p.w.Flush() }

// tableRows is how many rows the table printer aligns at a time: a long
// replay is printed as it goes, in blocks of that many rows.
const tableRows = 500

// tablePrinter prints events as an aligned table.
// The header is printed with the first event.
type tablePrinter struct {
	tw   *tabwriter.Writer
	rows int
}

func newTablePrinter(w io.Writer) *tablePrinter {
	return &tablePrinter{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
}

func (p *tablePrinter) Print(e eventlog.Event) error {
	if p.rows == 0 {
		fmt.Fprintln(p.tw, "SEQ\tTIME\tNAME\tPEER\tGROUP\tDATA")
	}
	_, err := fmt.Fprintf(p.tw, "%s\t%s\t%s\t%s\t%s\t%s\n", strconv.FormatUint(e.Seq, 10), formatTime(e.Time),
		e.Name, orDash(e.Peer), orDash(e.Group), compactData(e.Data))
	if err != nil {
		return err
	}
	if p.rows++; p.rows%tableRows == 0 {
		return p.tw.Flush()
	}
	return nil
}

func (p *tablePrinter) Flush() error { return p.tw.Flush() }

// compactData returns the payload as one line: compact JSON, or a JSON
// string when it is not JSON.
func compactData(data []byte) []byte {
	raw := jsonOrString(data)
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}
