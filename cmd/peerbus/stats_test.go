package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestStats checks "peerbus stats" as a table and as JSON, after calls
// and a failing call of a --func tag.
func TestStats(t *testing.T) {
	n := startNodeProc(t, "node", "--listen", "127.0.0.1:-1", "--no-jetstream", "--group", "ops",
		"--func", "upper=tr a-z A-Z", "--func", "fail=exit 3")
	n.waitReady(t, 30*time.Second)
	s := n.info["client"]
	for range 3 {
		if r := runCLI(t, "", "call", "--server", s, "upper", `"x"`); r.code != 0 {
			t.Fatalf("call: %s", r.stderr)
		}
	}
	if r := runCLI(t, "", "call", "--server", s, "fail"); r.code != 2 {
		t.Fatalf("call fail: exit %d", r.code)
	}
	r := runCLI(t, "", "stats", "--server", s, "--json")
	var ps []peerStats
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ps) != nil || len(ps) != 1 {
		t.Fatalf("stats --json: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	got := map[string]tagStats{}
	for _, ts := range ps[0].Tags {
		got[ts.Tag] = ts
	}
	if ps[0].ID != n.info["peer"] || ps[0].Group != "ops" || ps[0].Node != n.info["node"] {
		t.Errorf("peer: %+v", ps[0])
	}
	if u := got["upper"]; u.Calls != 3 || u.Errors != 0 || u.P50 <= 0 || u.P99 < u.P50 || u.Rate <= 0 {
		t.Errorf("upper: %+v", u)
	}
	if f := got["fail"]; f.Calls != 1 || f.Errors != 1 || f.ErrorsByCode["error"] != 1 || !strings.Contains(f.LastError, "exit status 3") {
		t.Errorf("fail: %+v", f)
	}
	r = runCLI(t, "", "stats", "--server", s, "--tag", "upper")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "PEER ") || !strings.Contains(lines[1], " upper ") ||
		strings.Fields(lines[1])[3] != "3" {
		t.Errorf("stats --tag upper: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, "", "stats", "--server", s, "--group", "nosuch")
	if r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "no peers") {
		t.Errorf("stats --group nosuch: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
}

// TestTopPlain checks top's plain lines when stdout is not a terminal:
// no escape sequences, a header line per refresh, the interval's rate.
func TestTopPlain(t *testing.T) {
	n := startNodeProc(t, "node", "--listen", "127.0.0.1:-1", "--no-jetstream")
	n.waitReady(t, 30*time.Second)
	r := runCLI(t, "", "top", "--server", n.info["client"], "--count", "2", "--interval", "200ms")
	if r.code != 0 || strings.Contains(r.stdout, "\x1b") {
		t.Fatalf("top: exit %d\n%q\n%s", r.code, r.stdout, r.stderr)
	}
	blocks := strings.Split(strings.TrimSpace(r.stdout), "\n\n")
	if len(blocks) != 2 {
		t.Fatalf("top printed %d blocks, want 2:\n%s", len(blocks), r.stdout)
	}
	for _, b := range blocks {
		lines := strings.Split(b, "\n")
		if !strings.HasPrefix(lines[0], "peerbus top  "+n.info["client"]) || !strings.Contains(lines[0], "peers: 1") ||
			!strings.HasPrefix(lines[1], "PEER ") || !strings.Contains(b, " ping ") {
			t.Errorf("block:\n%s", b)
		}
	}
}

// openPTY opens a pseudo-terminal and returns its master and slave.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Fatalf("ptsname: %v", err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Fatalf("open pts: %v", err)
	}
	return m, s
}

// TestTopTerminal runs top on a pseudo-terminal: it redraws in place,
// each refresh starting with the clear-screen sequence.
func TestTopTerminal(t *testing.T) {
	n := startNodeProc(t, "node", "--listen", "127.0.0.1:-1", "--no-jetstream")
	n.waitReady(t, 30*time.Second)
	master, slave := openPTY(t)
	defer master.Close()
	cmd := exec.Command(peerbusBin(t), "top", "--server", n.info["client"], "--count", "2", "--interval", "200ms")
	cmd.Env = testEnv()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var mu sync.Mutex
	var out strings.Builder
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		rd := bufio.NewReader(master)
		buf := make([]byte, 4096)
		for {
			k, err := rd.Read(buf)
			mu.Lock()
			out.Write(buf[:k])
			mu.Unlock()
			if err != nil {
				return // EIO once the process closed the terminal
			}
		}
	}()
	waitDone := make(chan error, 1)
	go func() { waitDone <- cmd.Wait() }()
	select {
	case err := <-waitDone:
		if err != nil {
			t.Fatalf("top on a terminal: %v", err)
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("top did not end")
	}
	<-readDone
	mu.Lock()
	got := out.String()
	mu.Unlock()
	if c := strings.Count(got, clearScreen); c != 2 {
		t.Errorf("%d clear-screen sequences, want one per refresh:\n%q", c, got)
	}
	if !strings.Contains(got, "PEER ") || !strings.Contains(got, " ping ") || strings.Contains(got, "\r\n\r\n") {
		t.Errorf("terminal output:\n%q", got)
	}
}

// TestTopNodeGoesAway stops the node under a running top: top says so,
// retries, and goes on once a node is back on the address.
func TestTopNodeGoesAway(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(freePorts(t, 1)[0])
	n := startNodeProc(t, "node", "--listen", addr, "--no-jetstream")
	n.waitReady(t, 30*time.Second)
	top := startProc(t, "top", testEnv(), peerbusBin(t), "top", "--server", addr, "--interval", "200ms")
	waitLine := func(what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			l, ok := top.nextLine(time.Until(deadline))
			if !ok {
				t.Fatalf("top: no %q line; stderr:\n%s", what, top.stderr.String())
			}
			if strings.HasPrefix(l, "peerbus top") && strings.Contains(l, what) {
				return
			}
		}
	}
	waitLine("peers: 1")
	n.signal(os.Interrupt)
	if _, ok := n.wait(10 * time.Second); !ok {
		t.Fatal("node did not stop")
	}
	top.waitStderr(t, "went away", 10*time.Second)
	n2 := startNodeProc(t, "node2", "--listen", addr, "--no-jetstream")
	n2.waitReady(t, 30*time.Second)
	top.waitStderr(t, "reconnected to", 20*time.Second)
	waitLine("peers: 1")
}

// FuzzDecodeStats feeds STATS replies, as any process on the bus could
// send them, to the decoder of stats and top: it never panics, and what
// it accepts is a peerbus peer's reply with non-negative counters.
func FuzzDecodeStats(f *testing.F) {
	f.Add([]byte(`{"name":"peerbus","id":"p1","version":"1.0.0","metadata":{"peer_name":"a","group":"g"},"type":"io.nats.micro.v1.stats_response","started":"2026-12-02T20:00:00Z","endpoints":[{"name":"ping","subject":"peerbus.any.ping","queue_group":"peerbus","num_requests":3,"num_errors":1,"last_error":"x","processing_time":3000,"average_processing_time":1000,"data":{"in_flight":1,"errors_by_code":{"error":1},"p50_ns":900,"p90_ns":1000,"p99_ns":1100,"latency_buckets":{"0":2,"5":1}}}]}`))
	f.Add([]byte(`{"name":"peerbus","id":"p1","type":"io.nats.micro.v1.stats_response","endpoints":[null,{"name":"t","num_requests":-5,"data":{"latency_buckets":{"999":1,"-1":2,"x":3}}}]}`))
	f.Add([]byte(`{"name":"other","id":"s1","type":"io.nats.micro.v1.stats_response","endpoints":[]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, ok := decodeStats(data)
		if !ok {
			return
		}
		if ps.ID == "" {
			t.Fatal("accepted a reply without an id")
		}
		for _, ts := range ps.Tags {
			if ts.hist.Count() > 0 && ts.hist.Quantile(0.5) < 0 {
				t.Fatalf("negative quantile from %s", data)
			}
			if int64(ts.Calls) < 0 || int64(ts.Errors) < 0 {
				t.Fatalf("negative counters from %s", data)
			}
		}
	})
}
