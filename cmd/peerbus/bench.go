package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/peerbus/peerbus/internal/bench"
)

// benchFlags holds the flags of "peerbus bench".
type benchFlags struct {
	duration time.Duration
	rounds   int
	asJSON   bool
	only     []string
	peers    int
}

func init() { rootCmd.AddCommand(newBenchCmd()) }

// newBenchCmd builds the "bench" command and its hidden helper
// "bench baseline-node".
func newBenchCmd() *cobra.Command {
	f := &benchFlags{}
	var list strings.Builder
	for _, c := range bench.Cases() {
		fmt.Fprintf(&list, "  %-14s %s\n  %-14s vs %s\n", c.Name, c.What, "", c.Baseline)
	}
	cmd := &cobra.Command{
		Use:   "bench [--duration D] [--rounds N] [--json] [--only NAME,...]",
		Short: "Measure peerbus against raw NATS and Go baselines on this machine",
		Long: `Measure peerbus beside its raw baselines on this machine: nodes, peers and
pipes are started on loopback (free ports, temporary data directories that are
removed at the end), and each case runs its peerbus side and its baseline in
alternating rounds (peerbus, raw, raw, peerbus, ...) so that other load on the
machine hits both. Each side measures for --duration in total, cut into
--rounds rounds; a row reports the median of the rounds.

The table has the peerbus value, the baseline's, and the ratio: the relative
performance of peerbus, value/baseline when higher is better (throughput) and
baseline/value when lower is better (latency, memory, start-up time). 1.00x is
as good as the baseline, 0.50x half as good. A progress line goes to stderr.

Cases:
` + list.String(),
		Example: `  peerbus bench
  peerbus bench --duration 3s --rounds 7
  peerbus bench --only call,call-2nodes --json | jq '.results[] | {name, ratio}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runBench(cmd, f) },
	}
	fl := cmd.Flags()
	fl.DurationVarP(&f.duration, "duration", "d", bench.DefaultDuration, "measuring time of each side of a case, over all its rounds")
	fl.IntVar(&f.rounds, "rounds", bench.DefaultRounds, "rounds per side (the median is reported)")
	fl.BoolVar(&f.asJSON, "json", false, "print the report as JSON")
	fl.StringSliceVar(&f.only, "only", nil, "run only these cases (comma separated)")
	fl.IntVar(&f.peers, "peers", bench.PresencePeers, "peers of the presence-* cases, each on its own connection (about 2 file descriptors each)")

	var dataDir string
	base := &cobra.Command{
		Use:    "baseline-node --data-dir DIR",
		Short:  "Run a bare NATS server with JetStream (the baseline process of node-rss)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" {
				return fmt.Errorf("--data-dir is required")
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			return bench.RunBareServer(ctx, dataDir, cmd.OutOrStdout())
		},
	}
	base.Flags().StringVar(&dataDir, "data-dir", "", "JetStream storage directory")
	cmd.AddCommand(base)
	return cmd
}

// runBench runs "peerbus bench".
func runBench(cmd *cobra.Command, f *benchFlags) error {
	if f.duration <= 0 {
		return fmt.Errorf("--duration must be positive, not %v", f.duration)
	}
	if f.rounds <= 0 {
		return fmt.Errorf("--rounds must be positive, not %d", f.rounds)
	}
	if f.peers < 2 || f.peers > 100_000 {
		return fmt.Errorf("--peers must be between 2 and 100000, not %d", f.peers)
	}
	bench.PresencePeers = f.peers
	if _, err := bench.Select(f.only); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: own executable: %w", err)
	}
	env, err := bench.NewEnv("")
	if err != nil {
		return err
	}
	defer env.Close()
	childEnv := withoutPeerbusEnv(os.Environ())
	env.NodeCommand = func(dir string) *exec.Cmd {
		c := exec.Command(exe, "node", "--listen", "127.0.0.1:-1", "--data-dir", dir,
			"--name", "bench-rss", "--log-level", "error")
		c.Env = childEnv
		return c
	}
	env.BareCommand = func(dir string) *exec.Cmd {
		c := exec.Command(exe, "bench", "baseline-node", "--data-dir", dir)
		c.Env = childEnv
		return c
	}

	ctx, stop := signalContext(cmd.Context())
	defer stop()
	prog := newProgress(cmd.ErrOrStderr())
	rep, err := bench.Run(ctx, env, bench.Config{
		Duration: f.duration, Rounds: f.rounds, Only: f.only, Progress: prog.show,
	})
	prog.clear()
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	out := cmd.OutOrStdout()
	if f.asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else if err := writeBenchTable(out, rep); err != nil {
		return err
	}
	for _, e := range rep.Skipped {
		fmt.Fprintln(cmd.ErrOrStderr(), "peerbus bench: skipped", e)
	}
	if len(rep.Errors) > 0 {
		for _, e := range rep.Errors {
			fmt.Fprintln(cmd.ErrOrStderr(), "peerbus bench:", e)
		}
		return fmt.Errorf("%d of the cases failed", len(rep.Errors))
	}
	return nil
}

// withoutPeerbusEnv drops PEERBUS_* variables, so a node started by the
// benchmark is not configured by the caller's environment.
func withoutPeerbusEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "PEERBUS_") {
			out = append(out, kv)
		}
	}
	return out
}

// writeBenchTable prints the report as a table: names left-aligned,
// numbers right-aligned.
func writeBenchTable(w io.Writer, rep bench.Report) error {
	fmt.Fprintf(w, "peerbus bench: %s %s/%s, %d CPUs, %s per side in %d rounds (medians)\n\n",
		rep.Go, rep.OS, rep.Arch, rep.CPUs, rep.Duration, rep.Rounds)
	rows := [][]string{{"name", "peerbus", "baseline", "ratio", "unit"}}
	for _, r := range rep.Results {
		rows = append(rows, []string{r.Name, formatValue(r.Value), formatValue(r.Baseline),
			strconv.FormatFloat(r.Ratio, 'f', 2, 64) + "x", r.Unit})
	}
	width := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	for _, row := range rows {
		for i, c := range row {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			switch i {
			case 0:
				b.WriteString(c + pad)
			case len(row) - 1:
				b.WriteString("  " + c)
			default:
				b.WriteString("  " + pad + c)
			}
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "\nratio: peerbus relative to the baseline (1.00x as good, below 1 worse); took %s\n", rep.Elapsed)
	_, err := io.WriteString(w, b.String())
	return err
}

// formatValue prints v with about three significant digits.
func formatValue(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

// progress shows what the benchmark does on one line of a terminal, or
// a line per case elsewhere.
type progress struct {
	w    io.Writer
	tty  bool
	last string
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progress) show(s bench.Progress) {
	if s.Step == "done" {
		return
	}
	line := fmt.Sprintf("bench [%d/%d] %s: %s", s.Index, s.Total, s.Case, s.Step)
	if s.Round > 0 {
		line += fmt.Sprintf(" round %d/%d", s.Round, s.Rounds)
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.last = line
		return
	}
	if s.Step == "setup" { // one line per case
		fmt.Fprintln(p.w, line)
	}
}

// clear removes the progress line from a terminal.
func (p *progress) clear() {
	if p.tty && p.last != "" {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
