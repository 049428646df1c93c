package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
)

// clearScreen moves the cursor home and clears the terminal.
const clearScreen = "\x1b[H\x1b[2J"

// newTopCmd builds the "top" command.
func newTopCmd() *cobra.Command {
	f := &statsFlags{}
	cmd := &cobra.Command{
		Use:   "top [flags]",
		Short: "Show the per-tag statistics of the peers, refreshing",
		Long: `Show the table of "peerbus stats" every --interval, like top or nats-top:
calls per second, errors and p50/p99 processing times over the last interval
(the first table counts since each peer started), calls and requests in
flight. On a terminal the table is redrawn in place; otherwise each refresh
prints a header line with the time, then the table, then an empty line.

When the node goes away, top says so on stderr and keeps trying to reconnect;
it goes on once the node is back. It runs until SIGINT, SIGTERM or --count
refreshes.`,
		Example: `  peerbus top
  peerbus top --interval 5s --group workers
  peerbus top --count 3 > snapshot.txt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runTop(cmd, f) },
	}
	addStatsFlags(cmd, f)
	cmd.Flags().DurationVarP(&f.interval, "interval", "i", time.Second, "time between refreshes")
	cmd.Flags().IntVarP(&f.count, "count", "n", 0, "stop after this many refreshes (0: run until interrupted)")
	return cmd
}

// runTop runs "peerbus top".
func runTop(cmd *cobra.Command, f *statsFlags) error {
	if f.interval <= 0 || f.timeout <= 0 {
		return fmt.Errorf("--interval and --timeout must be positive")
	}
	if f.count < 0 {
		return fmt.Errorf("--count must not be negative")
	}
	f.timeout = min(f.timeout, max(f.interval, 500*time.Millisecond))
	out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
	events := make(chan string, 16)
	note := func(s string) {
		select {
		case events <- s:
		default:
		}
	}
	nc, err := dialServer(f.server,
		func(o *nats.Options) error { o.AllowReconnect = true; return nil }, // dialServer's default is none
		nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond), nats.ReconnectJitter(0, 0),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			why := "connection lost"
			if err != nil {
				why = err.Error()
			}
			note("node at " + redactURL(f.server) + " went away (" + why + "); retrying")
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { note("reconnected to " + redactURL(c.ConnectedUrlRedacted())) }))
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, stop := signalContext(cmd.Context())
	defer stop()

	tty := isTerminal(out)
	prev := map[string]tagStats{} // by peer id and tag
	var prevAt time.Time
	tick := time.NewTicker(f.interval)
	defer tick.Stop()
	for n := 0; f.count == 0 || n < f.count; {
		for len(events) > 0 {
			fmt.Fprintln(errOut, "peerbus top: "+<-events)
		}
		if nc.IsConnected() {
			ps, err := gatherStats(ctx, nc, f)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				fmt.Fprintln(errOut, "peerbus top:", err)
			} else {
				now := time.Now()
				rateOver(ps, prev, now, prevAt)
				prevAt = now
				if err := drawTop(out, tty, f.server, now, ps); err != nil {
					return err
				}
				n++
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case s := <-events:
			fmt.Fprintln(errOut, "peerbus top: "+s)
		}
	}
	return nil
}

// rateOver turns the counters of ps into the figures of the interval
// since the previous gathering (prev, taken at prevAt), and remembers
// them in prev. A tag seen for the first time (or whose counters went
// down: a restarted peer) gets its figures since the peer started.
func rateOver(ps []peerStats, prev map[string]tagStats, now, prevAt time.Time) {
	seen := map[string]bool{}
	for i := range ps {
		for j := range ps[i].Tags {
			t := &ps[i].Tags[j]
			key := ps[i].ID + " " + t.Tag
			seen[key] = true
			cur := *t
			p, ok := prev[key]
			prev[key] = cur
			if ok && t.Calls >= p.Calls && t.Errors >= p.Errors && !prevAt.IsZero() {
				d := t.hist.Sub(&p.hist)
				calls := t.Calls - p.Calls
				t.Rate = float64(calls) / now.Sub(prevAt).Seconds()
				t.Errors -= p.Errors
				t.P50, t.P90, t.P99 = d.Quantile(0.5), d.Quantile(0.9), d.Quantile(0.99)
				if calls == 0 {
					t.P50, t.P90, t.P99 = 0, 0, 0
				}
				continue
			}
			if up := now.Sub(ps[i].Started).Seconds(); up > 0 {
				t.Rate = float64(t.Calls) / up
			}
		}
	}
	for k := range prev {
		if !seen[k] {
			delete(prev, k)
		}
	}
}

// drawTop prints one refresh: in place on a terminal, else as plain
// lines.
func drawTop(w io.Writer, tty bool, server string, now time.Time, ps []peerStats) error {
	var b strings.Builder
	if tty {
		b.WriteString(clearScreen)
	}
	tags := 0
	for _, p := range ps {
		tags += len(p.Tags)
	}
	fmt.Fprintf(&b, "peerbus top  %s  %s  peers: %d  tags: %d\n", redactURL(server), now.Format("15:04:05"), len(ps), tags)
	if len(ps) == 0 {
		b.WriteString("no peers\n")
	} else if err := writeTopTable(&b, ps); err != nil {
		return err
	}
	if !tty {
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeTopTable prints the interval's figures, one row per peer and tag.
func writeTopTable(w io.Writer, ps []peerStats) error {
	return writeStatsTableAs(w, ps, "PEER\tID\tTAG\tRATE/s\tERRORS\tP50\tP99\tCALLS\tINFLIGHT",
		func(p peerStats, t tagStats) string {
			lat := t.Calls
			if t.P50 == 0 && t.P99 == 0 {
				lat = 0
			}
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%d", orDash(p.Name), shortID(p.ID), t.Tag, formatRate(t.Rate),
				t.Errors, formatLatency(t.P50, lat), formatLatency(t.P99, lat), t.Calls, t.InFlight)
		})
}
