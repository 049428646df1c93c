package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/peer"
)

// childEnv names the variable that makes the test binary run as the
// node-rss child processes: "node" (a bus node and its peer, as
// "peerbus node" runs) or "bare" (RunBareServer). The data directory is
// the variable's value after a colon.
const childEnv = "PEERBUS_BENCH_CHILD"

func TestMain(m *testing.M) {
	if v := os.Getenv(childEnv); v != "" {
		os.Exit(runChild(v))
	}
	os.Exit(m.Run())
}

func runChild(v string) int {
	kind, dir, _ := strings.Cut(v, ":")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch kind {
	case "bare":
		err = RunBareServer(ctx, dir, os.Stdout)
	case "node":
		var n *bus.Node
		n, err = bus.Start(ctx, bus.WithListen("127.0.0.1:-1"), bus.WithDataDir(dir), bus.WithName("bench-rss"))
		if err != nil {
			break
		}
		var p *peer.Peer
		if p, err = peer.New(n.Conn()); err == nil {
			fmt.Println("ready")
			<-ctx.Done()
			_ = p.Close()
		}
		_ = n.Close()
	default:
		err = fmt.Errorf("unknown child %q", kind)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// testEnv returns an environment whose node-rss processes are this test
// binary.
func testEnv(t testing.TB) *Env {
	t.Helper()
	env, err := NewEnv(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Close(); err != nil {
			t.Error(err)
		}
	})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := func(kind string) func(string) *exec.Cmd {
		return func(dir string) *exec.Cmd {
			c := exec.Command(exe)
			c.Env = append(os.Environ(), childEnv+"="+kind+":"+dir)
			return c
		}
	}
	env.NodeCommand, env.BareCommand = child("node"), child("bare")
	return env
}

func TestStats(t *testing.T) {
	if m := Median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median %v", m)
	}
	if m := Median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median %v", m)
	}
	if m := Median(nil); m != 0 {
		t.Errorf("median of nothing %v", m)
	}
	d := make([]time.Duration, 100)
	for i := range d {
		d[i] = time.Duration(100-i) * time.Microsecond
	}
	if p := Percentile(d, 0.5); p != 50*time.Microsecond {
		t.Errorf("p50 %v", p)
	}
	if p := Percentile(d, 0.99); p != 99*time.Microsecond {
		t.Errorf("p99 %v", p)
	}
	if r := RelativePerformance(20, 10, true); r != 0.5 {
		t.Errorf("latency twice the baseline: ratio %v", r)
	}
	if r := RelativePerformance(5, 10, false); r != 0.5 {
		t.Errorf("half the baseline's throughput: ratio %v", r)
	}
	if r := RelativePerformance(0, 10, false); r != 0 {
		t.Errorf("no value: ratio %v", r)
	}
}

func TestSelect(t *testing.T) {
	all, err := Select(nil)
	if err != nil || len(all) != len(Cases()) {
		t.Fatalf("Select(nil): %d cases, %v", len(all), err)
	}
	seen := map[string]bool{}
	for _, c := range all {
		if seen[c.Name] || c.Name == "" || c.What == "" || c.Baseline == "" || c.Setup == nil {
			t.Errorf("case %+v: duplicate or incomplete", c.Name)
		}
		seen[c.Name] = true
	}
	got, err := Select([]string{"pipe-udp", "call"})
	if err != nil || len(got) != 2 || got[0].Name != "call" || got[1].Name != "pipe-udp" {
		t.Fatalf("Select: %v, %v", got, err)
	}
	if _, err := Select([]string{"call", "nope"}); err == nil {
		t.Fatal("unknown case accepted")
	}
}

// TestRunCaseOrder checks the alternation of the sides and the rows of
// each kind with fake sides.
func TestRunCaseOrder(t *testing.T) {
	var mu sync.Mutex
	var order []string
	side := func(name string, v float64) Side {
		return Side{
			Op: func(context.Context) (int, error) {
				time.Sleep(100 * time.Microsecond)
				return 10, nil
			},
			Sample: func(context.Context) (float64, error) {
				mu.Lock()
				order = append(order, name)
				mu.Unlock()
				return v, nil
			},
		}
	}
	c := Case{Name: "fake", Kind: Sample, Unit: "MiB", LowerIsBetter: true,
		Setup: func(context.Context, *Env) (Side, Side, func(), error) {
			return side("pb", 20), side("raw", 10), nil, nil
		}}
	rows, err := RunCase(context.Background(), nil, c, time.Millisecond, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"pb", "raw", "raw", "pb", "pb", "raw", "raw", "pb"}; !slices.Equal(order, want) {
		t.Errorf("order %v, want %v", order, want)
	}
	if len(rows) != 1 || rows[0].Value != 20 || rows[0].Baseline != 10 || rows[0].Ratio != 0.5 || rows[0].Better != "lower" {
		t.Errorf("rows %+v", rows)
	}
	c.Kind, c.Unit, c.Scale = Rate, "kunits/s", 1000
	rows, err = RunCase(context.Background(), nil, c, 20*time.Millisecond, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].Value <= 0 || rows[0].Value > 100 || rows[0].Better != "higher" {
		t.Errorf("rate rows %+v", rows)
	}
	c.Kind = Latency
	rows, err = RunCase(context.Background(), nil, c, 20*time.Millisecond, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Name != "fake p50" || rows[1].Name != "fake p99" || rows[0].Value < 100 || rows[1].Value < rows[0].Value {
		t.Errorf("latency rows %+v", rows)
	}
	failing := errors.New("broken")
	c.Setup = func(context.Context, *Env) (Side, Side, func(), error) {
		return Side{Op: func(context.Context) (int, error) { return 0, failing }, Concurrency: 4}, side("raw", 1), nil, nil
	}
	c.Kind = Rate
	if _, err := RunCase(context.Background(), nil, c, 10*time.Millisecond, 2, nil); !errors.Is(err, failing) {
		t.Errorf("failing side: %v", err)
	}
}

// TestRun runs a few real cases briefly; it checks that they work, not
// their numbers.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	env := testEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var steps atomic.Int32
	rep, err := Run(ctx, env, Config{Duration: 40 * time.Millisecond, Rounds: 2,
		Only: []string{"call", "emit", "emit-async-msgid", "pipe-tcp", "bridge-relay-nats"}, Progress: func(Progress) { steps.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Errors) > 0 {
		t.Fatal(rep.Errors)
	}
	if len(rep.Results) != 6 || steps.Load() == 0 {
		t.Fatalf("results %+v, %d progress steps", rep.Results, steps.Load())
	}
	for _, r := range rep.Results {
		if r.Value <= 0 || r.Baseline <= 0 || r.Ratio <= 0 {
			t.Errorf("%+v", r)
		}
	}
	dir := env.Dir()
	if err := env.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s left behind: %v", dir, err)
	}
	if _, err := os.Stat(filepath.Dir(dir)); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkCases runs every case's two sides as benchmarks, on one
// environment:
//
//	go test -run '^$' -bench . -benchtime 2s ./internal/bench/
//	go test -run '^$' -bench 'Cases/call/' ./internal/bench/
//
// Latency cases report p50-µs and p99-µs, Rate cases their unit per
// second, Sample cases the mean sample.
func BenchmarkCases(b *testing.B) {
	env := testEnv(b)
	ctx := context.Background()
	for _, c := range Cases() {
		b.Run(c.Name, func(b *testing.B) {
			pb, raw, cleanup, err := c.Setup(ctx, env)
			if cleanup != nil {
				defer cleanup()
			}
			if err != nil {
				b.Skip(err)
			}
			for _, s := range []struct {
				name string
				side Side
			}{{"peerbus", pb}, {"raw", raw}} {
				b.Run(s.name, func(b *testing.B) { benchSide(b, ctx, c, s.side) })
			}
		})
	}
}

// benchSide runs one side b.N times.
func benchSide(b *testing.B, ctx context.Context, c Case, s Side) {
	switch c.Kind {
	case Sample:
		sum := 0.0
		for b.Loop() {
			v, err := s.Sample(ctx)
			if err != nil {
				b.Fatal(err)
			}
			sum += v
		}
		b.ReportMetric(sum/float64(b.N), c.Unit)
	case Latency:
		lat := make([]time.Duration, 0, 1024)
		for b.Loop() {
			t0 := time.Now()
			if _, err := s.Op(ctx); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		b.ReportMetric(micros(Percentile(lat, 0.5)), "p50-µs")
		b.ReportMetric(micros(Percentile(lat, 0.99)), "p99-µs")
	case Rate:
		var next, units atomic.Int64
		var wg sync.WaitGroup
		var failed atomic.Pointer[error]
		b.ResetTimer()
		for range max(s.Concurrency, 1) {
			wg.Go(func() {
				for next.Add(1) <= int64(b.N) && failed.Load() == nil {
					u, err := s.Op(ctx)
					if err != nil {
						failed.Store(&err)
						return
					}
					units.Add(int64(u))
				}
			})
		}
		wg.Wait()
		b.StopTimer()
		if e := failed.Load(); e != nil {
			b.Fatal(*e)
		}
		scale := c.Scale
		if scale == 0 {
			scale = 1
		}
		b.ReportMetric(float64(units.Load())/scale/b.Elapsed().Seconds(), strings.ReplaceAll(c.Unit, " ", "-"))
	}
}

// TestRunSkips checks that a case that cannot run here is skipped, not
// failed.
func TestRunSkips(t *testing.T) {
	env, err := NewEnv(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	rep, err := Run(context.Background(), env, Config{Duration: time.Millisecond, Only: []string{"node-rss"}})
	if err != nil || len(rep.Errors) > 0 || len(rep.Skipped) != 1 || len(rep.Results) != 0 {
		t.Fatalf("report %+v, %v", rep, err)
	}
}
