package main

// "peerbus log" (the state of the event log and its durable
// subscriptions), the event log settings of "peerbus node", and the
// messages of event log errors shared by emit, watch and replay.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/peer"
)

// logError adds a hint to the event log errors a user can act on.
func logError(err error) error {
	var oe *eventlog.OutcomeError
	if errors.As(err, &oe) && oe.ID != "" {
		err = fmt.Errorf("%w\n(emit it again with --id %s: it is stored once)", err, oe.ID)
	}
	switch {
	case errors.Is(err, eventlog.ErrNoQuorum):
		return fmt.Errorf("%w\n(the log stores events again once a majority of its nodes run and reach each other: "+
			"start the nodes that are down, or mend the network between them)", err)
	case errors.Is(err, eventlog.ErrNoJetStream):
		return fmt.Errorf("%w\n(the node keeps no event log: it runs without JetStream, e.g. with --no-jetstream)", err)
	case errors.Is(err, eventlog.ErrNoLog):
		return fmt.Errorf("%w\n(the node's JetStream did not answer in time: it may still be starting, "+
			"or, in a cluster, fewer than a majority of the nodes run and reach each other)", err)
	case errors.Is(err, eventlog.ErrLogFull):
		return fmt.Errorf("%w\n(the log refuses new events once a limit is reached (node --log-discard new): "+
			"raise the node's --log-max-bytes, --log-max-events or --log-max-age, or use --log-discard old "+
			"to drop the oldest events instead)", err)
	case errors.Is(err, eventlog.ErrUnknownDurable):
		return fmt.Errorf("%w\n(\"peerbus log durables\" lists them; without --must-exist watch creates it)", err)
	}
	return err
}

// logCmdFlags holds the flags of the "log" subcommands.
type logCmdFlags struct {
	server  string
	asJSON  bool
	timeout time.Duration
}

func init() { rootCmd.AddCommand(newLogCmd()) }

// newLogCmd builds the "log" command and its subcommands.
func newLogCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "log",
		Short: "Show the event log and manage its durable subscriptions",
		Long: `The event log is the JetStream stream PEERBUS_EVENTS that keeps every emitted
(non-transient) event, in order, within its limits (see "peerbus node
--log-max-age" and the other --log-* flags). "peerbus replay" reads it,
"peerbus watch --all/--from-seq/--since/--durable" reads it and follows it.`,
		Example: `  peerbus log info
  peerbus log durables
  peerbus log delete-durable invoicing`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newLogInfoCmd(), newLogDurablesCmd(), newLogDeleteDurableCmd())
	return cmd
}

// addLogCmdFlags adds the flags every "log" subcommand has.
func addLogCmdFlags(cmd *cobra.Command, f *logCmdFlags, withJSON bool) {
	fl := cmd.Flags()
	if withJSON {
		fl.BoolVar(&f.asJSON, "json", false, "print JSON")
	}
	fl.DurationVarP(&f.timeout, "timeout", "t", 10*time.Second, "how long to wait for the node")
	addServerFlag(cmd, &f.server)
}

// logClient connects to the node for a "log" subcommand and returns
// the client and a context bounded by --timeout and signals.
func logClient(cmd *cobra.Command, f *logCmdFlags) (*client, context.Context, func(), error) {
	if f.timeout <= 0 {
		return nil, nil, nil, fmt.Errorf("--timeout must be positive, not %v", f.timeout)
	}
	c, err := openClient(f.server, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, stop := signalContext(cmd.Context())
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	return c, ctx, func() { cancel(); stop(); c.Close() }, nil
}

func newLogInfoCmd() *cobra.Command {
	f := &logCmdFlags{}
	cmd := &cobra.Command{
		Use:   "info [flags]",
		Short: "Show the state and limits of the event log",
		Long: `Show the event log: stored events and bytes, first and last sequence and
time, limits, storage, replicas and stream leader, and the durable
subscriptions with their positions. --json prints the whole state as one
JSON object (durations in nanoseconds, as in the Go type eventlog.Info).
The log is created (with the default limits) when it does not exist yet.`,
		Example: `  peerbus log info
  peerbus log info --json | jq .events`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := logClient(cmd, f)
			if err != nil {
				return err
			}
			defer done()
			li, err := c.lg.Info(ctx)
			if err != nil {
				return logError(err)
			}
			if f.asJSON {
				return writeJSON(cmd.OutOrStdout(), li)
			}
			return writeLogInfo(cmd.OutOrStdout(), li)
		},
	}
	addLogCmdFlags(cmd, f, true)
	return cmd
}

func newLogDurablesCmd() *cobra.Command {
	f := &logCmdFlags{}
	cmd := &cobra.Command{
		Use:   "durables [flags]",
		Short: "List the durable subscriptions of the event log",
		Long: `List the durable subscriptions ("peerbus watch --durable", Log.SubscribeDurable): name,
pattern, events pending, events delivered and not acknowledged, the last
delivered and the acknowledged sequence, and whether a subscriber is active.
--json prints a JSON array (durations in nanoseconds).`,
		Example: `  peerbus log durables
  peerbus log durables --json | jq -r '.[].name'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := logClient(cmd, f)
			if err != nil {
				return err
			}
			defer done()
			li, err := c.lg.Info(ctx)
			if err != nil {
				return logError(err)
			}
			if f.asJSON {
				return writeJSON(cmd.OutOrStdout(), li.Durables)
			}
			if len(li.Durables) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "no durable subscriptions")
				return nil
			}
			return writeDurables(cmd.OutOrStdout(), li.Durables, "")
		},
	}
	addLogCmdFlags(cmd, f, true)
	return cmd
}

func newLogDeleteDurableCmd() *cobra.Command {
	f := &logCmdFlags{}
	cmd := &cobra.Command{
		Use:   "delete-durable [flags] NAME",
		Short: "Delete a durable subscription and its position in the log",
		Long: `Delete the durable subscription NAME: its position in the log is forgotten, and
a watcher still using it stops receiving events. The events stay in the log.
Fails (exit 1) when there is no durable of that name.`,
		Example: `  peerbus log delete-durable billing-audit`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := logClient(cmd, f)
			if err != nil {
				return err
			}
			defer done()
			if err := c.lg.DeleteDurable(ctx, args[0]); err != nil {
				if errors.Is(err, eventlog.ErrUnknownDurable) {
					return fmt.Errorf("%w\n(\"peerbus log durables\" lists them)", err)
				}
				return logError(err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "deleted durable %q\n", args[0])
			return nil
		},
	}
	addLogCmdFlags(cmd, f, false)
	return cmd
}

// writeJSON prints v as indented JSON, without HTML escaping (subjects
// keep their '>').
func writeJSON(w io.Writer, v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return err
	}
	_, err := w.Write(b.Bytes())
	return err
}

// writeLogInfo prints li for people.
func writeLogInfo(w io.Writer, li eventlog.Info) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s:\t%s\n", k, fmt.Sprintf(format, a...)) }
	row("stream", "%s (%s)", li.Stream, strings.Join(li.Subjects, ", "))
	row("events", "%d (%s)", li.Events, formatBytes(int64(li.Bytes)))
	if li.Events == 0 {
		row("first", "- (next sequence %d)", li.LastSeq+1)
		row("last", "-")
	} else {
		row("first", "seq %d at %s", li.FirstSeq, formatTime(li.FirstTime))
		row("last", "seq %d at %s", li.LastSeq, formatTime(li.LastTime))
	}
	if li.Deleted > 0 {
		row("deleted", "%d", li.Deleted)
	}
	maxAge := "none"
	if li.MaxAge > 0 {
		maxAge = formatDuration(li.MaxAge)
	}
	maxBytes := "none"
	if li.MaxBytes > 0 {
		maxBytes = formatBytes(li.MaxBytes)
	}
	maxEvents := "none"
	if li.MaxEvents > 0 {
		maxEvents = strconv.FormatInt(li.MaxEvents, 10)
	}
	discard := "old (drop the oldest events)"
	if li.Discard == "new" {
		discard = "new (refuse new events)"
	}
	row("limits", "max age %s, max bytes %s, max events %s", maxAge, maxBytes, maxEvents)
	row("when full", "discard %s", discard)
	row("dedupe window", "%s", formatDuration(li.Duplicates))
	repl := fmt.Sprintf("%d", li.Replicas)
	if li.Leader != "" {
		repl += ", leader " + li.Leader
	}
	row("storage", "%s, replicas %s", li.Storage, repl)
	row("created", "%s", formatTime(li.Created))
	row("consumers", "%d (%d durable)", li.Consumers, len(li.Durables))
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(li.Durables) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	return writeDurables(w, li.Durables, "")
}

// writeDurables prints durables as a table.
func writeDurables(w io.Writer, ds []eventlog.DurableInfo, indent string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, indent+"DURABLE\tPATTERN\tPENDING\tUNACKED\tDELIVERED\tACKED\tMAX DELIVER\tACTIVE\tLAST ACTIVE")
	for _, d := range ds {
		active := "-"
		if d.Active {
			active = "yes"
		}
		last := "-"
		if !d.LastActive.IsZero() {
			last = formatTime(d.LastActive)
		}
		pattern := d.Pattern
		if pattern == "" {
			pattern = strings.Join(d.Filters, ",")
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", indent, d.Name, pattern, d.Pending, d.AckPending,
			d.Delivered, d.AckFloor, d.MaxDeliver, active, last)
	}
	return tw.Flush()
}

// formatTime formats t for tables: UTC, milliseconds.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

// formatDuration formats d with days for long durations.
func formatDuration(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// formatBytes formats n bytes with a binary unit.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// Environment variables of the event log settings of "peerbus node"
// (PEERBUS_LOG_REPLICAS belongs to package bus).
const (
	envLogMaxAge    = "PEERBUS_LOG_MAX_AGE"
	envLogMaxBytes  = "PEERBUS_LOG_MAX_BYTES"
	envLogMaxEvents = "PEERBUS_LOG_MAX_EVENTS"
	envLogMemory    = "PEERBUS_LOG_MEMORY"
	envLogDedupe    = "PEERBUS_LOG_DEDUPE_WINDOW"
	envLogDiscard   = "PEERBUS_LOG_DISCARD"
)

// logFlags holds the event log flags of "peerbus node".
type logFlags struct {
	maxAge    string
	maxBytes  string
	maxEvents string
	memory    bool
	dedupe    string
	discard   string
}

// addLogFlags adds the event log flags to a node's flag set.
func addLogFlags(fs *pflag.FlagSet, f *logFlags) {
	fs.StringVar(&f.maxAge, "log-max-age", "", "keep events this long, e.g. 72h or 30d; none = no limit (default 7d) [$"+envLogMaxAge+"]")
	fs.StringVar(&f.maxBytes, "log-max-bytes", "", "bound the log's size, e.g. 512M or 8G; none = no limit (default 1G) [$"+envLogMaxBytes+"]")
	fs.StringVar(&f.maxEvents, "log-max-events", "", "bound the number of stored events; none = no limit (default none) [$"+envLogMaxEvents+"]")
	fs.StringVar(&f.discard, "log-discard", "", "when a limit is reached: old = drop the oldest events, new = refuse new ones (default old) [$"+envLogDiscard+"]")
	fs.StringVar(&f.dedupe, "log-dedupe-window", "", "how long an event id is remembered, so a retried emit is stored once (default 2m) [$"+envLogDedupe+"]")
	fs.BoolVar(&f.memory, "log-memory", false, "keep a new log in memory (lost when the node stops) instead of files [$"+envLogMemory+"]")
}

// logSettings are the event log settings a node was given; nil fields
// were given neither as a flag nor in the environment.
type logSettings struct{ eventlog.Settings }

// given reports whether any setting was given.
func (s logSettings) given() bool { return !s.IsZero() }

// nodeLogSettings reads the event log settings of a node: the
// environment (through lookup), then the flags that were set.
func nodeLogSettings(fs *pflag.FlagSet, f *logFlags, lookup func(string) (string, bool)) (logSettings, error) {
	var s logSettings
	get := func(flag, env, fval string) (string, string, bool) {
		if fs.Changed(flag) {
			return fval, "--" + flag, true
		}
		if v, ok := lookup(env); ok && strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v), env, true
		}
		return "", "", false
	}
	if v, from, ok := get("log-max-age", envLogMaxAge, f.maxAge); ok {
		d, err := parseLimitDuration(v)
		if err != nil {
			return s, fmt.Errorf("%s: %w", from, err)
		}
		s.MaxAge = &d
	}
	if v, from, ok := get("log-max-bytes", envLogMaxBytes, f.maxBytes); ok {
		n, err := parseLimitSize(v)
		if err != nil {
			return s, fmt.Errorf("%s: %w", from, err)
		}
		s.MaxBytes = &n
	}
	if v, from, ok := get("log-max-events", envLogMaxEvents, f.maxEvents); ok {
		var n int64
		if !isNone(v) {
			var err error
			n, err = strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return s, fmt.Errorf("%s: %q is not a number of events (or none)", from, v)
			}
		}
		s.MaxEvents = &n
	}
	if v, from, ok := get("log-dedupe-window", envLogDedupe, f.dedupe); ok {
		d, err := parseDays(v)
		if err != nil || d <= 0 {
			return s, fmt.Errorf("%s: %q is not a positive duration (e.g. 2m, 1h)", from, v)
		}
		s.Duplicates = &d
	}
	if v, from, ok := get("log-discard", envLogDiscard, f.discard); ok {
		switch strings.ToLower(v) {
		case "old":
			s.DiscardNew = new(false)
		case "new":
			s.DiscardNew = new(true)
		default:
			return s, fmt.Errorf("%s: %q: want old or new", from, v)
		}
	}
	if fs.Changed("log-memory") {
		s.Memory = new(f.memory)
	} else if v, ok := lookup(envLogMemory); ok && strings.TrimSpace(v) != "" {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return s, fmt.Errorf("%s=%q is not a boolean", envLogMemory, v)
		}
		s.Memory = &b
	}
	return s, nil
}

// isNone reports whether a limit value means "no limit".
func isNone(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "none", "unlimited", "0", "-1":
		return true
	}
	return false
}

// parseDays parses a Go duration, or a whole number of days ("30d").
func parseDays(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if n, ok := strings.CutSuffix(v, "d"); ok {
		if days, err := strconv.ParseInt(n, 10, 64); err == nil && days >= 0 && days <= math.MaxInt64/int64(24*time.Hour) {
			return time.Duration(days) * 24 * time.Hour, nil
		}
	}
	return time.ParseDuration(v)
}

// parseLimitDuration parses a max age: a positive duration, or none
// (returned as -1).
func parseLimitDuration(v string) (time.Duration, error) {
	if isNone(v) {
		return -1, nil
	}
	d, err := parseDays(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a duration (e.g. 72h, 30d) or none", v)
	}
	return d, nil
}

// parseLimitSize parses a size with an optional K, M, G or T suffix
// (powers of 1024), or none (returned as -1).
func parseLimitSize(v string) (int64, error) {
	if isNone(v) {
		return -1, nil
	}
	t := strings.ToUpper(strings.TrimSpace(v))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	for i, u := range []string{"K", "M", "G", "T"} {
		if s, ok := strings.CutSuffix(t, u); ok {
			mult, t = int64(1)<<(10*(i+1)), s
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is not a size (e.g. 1073741824, 512M, 8G) or none", v)
	}
	return n * mult, nil
}

// logApplyTimeout bounds how long a starting node tries to apply its
// event log settings (JetStream may still be electing leaders).
const logApplyTimeout = 30 * time.Second

// applyNodeLog applies a node's event log settings to the log on the
// bus nc connects to, creating the log when it does not exist. Only the
// settings that were given change; the others keep the log's current
// values (the defaults for a new log). With no settings given it does
// nothing: the log is left as it is.
func applyNodeLog(ctx context.Context, nc *nats.Conn, s logSettings, log *slog.Logger) error {
	if !s.given() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, logApplyTimeout)
	defer cancel()
	p, err := peer.New(nc, peer.AsClient(), peer.WithCallTimeout(logApplyTimeout))
	if err != nil {
		return err
	}
	defer p.Close()
	lg, err := eventlog.New(p)
	if err != nil {
		return err
	}
	res, err := lg.Configure(ctx, s.Settings)
	switch {
	case errors.Is(err, eventlog.ErrInvalidOption) && s.Memory != nil:
		return fmt.Errorf("--log-memory=%v: %w", *s.Memory, err)
	case err != nil:
		return fmt.Errorf("event log settings (--log-*): %w", err)
	}
	li := res.Info
	log.Info("event log settings applied", "created", res.Created, "max_age", li.MaxAge, "max_bytes", li.MaxBytes,
		"max_events", li.MaxEvents, "discard", li.Discard, "dedupe_window", li.Duplicates, "storage", li.Storage,
		"replicas", li.Replicas, "events", li.Events)
	return nil
}
