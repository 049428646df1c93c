package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/peerbus/peerbus/bus"
)

// RSSIdle is how long the node-rss case lets a node idle after it is
// ready before it reads the node's resident set size.
const RSSIdle = time.Second

// clusterSize is the size of the cluster of the cluster-ready case.
const clusterSize = 3

func processCases() []Case {
	return []Case{
		{
			Name: "node-rss", Kind: Sample, Unit: "MiB", LowerIsBetter: true, MaxRounds: 3,
			What:     "resident memory (VmRSS) of an idle peerbus node process (JetStream on, its peer), 1 s after ready",
			Baseline: "a process of the same binary running a bare NATS server with JetStream",
			Setup: func(_ context.Context, env *Env) (Side, Side, func(), error) {
				if env.NodeCommand == nil || env.BareCommand == nil {
					return Side{}, Side{}, nil, errNoCommand
				}
				if _, err := os.Stat("/proc/self/status"); err != nil {
					return Side{}, Side{}, nil, fmt.Errorf("%w: needs /proc/<pid>/status", ErrUnavailable)
				}
				return Side{Sample: rssSample(env, env.NodeCommand)}, Side{Sample: rssSample(env, env.BareCommand)}, nil, nil
			},
		},
		{
			Name: "cluster-ready", Kind: Sample, Unit: "ms", LowerIsBetter: true, MinRounds: 9,
			What:     "time until a 3-node cluster started in one process is ready (bus.StartLocalCluster, JetStream meta leader)",
			Baseline: "3 bare NATS servers with routes and JetStream in one process, ready by the same test",
			Setup: func(_ context.Context, env *Env) (Side, Side, func(), error) {
				pb := func(ctx context.Context) (float64, error) {
					dir, err := env.TempDir("ready")
					if err != nil {
						return 0, err
					}
					defer os.RemoveAll(dir)
					t0 := time.Now()
					nodes, err := bus.StartLocalCluster(ctx, clusterSize, dir, "bench-r", bus.WithLogger(env.log))
					el := time.Since(t0)
					if err != nil {
						return 0, err
					}
					closeNodes(nodes)
					return float64(el) / float64(time.Millisecond), nil
				}
				raw := func(ctx context.Context) (float64, error) {
					dir, err := env.TempDir("ready-raw")
					if err != nil {
						return 0, err
					}
					defer os.RemoveAll(dir)
					t0 := time.Now()
					srvs, err := startBareCluster(ctx, clusterSize, dir)
					el := time.Since(t0)
					for _, s := range srvs {
						s.Shutdown()
					}
					for _, s := range srvs {
						s.WaitForShutdown()
					}
					if err != nil {
						return 0, err
					}
					return float64(el) / float64(time.Millisecond), nil
				}
				return Side{Sample: pb}, Side{Sample: raw}, nil, nil
			},
		},
	}
}

// rssSample starts the process of mk, waits until it prints "ready",
// lets it idle for RSSIdle, and returns its VmRSS in MiB. The process
// is then stopped (SIGTERM, then killed) and its directory removed.
func rssSample(env *Env, mk func(dataDir string) *exec.Cmd) func(context.Context) (float64, error) {
	return func(ctx context.Context) (float64, error) {
		dir, err := env.TempDir("rss")
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(dir)
		cmd := mk(dir)
		var stderr bytes.Buffer
		cmd.Stderr = &limitedWriter{w: &stderr, n: 8 << 10}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return 0, err
		}
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		defer stopProcess(cmd)
		ready := make(chan struct{})
		go func() {
			sc := bufio.NewScanner(out)
			seen := false
			for sc.Scan() {
				if !seen && strings.TrimSpace(sc.Text()) == "ready" {
					seen = true
					close(ready)
				}
			}
			_, _ = io.Copy(io.Discard, out)
		}()
		t := time.NewTimer(30 * time.Second)
		defer t.Stop()
		select {
		case <-ready:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-t.C:
			return 0, fmt.Errorf("%s: not ready after 30s: %s", cmd.Path, strings.TrimSpace(stderr.String()))
		}
		select {
		case <-time.After(RSSIdle):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		kb, err := VmRSS(cmd.Process.Pid)
		if err != nil {
			return 0, err
		}
		return float64(kb) / 1024, nil
	}
}

// stopProcess ends cmd with SIGTERM, or kills it after 10 s, and reaps
// it.
func stopProcess(cmd *exec.Cmd) {
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		_ = cmd.Process.Kill()
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// limitedWriter keeps the first n bytes written to it.
type limitedWriter struct {
	mu sync.Mutex
	w  io.Writer
	n  int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n > 0 {
		k := min(len(p), l.n)
		_, _ = l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}

// VmRSS returns the resident set size of process pid in KiB, from
// /proc/<pid>/status.
func VmRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, errors.New("no VmRSS in /proc/" + strconv.Itoa(pid) + "/status")
}

// RunBareServer runs a bare NATS server with JetStream, storing in
// dataDir and listening on a free loopback port, prints "ready" on out
// once it accepts connections and JetStream answers, and runs until ctx
// ends. It is the baseline process of the node-rss case.
func RunBareServer(ctx context.Context, dataDir string, out io.Writer) error {
	srv, err := server.NewServer(&server.Options{
		ServerName: "bench-bare", Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		JetStream: true, StoreDir: dataDir,
	})
	if err != nil {
		return err
	}
	srv.Start()
	defer func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}()
	if err := waitBare(ctx, srv); err != nil {
		return err
	}
	if _, err := io.WriteString(out, "ready\n"); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// startBareCluster starts size bare NATS servers with full-mesh routes
// on loopback and JetStream in dir, and returns once each is ready the
// way a bus node is (see waitBare). The servers are returned even on
// error, for the caller to shut down.
func startBareCluster(ctx context.Context, size int, dir string) ([]*server.Server, error) {
	ports := make([]int, size)
	var routes []string
	for i := range ports {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(ports[i]))
	}
	srvs := make([]*server.Server, 0, size)
	for i := range size {
		srv, err := server.NewServer(&server.Options{
			ServerName: "bench-raw" + strconv.Itoa(i), Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
			JetStream: true, StoreDir: filepath.Join(dir, strconv.Itoa(i)),
			Cluster: server.ClusterOpts{Name: "bench-raw", Host: "127.0.0.1", Port: ports[i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
		})
		if err != nil {
			return srvs, err
		}
		srvs = append(srvs, srv)
	}
	errs := make([]error, size)
	var wg sync.WaitGroup
	for i, srv := range srvs {
		wg.Go(func() {
			srv.Start()
			errs[i] = waitBare(ctx, srv)
		})
	}
	wg.Wait()
	return srvs, errors.Join(errs...)
}

// waitBare waits until srv accepts connections and JetStream is current
// and answers an account info request on an in-process connection,
// polling as bus.Start does.
func waitBare(ctx context.Context, srv *server.Server) error {
	for !srv.ReadyForConnections(50 * time.Millisecond) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if srv.JetStreamIsCurrent() {
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := js.AccountInfo(actx)
			cancel()
			if err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
