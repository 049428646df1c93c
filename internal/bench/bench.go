// Package bench measures peerbus against raw baselines: each case runs
// a peerbus operation and the plainest way to do the same thing with the
// libraries peerbus is built on (nats.go, the NATS server, Go sockets),
// on the same machine, in the same run, alternating between the two so
// that load from elsewhere on a shared machine hits both.
//
// The same cases back "peerbus bench" (Run) and the benchmarks of this
// package (go test -bench), which call a case's Setup and its two Sides
// directly.
//
// A case runs its rounds in the order peerbus, raw, raw, peerbus,
// peerbus, raw, … after one warm-up run of each side, and reports the
// median of the rounds. The ratio of a row is the relative performance
// of peerbus: value/baseline when higher is better (throughput),
// baseline/value when lower is better (latency, memory, start-up time).
// 1 means as good as the baseline, 0.5 half as good.
package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Kind says how a case is measured.
type Kind int

const (
	// Latency times every Op of one goroutine: the rows are the median
	// (p50) and the 99th percentile (p99) of a round, in microseconds.
	Latency Kind = iota
	// Rate counts the units Op reports, done by Side.Concurrency
	// goroutines, per second (divided by Case.Scale).
	Rate
	// Sample takes one value per round from Side.Sample.
	Sample
)

// Side is one of the two things a case compares: peerbus, or its
// baseline.
type Side struct {
	// Op does one operation and returns the units of work it did (1 for
	// a call; the events of a batch or of a replay; bytes). It returns
	// once the work is complete (delivered, stored, echoed). Used by
	// Latency and Rate cases.
	Op func(ctx context.Context) (int, error)
	// Concurrency is how many goroutines call Op at once in a Rate case
	// (0 means 1).
	Concurrency int
	// Sample measures one value. Used by Sample cases.
	Sample func(ctx context.Context) (float64, error)
}

// Case is one comparison.
type Case struct {
	// Name identifies the case (--only) and starts its rows' names.
	Name string
	// What describes the peerbus side; Baseline the raw side.
	What, Baseline string
	// Kind says how the sides are measured.
	Kind Kind
	// Unit is the unit of the rows: of the rate (after Scale) for Rate,
	// of the sampled value for Sample; Latency rows are in µs.
	Unit string
	// Scale divides the rate of a Rate case (1e6 for MB/s of bytes).
	Scale float64
	// LowerIsBetter marks a Sample case whose smaller values are better.
	LowerIsBetter bool
	// MaxRounds bounds the rounds of a case whose rounds are slow
	// (Sample cases that start processes or clusters); 0: no bound.
	MaxRounds int
	// MinRounds raises the rounds of a case whose samples vary a lot
	// (cluster start-up, with its elections); 0: no minimum.
	MinRounds int
	// Setup prepares both sides on env. cleanup releases what it made;
	// it is called even when measuring fails.
	Setup func(ctx context.Context, env *Env) (peerbus, raw Side, cleanup func(), err error)
}

// Result is one row of a report.
type Result struct {
	// Case is the name of the case that produced the row.
	Case string `json:"case"`
	// Name names the row: the case name, with " p50" or " p99" for
	// latency rows.
	Name string `json:"name"`
	// Value is the peerbus measurement, the median of the rounds.
	Value float64 `json:"value"`
	// Baseline is the raw measurement, the median of the rounds.
	Baseline float64 `json:"baseline"`
	// Ratio is the relative performance of peerbus (see the package
	// documentation): above 1 better than the baseline, below 1 worse.
	Ratio float64 `json:"ratio"`
	// Unit is the unit of Value and Baseline.
	Unit string `json:"unit"`
	// Better is "higher" or "lower": which values are better.
	Better string `json:"better"`
	// Rounds is the number of rounds of each side.
	Rounds int `json:"rounds"`
	// ValueSpread and BaselineSpread are (max-min)/median over the
	// rounds: how much the rounds disagreed.
	ValueSpread    float64 `json:"value_spread"`
	BaselineSpread float64 `json:"baseline_spread"`
	// What and Against describe the two sides.
	What    string `json:"what"`
	Against string `json:"against"`
}

// Report is the outcome of Run.
type Report struct {
	// Go, OS, Arch and CPUs describe the machine and the toolchain.
	Go   string `json:"go"`
	OS   string `json:"os"`
	Arch string `json:"arch"`
	CPUs int    `json:"cpus"`
	// Duration is the measuring time of each side of a case; Rounds
	// the number of rounds it is cut into.
	Duration string `json:"duration"`
	Rounds   int    `json:"rounds"`
	// Results are the rows, in case order.
	Results []Result `json:"results"`
	// Errors lists the cases that failed, "<case>: <error>".
	Errors []string `json:"errors,omitempty"`
	// Skipped lists the cases that cannot run here, "<case>: <why>".
	Skipped []string `json:"skipped,omitempty"`
	// Elapsed is the wall time of the whole run.
	Elapsed string `json:"elapsed"`
}

// Config configures Run.
type Config struct {
	// Duration is how long each side of a case measures, in total over
	// its rounds (default 1s).
	Duration time.Duration
	// Rounds is how many rounds each side's Duration is cut into
	// (default 5).
	Rounds int
	// Only selects cases by name (all when empty).
	Only []string
	// Progress, when set, is told what runs.
	Progress func(Progress)
}

// Progress describes the step Run is at.
type Progress struct {
	// Case is the running case, Index its position (from 1) among Total.
	Case         string
	Index, Total int
	// Step is "setup", "warm-up", "peerbus", "raw" or "done".
	Step string
	// Round is the current round (from 1) of Rounds, during measuring.
	Round, Rounds int
}

// Defaults of Config.
const (
	DefaultDuration = time.Second
	DefaultRounds   = 5
)

// Select returns the cases named in only (every case when only is
// empty), in the order of Cases, or an error naming the unknown ones.
func Select(only []string) ([]Case, error) {
	all := Cases()
	if len(only) == 0 {
		return all, nil
	}
	want := map[string]bool{}
	for _, n := range only {
		if n = strings.TrimSpace(n); n != "" {
			want[n] = true
		}
	}
	var out []Case
	for _, c := range all {
		if want[c.Name] {
			out = append(out, c)
			delete(want, c.Name)
		}
	}
	if len(want) > 0 {
		var unknown, names []string
		for n := range want {
			unknown = append(unknown, n)
		}
		for _, c := range all {
			names = append(names, c.Name)
		}
		slices.Sort(unknown)
		return nil, fmt.Errorf("bench: unknown case %s (cases: %s)", strings.Join(unknown, ", "), strings.Join(names, ", "))
	}
	return out, nil
}

// Run measures the selected cases on env and returns the report. A case
// that fails is listed in Report.Errors and the others still run; Run
// returns an error only for a bad configuration or when ctx ends.
func Run(ctx context.Context, env *Env, cfg Config) (Report, error) {
	if cfg.Duration <= 0 {
		cfg.Duration = DefaultDuration
	}
	if cfg.Rounds <= 0 {
		cfg.Rounds = DefaultRounds
	}
	cases, err := Select(cfg.Only)
	if err != nil {
		return Report{}, err
	}
	start := time.Now()
	rep := Report{
		Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(),
		Duration: cfg.Duration.String(), Rounds: cfg.Rounds, Results: []Result{},
	}
	progress := cfg.Progress
	if progress == nil {
		progress = func(Progress) {}
	}
	for i, c := range cases {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		tell := func(step string, round, rounds int) {
			progress(Progress{Case: c.Name, Index: i + 1, Total: len(cases), Step: step, Round: round, Rounds: rounds})
		}
		rows, err := RunCase(ctx, env, c, cfg.Duration, cfg.Rounds, tell)
		if err != nil {
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			if errors.Is(err, ErrUnavailable) {
				rep.Skipped = append(rep.Skipped, c.Name+": "+err.Error())
			} else {
				rep.Errors = append(rep.Errors, c.Name+": "+err.Error())
			}
			continue
		}
		rep.Results = append(rep.Results, rows...)
	}
	progress(Progress{Step: "done", Index: len(cases), Total: len(cases)})
	rep.Elapsed = time.Since(start).Round(time.Millisecond).String()
	return rep, nil
}

// RunCase sets case c up on env, measures it for d per side in rounds
// rounds, and returns its rows. tell, when not nil, is told each step.
func RunCase(ctx context.Context, env *Env, c Case, d time.Duration, rounds int, tell func(step string, round, rounds int)) (rows []Result, err error) {
	if tell == nil {
		tell = func(string, int, int) {}
	}
	if c.MaxRounds > 0 && rounds > c.MaxRounds {
		rounds = c.MaxRounds
	}
	rounds = max(rounds, c.MinRounds)
	tell("setup", 0, rounds)
	pb, raw, cleanup, err := c.Setup(ctx, env)
	if cleanup != nil {
		defer cleanup()
	}
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	sides := [2]Side{pb, raw}
	slice := d / time.Duration(rounds)
	if c.Kind != Sample {
		tell("warm-up", 0, rounds)
		for _, s := range sides {
			if _, err := measure(ctx, c.Kind, s, slice/2); err != nil {
				return nil, err
			}
		}
	}
	// per[side][round] holds the metrics of one round of one side.
	var per [2][][]float64
	for r := range rounds {
		order := [2]int{0, 1}
		if r%2 == 1 {
			order = [2]int{1, 0}
		}
		for _, si := range order {
			tell([2]string{"peerbus", "raw"}[si], r+1, rounds)
			m, err := measure(ctx, c.Kind, sides[si], slice)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", [2]string{"peerbus", "raw"}[si], err)
			}
			per[si] = append(per[si], m)
		}
	}
	return c.rows(per, rounds), nil
}

// measure runs one side for one round and returns its metrics: p50 and
// p99 in µs (Latency), the rate (Rate), the value (Sample).
func measure(ctx context.Context, k Kind, s Side, d time.Duration) ([]float64, error) {
	switch k {
	case Latency:
		lat, err := latencies(ctx, s, d)
		if err != nil {
			return nil, err
		}
		return []float64{micros(Percentile(lat, 0.50)), micros(Percentile(lat, 0.99))}, nil
	case Rate:
		r, err := rate(ctx, s, d)
		return []float64{r}, err
	case Sample:
		v, err := s.Sample(ctx)
		if err == nil && (v <= 0 || math.IsNaN(v) || math.IsInf(v, 0)) {
			err = fmt.Errorf("bad sample %v", v)
		}
		return []float64{v}, err
	}
	return nil, fmt.Errorf("unknown kind %d", k)
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// latencies times Op, one at a time, for about d (at least one).
func latencies(ctx context.Context, s Side, d time.Duration) ([]time.Duration, error) {
	var out []time.Duration
	end := time.Now().Add(d)
	for {
		t0 := time.Now()
		if _, err := s.Op(ctx); err != nil {
			return nil, err
		}
		t1 := time.Now()
		out = append(out, t1.Sub(t0))
		if !t1.Before(end) {
			return out, nil
		}
	}
}

// rate runs Op on Side.Concurrency goroutines for about d (each at
// least once) and returns the units done per second, counted until
// every goroutine's last Op returned.
func rate(ctx context.Context, s Side, d time.Duration) (float64, error) {
	n := max(s.Concurrency, 1)
	var units atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	end := start.Add(d)
	for range n {
		wg.Go(func() {
			for {
				u, err := s.Op(ctx)
				if err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
				units.Add(int64(u))
				if !time.Now().Before(end) {
					return
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	if first != nil {
		return 0, first
	}
	return float64(units.Load()) / el.Seconds(), nil
}

// rows turns the rounds' metrics into rows.
func (c Case) rows(per [2][][]float64, rounds int) []Result {
	type rowDef struct {
		name  string
		unit  string
		lower bool
		scale float64
	}
	var defs []rowDef
	switch c.Kind {
	case Latency:
		defs = []rowDef{{c.Name + " p50", "µs", true, 1}, {c.Name + " p99", "µs", true, 1}}
	case Rate:
		scale := c.Scale
		if scale == 0 {
			scale = 1
		}
		defs = []rowDef{{c.Name, c.Unit, false, scale}}
	case Sample:
		defs = []rowDef{{c.Name, c.Unit, c.LowerIsBetter, 1}}
	}
	out := make([]Result, 0, len(defs))
	for i, def := range defs {
		col := func(side int) []float64 {
			v := make([]float64, 0, len(per[side]))
			for _, m := range per[side] {
				v = append(v, m[i]/def.scale)
			}
			return v
		}
		vals, base := col(0), col(1)
		r := Result{
			Case: c.Name, Name: def.name, Unit: def.unit, Rounds: rounds,
			Value: Median(vals), Baseline: Median(base),
			ValueSpread: spread(vals), BaselineSpread: spread(base),
			Better: "higher", What: c.What, Against: c.Baseline,
		}
		if def.lower {
			r.Better = "lower"
		}
		r.Ratio = RelativePerformance(r.Value, r.Baseline, def.lower)
		out = append(out, r)
	}
	return out
}

// RelativePerformance is the ratio of a row: value/baseline when higher
// is better, baseline/value when lower is better; 0 when undefined.
func RelativePerformance(value, baseline float64, lowerIsBetter bool) float64 {
	if value <= 0 || baseline <= 0 {
		return 0
	}
	if lowerIsBetter {
		return baseline / value
	}
	return value / baseline
}

// Median returns the median of v (the mean of the middle two for an
// even count), 0 for none.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spread returns (max-min)/median of v.
func spread(v []float64) float64 {
	m := Median(v)
	if m == 0 {
		return 0
	}
	return (slices.Max(v) - slices.Min(v)) / m
}

// Percentile returns the q-quantile (0..1) of d by the nearest-rank
// method; d is sorted in place.
func Percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(math.Ceil(q*float64(len(d)))) - 1
	return d[min(max(i, 0), len(d)-1)]
}

// ErrUnavailable reports a case that cannot run here (Run lists it in
// Report.Skipped).
var ErrUnavailable = errors.New("not available here")
