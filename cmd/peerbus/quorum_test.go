package main

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/peerbus/peerbus/eventlog"
)

// TestEmitQuorumLost checks what peerbus emit says when two of the three
// nodes of the log are down: that the cluster lost its quorum, and how
// to retry with the same id; not that the node runs without JetStream.
func TestEmitQuorumLost(t *testing.T) {
	dir := t.TempDir()
	ports := freePorts(t, 3)
	var routes []string
	for _, p := range ports {
		routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(p))
	}
	nodes := map[string]*nodeProc{}
	for i, p := range ports {
		name := "q" + strconv.Itoa(i)
		nodes[name] = startNodeProc(t, name, "--name", name, "--listen", "127.0.0.1:-1",
			"--cluster", "127.0.0.1:"+strconv.Itoa(p), "--routes", strings.Join(routes, ","), "--data-dir", dir+"/"+name)
	}
	for _, n := range nodes {
		n.waitReady(t, 60*time.Second)
	}
	server := nodes["q0"].info["client"]
	if r := runCLI(t, "", "emit", "--server", server, "q.first", `1`); r.code != 0 {
		t.Fatalf("emit: %d %s", r.code, r.stderr)
	}
	nc, err := nats.Connect(server)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var leader string
	waitFor(t, "a leader and two current replicas", 60*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, eventlog.Stream)
		if err != nil || s.CachedInfo().Cluster == nil {
			return false
		}
		c := s.CachedInfo().Cluster
		leader = c.Leader
		return nodes[leader] != nil && len(c.Replicas) == 2 && c.Replicas[0].Current && c.Replicas[1].Current
	})
	nc.Close()
	for name, n := range nodes {
		if name != leader {
			n.signal(syscall.SIGKILL)
			n.wait(10 * time.Second)
		}
	}
	r := runCLI(t, "", "emit", "--id", "q-2", "--server", nodes[leader].info["client"], "q.second", `2`)
	if r.code == 0 || !strings.Contains(r.stderr, "lost its quorum") || !strings.Contains(r.stderr, "--id q-2") ||
		strings.Contains(r.stderr, "without JetStream") {
		t.Fatalf("emit without quorum: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	t.Logf("emit without quorum: %s", r.stderr)
	// The node keeps running.
	if r := runCLI(t, "", "emit", "--transient", "--server", nodes[leader].info["client"], "q.live", `3`); r.code != 0 {
		t.Fatalf("transient emit after: %d %s", r.code, r.stderr)
	}
}
