package main

// "peerbus stats" and "peerbus top": the per-tag statistics of the
// peers, gathered with the NATS micro STATS request every serving peer
// answers (see peer/micro.go).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/spf13/cobra"

	"github.com/peerbus/peerbus/peer"
)

// statsQuiet is how long a stats gathering waits after the last reply.
const statsQuiet = 300 * time.Millisecond

// peerStats is one peer's statistics, as "stats --json" prints them.
type peerStats struct {
	ID      string     `json:"id"`
	Name    string     `json:"name"`
	Group   string     `json:"group,omitempty"`
	Node    string     `json:"node,omitempty"`
	Started time.Time  `json:"started"`
	Tags    []tagStats `json:"tags"`
}

// tagStats is one tag's statistics on one peer.
type tagStats struct {
	Tag          string            `json:"tag"`
	Calls        uint64            `json:"calls"`
	Errors       uint64            `json:"errors"`
	ErrorsByCode map[string]uint64 `json:"errors_by_code,omitempty"`
	InFlight     int64             `json:"in_flight"`
	Rate         float64           `json:"rate"` // calls per second (since the peer started; top: in the interval)
	Mean         time.Duration     `json:"mean_ns"`
	P50          time.Duration     `json:"p50_ns"`
	P90          time.Duration     `json:"p90_ns"`
	P99          time.Duration     `json:"p99_ns"`
	LastError    string            `json:"last_error,omitempty"`

	hist peer.Histogram
}

// statsFlags holds the flags of "peerbus stats" and "peerbus top".
type statsFlags struct {
	server   string
	group    string
	tag      string
	asJSON   bool
	timeout  time.Duration
	interval time.Duration
	count    int
}

func init() {
	rootCmd.AddCommand(newStatsCmd())
	rootCmd.AddCommand(newTopCmd())
}

// newStatsCmd builds the "stats" command.
func newStatsCmd() *cobra.Command {
	f := &statsFlags{}
	cmd := &cobra.Command{
		Use:   "stats [flags]",
		Short: "Show the per-tag statistics of the peers",
		Long: `Show, for every peer of the bus and every tag it serves, the requests it
served: calls, calls per second since the peer started, errors (by code under
--json), requests in flight, and processing time quantiles (p50, p99) since
the tag was registered.

The statistics come from the NATS micro STATS request ($SRV.STATS.peerbus)
that every serving peer answers, so "nats micro stats peerbus" shows them too.
Local pass-through calls of a Go peer are not counted.

--json prints a JSON array of peers, each with "tags": calls, errors,
errors_by_code, in_flight, rate, mean_ns, p50_ns, p90_ns, p99_ns, last_error.`,
		Example: `  peerbus stats
  peerbus stats --group workers --tag multiply
  peerbus stats --json | jq '.[].tags[] | select(.errors > 0)'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runStats(cmd, f) },
	}
	addStatsFlags(cmd, f)
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print a JSON array")
	return cmd
}

// addStatsFlags adds the flags stats and top share.
func addStatsFlags(cmd *cobra.Command, f *statsFlags) {
	fl := cmd.Flags()
	fl.StringVarP(&f.group, "group", "g", "", "only peers of this group")
	fl.StringVar(&f.tag, "tag", "", "only this tag")
	fl.DurationVarP(&f.timeout, "timeout", "t", 5*time.Second, "how long to wait for answers at most")
	addServerFlag(cmd, &f.server)
}

// runStats runs "peerbus stats".
func runStats(cmd *cobra.Command, f *statsFlags) error {
	if f.timeout <= 0 {
		return fmt.Errorf("--timeout must be positive, not %v", f.timeout)
	}
	nc, err := dialServer(f.server)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, stop := signalContext(cmd.Context())
	defer stop()
	ps, err := gatherStats(ctx, nc, f)
	if err != nil {
		return err
	}
	now := time.Now()
	for i := range ps {
		up := now.Sub(ps[i].Started).Seconds()
		for j := range ps[i].Tags {
			if up > 0 {
				ps[i].Tags[j].Rate = float64(ps[i].Tags[j].Calls) / up
			}
		}
	}
	return printPeerList(cmd, f.asJSON, ps, len(ps), func(out io.Writer) error { return writeStatsTable(out, ps) })
}

// gatherStats asks every peer for its statistics and returns them sorted
// by name, id and tag, filtered by f's group and tag. It waits statsQuiet
// after the last reply, at most f.timeout.
func gatherStats(ctx context.Context, nc *nats.Conn, f *statsFlags) ([]peerStats, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	// Bound replies (see peer.ReplySubject): each peer answers on
	// "<inbox>.<its id>", the server's no-responders status comes on
	// inbox, and a peer that does not bind its replies answers on inbox.
	base := nc.NewInbox()
	inbox := base + "." + peer.BoundReplyMark + "stats"
	ch := make(chan *nats.Msg, 256)
	sub, err := nc.ChanSubscribe(base+".>", ch)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(micro.APIPrefix+".STATS."+peer.MicroService, inbox, nil); err != nil {
		return nil, err
	}
	var out []peerStats
	quiet := time.NewTimer(f.timeout)
	defer quiet.Stop()
	for {
		select {
		case m := <-ch:
			quiet.Reset(statsQuiet)
			if m.Header.Get("Status") == "503" {
				return nil, nil // no peer serves anything
			}
			ps, ok := decodeStats(m.Data)
			if from, bound := peer.BoundResponder(m.Subject); bound && from != ps.ID {
				continue // a peer answering in another's name
			}
			if !ok || (f.group != "" && ps.Group != f.group) {
				continue
			}
			if f.tag != "" {
				ps.Tags = slices.DeleteFunc(ps.Tags, func(t tagStats) bool { return t.Tag != f.tag })
				if len(ps.Tags) == 0 {
					continue
				}
			}
			out = append(out, ps)
		case <-quiet.C:
			sortStats(out)
			return out, nil
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				sortStats(out)
				return out, nil
			}
			return nil, ctx.Err()
		}
	}
}

// decodeStats decodes one peer's STATS reply; ok is false for a reply
// that is not a peerbus peer's.
func decodeStats(data []byte) (peerStats, bool) {
	var st micro.Stats
	if err := json.Unmarshal(data, &st); err != nil || st.Type != micro.StatsResponseType || st.Name != peer.MicroService || st.ID == "" {
		return peerStats{}, false
	}
	ps := peerStats{ID: st.ID, Name: st.Metadata["peer_name"], Group: st.Metadata["group"], Node: st.Metadata["node"],
		Started: st.Started, Tags: []tagStats{}}
	for _, e := range st.Endpoints {
		if e == nil {
			continue
		}
		var d peer.MicroStatsData
		if len(e.Data) > 0 {
			_ = json.Unmarshal(e.Data, &d) // extra data is optional
		}
		ts := tagStats{Tag: e.Name, Calls: uint64(max(e.NumRequests, 0)), Errors: uint64(max(e.NumErrors, 0)),
			ErrorsByCode: d.ErrorsByCode, InFlight: d.InFlight, Mean: e.AverageProcessingTime,
			P50: time.Duration(d.P50), P90: time.Duration(d.P90), P99: time.Duration(d.P99),
			LastError: e.LastError, hist: d.Histogram()}
		ps.Tags = append(ps.Tags, ts)
	}
	slices.SortFunc(ps.Tags, func(a, b tagStats) int { return strings.Compare(a.Tag, b.Tag) })
	return ps, true
}

func sortStats(ps []peerStats) {
	slices.SortFunc(ps, func(a, b peerStats) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// writeStatsTable prints one row per peer and tag.
func writeStatsTable(w io.Writer, ps []peerStats) error {
	return writeStatsTableAs(w, ps, "PEER\tID\tTAG\tCALLS\tRATE/s\tERRORS\tINFLIGHT\tP50\tP99",
		func(p peerStats, t tagStats) string {
			return fmt.Sprintf("%s\t%s\t%s\t%d\t%s\t%d\t%d\t%s\t%s", orDash(p.Name), shortID(p.ID), t.Tag, t.Calls,
				formatRate(t.Rate), t.Errors, t.InFlight, formatLatency(t.P50, t.Calls), formatLatency(t.P99, t.Calls))
		})
}

// writeStatsTableAs prints an aligned table: the header, then row's line
// for every peer and tag.
func writeStatsTableAs(w io.Writer, ps []peerStats, header string, row func(peerStats, tagStats) string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, p := range ps {
		for _, t := range p.Tags {
			fmt.Fprintln(tw, row(p, t))
		}
	}
	return tw.Flush()
}

// shortID is the first 8 characters of a peer id.
func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// formatRate prints a rate with a precision fit for its size.
func formatRate(r float64) string {
	switch {
	case r == 0:
		return "0"
	case r < 10:
		return fmt.Sprintf("%.2f", r)
	case r < 1000:
		return fmt.Sprintf("%.1f", r)
	}
	return fmt.Sprintf("%.0f", r)
}

// formatLatency prints a quantile with three significant digits, "-"
// without calls.
func formatLatency(d time.Duration, calls uint64) string {
	if calls == 0 {
		return "-"
	}
	switch {
	case d < time.Microsecond:
		return d.String()
	case d < time.Millisecond:
		return fmt.Sprintf("%.3gµs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.3gms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.3gs", d.Seconds())
}
