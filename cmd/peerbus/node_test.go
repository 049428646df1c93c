package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/peer"
)

// binDir holds the binaries built for the tests of this package.
var binDir string

// TestMain provides binDir, where binaries are built once, on first use
// (see buildBinary), and removed at the end.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "peerbus-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildMu    sync.Mutex
	buildCache = map[string]func() (string, error){}
)

// raceBuild reports whether the test binary has the race detector; the
// binaries under test are then built with it too.
func raceBuild() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

// buildBinary builds the package at pkg (relative to this directory)
// once and returns the binary's path.
func buildBinary(t testing.TB, pkg, name string) string {
	t.Helper()
	buildMu.Lock()
	f, ok := buildCache[pkg]
	if !ok {
		f = sync.OnceValues(func() (string, error) {
			out := filepath.Join(binDir, name)
			args := []string{"build", "-o", out}
			if raceBuild() {
				args = append(args, "-race")
			}
			cmd := exec.Command("go", append(args, pkg)...)
			if b, err := cmd.CombinedOutput(); err != nil {
				return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
			}
			return out, nil
		})
		buildCache[pkg] = f
	}
	buildMu.Unlock()
	path, err := f()
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// peerbusBin returns the peerbus binary.
func peerbusBin(t testing.TB) string { return buildBinary(t, ".", "peerbus") }

// testEnv is the environment of the processes under test: the test's
// own, without PEERBUS_* variables, plus extra. Race-enabled binaries
// are told not to linger a second at exit.
func testEnv(extra ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(s string) bool {
		return strings.HasPrefix(s, "PEERBUS_") || strings.HasPrefix(s, "GORACE=")
	})
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=50")
	return append(append(env, "GORACE="+gorace), extra...)
}

// freePorts returns n distinct free TCP ports on loopback.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a background process whose stdout (and optionally stderr) is
// read line by line.
type proc struct {
	t      testing.TB
	name   string
	cmd    *exec.Cmd
	lines  chan string // stdout lines
	errLns chan string // stderr lines
	stderr syncBuffer
	done   chan struct{}
	err    error // Wait's error, valid after done
}

// startProc starts bin with args in the background and stops it (SIGTERM,
// then SIGKILL) at the end of the test.
func startProc(t testing.TB, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, lines: make(chan string, 1024), errLns: make(chan string, 1024), done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = env
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var readers sync.WaitGroup
	readers.Add(2)
	go func() {
		defer readers.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	go func() {
		defer readers.Done()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			l := sc.Text()
			p.stderr.Write([]byte(l + "\n"))
			select {
			case p.errLns <- l:
			default: // nobody reads stderr lines: keep the text only
			}
		}
		close(p.errLns)
	}()
	go func() {
		readers.Wait()
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(10 * time.Second)
		if t.Failed() {
			t.Logf("%s stderr:\n%s", p.name, p.stderr.String())
		}
		if s := p.stderr.String(); strings.Contains(s, "DATA RACE") {
			t.Errorf("%s: data race:\n%s", p.name, s)
		}
	})
	return p
}

// signal sends sig to the process.
func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Errorf("%s: signal: %v", p.name, err)
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) (int, bool) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), true
	case <-time.After(timeout):
		return 0, false
	}
}

// stop ends the process if it still runs.
func (p *proc) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if _, ok := p.wait(grace); !ok {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// nextLine returns the next stdout line, failing after timeout.
func (p *proc) nextLine(timeout time.Duration) (string, bool) {
	select {
	case l, ok := <-p.lines:
		return l, ok
	case <-time.After(timeout):
		return "", false
	}
}

// waitStderr waits for a stderr line containing s.
func (p *proc) waitStderr(t testing.TB, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-p.errLns:
			if !ok {
				t.Fatalf("%s exited before printing %q; stderr:\n%s", p.name, s, p.stderr.String())
			}
			if strings.Contains(l, s) {
				return
			}
		case <-deadline:
			t.Fatalf("%s did not print %q on stderr in %v; stderr:\n%s", p.name, s, timeout, p.stderr.String())
		}
	}
}

// nodeProc is a running "peerbus node".
type nodeProc struct {
	*proc
	info map[string]string // the key: value lines before "ready"
}

// startNodeProc starts "peerbus node args..." without waiting for it.
func startNodeProc(t testing.TB, name string, args ...string) *nodeProc {
	t.Helper()
	p := startProc(t, name, testEnv(), peerbusBin(t), append([]string{"node", "--log-level", "warn"}, args...)...)
	return &nodeProc{proc: p, info: map[string]string{}}
}

// waitReady reads the node's stdout up to its "ready" line.
func (n *nodeProc) waitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		l, ok := n.nextLine(time.Until(deadline))
		if !ok {
			t.Fatalf("%s: no ready line within %v; got %v; stderr:\n%s", n.name, timeout, n.info, n.stderr.String())
		}
		if l == "ready" {
			break
		}
		k, v, found := strings.Cut(l, ": ")
		if !found {
			t.Fatalf("%s: unexpected stdout line %q", n.name, l)
		}
		n.info[k] = v
	}
	for _, k := range []string{"peer", "node", "client", "tags"} {
		if n.info[k] == "" {
			t.Fatalf("%s: no %q line before ready: %v", n.name, k, n.info)
		}
	}
}

// result is the outcome of one CLI run.
type result struct {
	stdout, stderr string
	code           int
	elapsed        time.Duration
}

// runCLI runs peerbus with args (and stdin) to completion.
func runCLI(t testing.TB, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, peerbusBin(t), args...)
	cmd.Env = testEnv()
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), elapsed: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("peerbus %v: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("peerbus %v did not finish within a minute", args)
	}
	if strings.Contains(r.stderr, "DATA RACE") {
		t.Errorf("peerbus %v: data race:\n%s", args, r.stderr)
	}
	return r
}

// waitFor polls cond until it holds, failing after timeout.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestNodeOptionsPrecedence(t *testing.T) {
	env := map[string]string{
		bus.EnvName:        "env-name",
		bus.EnvListen:      "127.0.0.1:5000",
		bus.EnvClusterName: "envcluster",
		bus.EnvRoutes:      "a:1,b:2",
		bus.EnvNoJetStream: "1",
		bus.EnvDataDir:     "/env/data",
		peer.EnvGroup:      "envgroup",
		peer.EnvHub:        "true",
		peer.EnvPeerName:   "env-peer",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	cmd, _ := newNodeCmd()
	err := cmd.Flags().Parse([]string{
		"--listen", "127.0.0.1:6000",
		"--routes", "c:3", "--routes", "d:4,e:5",
		"--group", "flaggroup", "--hub=false",
		"--no-jetstream=false",
		"--max-payload", "8M",
	})
	if err != nil {
		t.Fatal(err)
	}
	bo, po, err := nodeOptions(cmd.Flags(), lookup)
	if err != nil {
		t.Fatal(err)
	}
	// Flags win over the environment.
	if bo.Listen != "127.0.0.1:6000" {
		t.Errorf("Listen = %q, want the flag's", bo.Listen)
	}
	if want := []string{"c:3", "d:4", "e:5"}; !slices.Equal(bo.Routes, want) {
		t.Errorf("Routes = %q, want %q", bo.Routes, want)
	}
	if bo.NoJetStream {
		t.Error("NoJetStream = true, want the flag's false")
	}
	if po.Group != "flaggroup" || po.Hub {
		t.Errorf("peer group/hub = %q/%v, want the flags' flaggroup/false", po.Group, po.Hub)
	}
	if bo.MaxPayload != 8<<20 {
		t.Errorf("MaxPayload = %d", bo.MaxPayload)
	}
	// The environment wins over the defaults when no flag is given.
	if bo.Name != "env-name" || bo.ClusterName != "envcluster" || bo.DataDir != "/env/data" || po.Name != "env-peer" {
		t.Errorf("env values not applied: %+v %+v", bo, po)
	}
	// Defaults stay when neither is given.
	if bo.ReadyTimeout != bus.DefaultReadyTimeout || bo.ClusterListen != "" || bo.ExternalURL != "" {
		t.Errorf("defaults changed: %+v", bo)
	}

	// Without environment the flag defaults are not applied over the
	// package defaults, and unset flags leave them alone.
	cmd, _ = newNodeCmd()
	if err := cmd.Flags().Parse(nil); err != nil {
		t.Fatal(err)
	}
	bo, po, err = nodeOptions(cmd.Flags(), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if bo.Listen != bus.DefaultListen || bo.ClusterName != bus.DefaultClusterName || po.Group != "" || bo.NoJetStream {
		t.Errorf("defaults: %+v %+v", bo, po)
	}

	// A bad environment value is reported.
	env = map[string]string{bus.EnvNoJetStream: "maybe"}
	cmd, _ = newNodeCmd()
	_ = cmd.Flags().Parse(nil)
	if _, _, err := nodeOptions(cmd.Flags(), lookup); err == nil || !strings.Contains(err.Error(), bus.EnvNoJetStream) {
		t.Errorf("bad env value: err = %v", err)
	}
}

func TestNodeBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"node", "--listen", "nonsense"}, `listen address "nonsense"`},
		{[]string{"node", "--func", "noequals"}, "want TAG=COMMAND"},
		{[]string{"node", "--func", "bad*tag=true"}, "invalid tag"},
		{[]string{"node", "--func", "a=true", "--func", "a=false"}, `tag "a" is already served`},
		{[]string{"node", "--log-level", "loud"}, "--log-level"},
		{[]string{"node", "--max-payload", "lots"}, "--max-payload"},
		{[]string{"node", "--no-such-flag"}, "unknown flag: --no-such-flag"},
		{[]string{"node", "extra"}, "unknown command"},
	} {
		r := runCLI(t, "", tc.args...)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("peerbus %v: exit %d, stderr %q; want exit 1 and %q", tc.args, r.code, r.stderr, tc.want)
		}
		if r.stdout != "" {
			t.Errorf("peerbus %v printed on stdout: %q", tc.args, r.stdout)
		}
	}
}

// TestNodeEnv checks that a node takes its settings from the
// environment, with flags winning, in a real process.
func TestNodeEnv(t *testing.T) {
	ports := freePorts(t, 2)
	env := testEnv(
		bus.EnvListen+"=127.0.0.1:"+strconv.Itoa(ports[0]),
		bus.EnvNoJetStream+"=true",
		bus.EnvName+"=from-env",
		peer.EnvPeerName+"=env-peer",
	)
	p := startProc(t, "envnode", env, peerbusBin(t), "node", "--log-level", "warn", "--name", "from-flag")
	n := &nodeProc{proc: p, info: map[string]string{}}
	n.waitReady(t, 30*time.Second)
	if want := "nats://127.0.0.1:" + strconv.Itoa(ports[0]); n.info["client"] != want {
		t.Errorf("client = %q, want %q (from the environment)", n.info["client"], want)
	}
	if n.info["node"] != "from-flag" {
		t.Errorf("node = %q, want the flag's from-flag", n.info["node"])
	}
	if _, ok := n.info["cluster"]; ok {
		t.Errorf("a node without cluster printed %q", n.info["cluster"])
	}
	r := runCLI(t, "", "peers", "--server", n.info["client"])
	if r.code != 0 || !strings.Contains(r.stdout, "env-peer") || !strings.Contains(r.stdout, n.info["peer"]) {
		t.Errorf("peers: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	n.signal(os.Interrupt)
	if code, ok := n.wait(10 * time.Second); !ok || code != 0 {
		t.Errorf("after SIGINT: exited=%v code=%d", ok, code)
	}
}

// TestNodeQuietByDefault checks that a node at the default log level
// prints its ready block and nothing from nats-server, and that
// --log-level debug shows the server's notices.
func TestNodeQuietByDefault(t *testing.T) {
	for _, tc := range []struct {
		level string
		quiet bool
	}{{"", true}, {"debug", false}} {
		args := []string{"node", "--listen", "127.0.0.1:-1", "--data-dir", t.TempDir()}
		if tc.level != "" {
			args = append(args, "--log-level", tc.level)
		}
		p := startProc(t, "node-"+tc.level, testEnv(), peerbusBin(t), args...)
		n := &nodeProc{proc: p, info: map[string]string{}}
		n.waitReady(t, 30*time.Second)
		// The README's configuration table: with port -1 the default
		// name is <host>-<hex>.
		host, _ := os.Hostname()
		host = strings.NewReplacer(".", "-", " ", "-").Replace(host)
		if !regexp.MustCompile(`^` + regexp.QuoteMeta(host) + `-[0-9a-f]{8}$`).MatchString(n.info["node"]) {
			t.Errorf("node name with port -1: %q, want %s-<hex>", n.info["node"], host)
		}
		n.signal(os.Interrupt)
		if code, ok := n.wait(10 * time.Second); !ok || code != 0 {
			t.Fatalf("level %q: after SIGINT: exited=%v code=%d", tc.level, ok, code)
		}
		if l, ok := n.nextLine(time.Second); ok {
			t.Errorf("level %q: stdout line after ready: %q", tc.level, l)
		}
		stderr := n.stderr.String()
		if tc.quiet {
			if stderr != "" {
				t.Errorf("default level: stderr not empty:\n%s", stderr)
			}
			continue
		}
		for _, want := range []string{"component=nats-server", "Server is ready", "level=DEBUG"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("debug level: stderr lacks %q:\n%s", want, stderr)
			}
		}
	}
}
