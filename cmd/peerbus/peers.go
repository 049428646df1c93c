package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/peerbus/peerbus/peer"
)

// peersFlags holds the flags of "peerbus peers".
type peersFlags struct {
	server  string
	group   string
	hub     bool
	tag     string
	asJSON  bool
	timeout time.Duration
}

func init() { rootCmd.AddCommand(newPeersCmd()) }

// newPeersCmd builds the "peers" command.
func newPeersCmd() *cobra.Command {
	f := &peersFlags{}
	cmd := &cobra.Command{
		Use:   "peers [flags]",
		Short: "List the live peers of the bus",
		Long: `List the live peers of the bus, as a table or (--json) as a JSON array of
peer descriptions: id, name, group, hub, host, pid, node, started, tags.
The CLI's own client is not a peer and is not listed.`,
		Example: `  peerbus peers
  peerbus peers --group workers
  peerbus peers --hub --json
  peerbus peers --tag multiply --json | jq -r '.[].id'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runPeers(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.group, "group", "g", "", "only peers of this group")
	fl.BoolVar(&f.hub, "hub", false, "only hub peers")
	fl.StringVar(&f.tag, "tag", "", "only peers offering this tag")
	fl.BoolVar(&f.asJSON, "json", false, "print a JSON array")
	fl.DurationVarP(&f.timeout, "timeout", "t", 5*time.Second, "how long to wait for answers at most")
	addServerFlag(cmd, &f.server)
	return cmd
}

// runPeers runs "peerbus peers".
func runPeers(cmd *cobra.Command, f *peersFlags) error {
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
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	// The filters go with the query: only the matching peers answer.
	// With an identity the bus has a policy: take only the answers
	// bound to their peer's id (docs/PROTOCOL.md, "Bound answers").
	id, err := cliCreds.loadIdentity(os.Getenv)
	if err != nil {
		return err
	}
	q := peer.PeerQuery{Group: f.group, Hub: f.hub, Tag: f.tag, Bound: id != nil}
	kept, err := peer.QueryPeersMatching(ctx, nc, q, 0)
	if err != nil {
		return err
	}
	return printPeerList(cmd, f.asJSON, kept, len(kept), func(out io.Writer) error {
		return writePeerTable(out, kept, time.Now())
	})
}

// writePeerTable prints infos as an aligned table. The TAGS column holds
// every tag; a long list is wrapped on continuation lines whose other
// cells are empty.
func writePeerTable(w io.Writer, infos []peer.Info, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tGROUP\tHUB\tHOST\tNODE\tTAGS\tAGE")
	for _, i := range infos {
		hub := "-"
		if i.Hub {
			hub = "yes"
		}
		tags := wrapTags(i.Tags, tagsWidth)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			i.ID, orDash(i.Name), orDash(i.Group), hub, orDash(i.Host), orDash(i.Node),
			tags[0], age(now.Sub(i.Started)))
		for _, more := range tags[1:] {
			fmt.Fprintf(tw, "\t\t\t\t\t\t%s\t\n", more)
		}
	}
	return tw.Flush()
}

// tagsWidth is the width at which the TAGS column wraps.
const tagsWidth = 48

// wrapTags joins tags with commas into lines of at most width bytes (a
// longer tag gets a line of its own); every line but the last ends with
// a comma. No tags give "-".
func wrapTags(tags []string, width int) []string {
	if len(tags) == 0 {
		return []string{"-"}
	}
	var lines []string
	cur := ""
	for i, t := range tags {
		if i < len(tags)-1 {
			t += ","
		}
		if cur != "" && len(cur)+len(t) > width {
			lines = append(lines, cur)
			cur = ""
		}
		cur += t
	}
	return append(lines, cur)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// age formats a duration coarsely: 45s, 12m, 3h, 2d.
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// printPeerList prints a list of n peers' rows: v as indented JSON, or
// the table, or "no peers" on stderr when there are none.
func printPeerList(cmd *cobra.Command, asJSON bool, v any, n int, table func(io.Writer) error) error {
	out := cmd.OutOrStdout()
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	if n == 0 {
		fmt.Fprintln(cmd.ErrOrStderr(), "no peers")
		return nil
	}
	return table(out)
}
