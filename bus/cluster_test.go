package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/peer"
)

// testLogs holds the event log of each peer of the tests (see logOf).
var testLogs sync.Map

// logOf returns the event log of p, made on first use (closing p closes
// it).
func logOf(t *testing.T, p *peer.Peer) *eventlog.Log {
	t.Helper()
	if l, ok := testLogs.Load(p); ok {
		return l.(*eventlog.Log)
	}
	l, err := eventlog.New(p)
	if err != nil {
		t.Fatal(err)
	}
	testLogs.Store(p, l)
	return l
}

// callWhere calls tag "where" on peer to from peer from, retrying while
// interest spreads over the routes.
func callWhere(ctx context.Context, t *testing.T, from *peer.Peer, to string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := from.Call(ctx, "where", []byte("null"), peer.OnPeer(to), peer.Timeout(2*time.Second))
		if err == nil {
			var s string
			if err := json.Unmarshal(out, &s); err != nil {
				t.Fatal(err)
			}
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("call to %s: %v", to, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitReplicas waits until the event log has n replicas, all current.
func waitReplicas(ctx context.Context, t *testing.T, js jetstream.JetStream, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		s, err := js.Stream(ctx, eventlog.Stream)
		if err == nil {
			info := s.CachedInfo()
			ok := info.Config.Replicas == n && info.Cluster != nil && len(info.Cluster.Replicas) == n-1
			if ok {
				for _, r := range info.Cluster.Replicas {
					ok = ok && r.Current
				}
			}
			if ok {
				return
			}
			last = fmt.Sprintf("replicas %d, cluster %+v", info.Config.Replicas, info.Cluster)
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("event log not at %d current replicas within %v: %s", n, within, last)
}

// TestThreeNodesReplicatedLog starts three clustered nodes with a peer on
// each, checks that the event log becomes R3 by itself, shuts one node
// down, and checks that calls, emits and replays go on without it.
func TestThreeNodesReplicatedLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	nodes, err := bus.StartLocalCluster(ctx, 3, t.TempDir(), "r")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("3-node cluster ready in %v", time.Since(start).Round(time.Millisecond))
	for _, n := range nodes {
		t.Cleanup(func() { _ = n.Close() })
	}
	// Start returns only once the meta group has a leader and the node
	// is current.
	for _, n := range nodes {
		if !n.Server().JetStreamIsCurrent() {
			t.Errorf("%s: JetStream not current after Start", n.Name())
		}
		jsz, err := n.Server().Jsz(nil)
		if err != nil || jsz.Meta == nil || jsz.Meta.Leader == "" {
			t.Errorf("%s: no meta leader after Start: %+v %v", n.Name(), jsz.Meta, err)
		}
		if got := n.LogReplicas(); got != 3 {
			t.Errorf("%s: LogReplicas = %d, want 3", n.Name(), got)
		}
	}

	peers := make([]*peer.Peer, 3)
	for i, n := range nodes {
		p, err := peer.New(n.Conn(), peer.WithName(n.Name()), peer.WithPresence(200*time.Millisecond, time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		peers[i] = p
		name := n.Name()
		if _, err := peer.Register(p, "where", func(context.Context, struct{}) (string, error) { return name, nil }); err != nil {
			t.Fatal(err)
		}
	}
	for from := range peers {
		for to := range peers {
			if got := callWhere(ctx, t, peers[from], peers[to].ID()); got != nodes[to].Name() {
				t.Errorf("call %d->%d ran on %q", from, to, got)
			}
		}
	}

	// The first emit creates the log with one replica (the peer's
	// default); the meta leader's node raises it to three.
	emit := func(p *peer.Peer, i int) {
		t.Helper()
		if _, err := logOf(t, p).Emit(ctx, "test.n", i); err != nil {
			t.Fatalf("emit %d: %v", i, err)
		}
	}
	for i := range 5 {
		emit(peers[i%3], i)
	}
	js, err := nodes[0].JetStream()
	if err != nil {
		t.Fatal(err)
	}
	r3 := time.Now()
	waitReplicas(ctx, t, js, 3, 20*time.Second)
	t.Logf("event log at R3 %v after the first emits", time.Since(r3).Round(time.Millisecond))
	for i := 5; i < 10; i++ {
		emit(peers[i%3], i)
	}

	// The node leading the log (and its peer) goes away, the hardest
	// case: the other two elect a new stream leader.
	s, err := js.Stream(ctx, eventlog.Stream)
	if err != nil {
		t.Fatal(err)
	}
	gone := -1
	for i, n := range nodes {
		if n.Name() == s.CachedInfo().Cluster.Leader {
			gone = i
		}
	}
	if gone < 0 {
		t.Fatalf("no node leads the log: %+v", s.CachedInfo().Cluster)
	}
	var rest []int
	for i := range nodes {
		if i != gone {
			rest = append(rest, i)
		}
	}
	if err := peers[gone].Close(); err != nil {
		t.Fatal(err)
	}
	if err := nodes[gone].Close(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	for i := 10; i < 20; i++ {
		emit(peers[rest[i%2]], i)
	}
	t.Logf("stream leader %s shut down; 10 events accepted by the other two nodes in %v",
		nodes[gone].Name(), time.Since(down).Round(time.Millisecond))
	if got := callWhere(ctx, t, peers[rest[0]], peers[rest[1]].ID()); got != nodes[rest[1]].Name() {
		t.Errorf("call after the shutdown ran on %q", got)
	}
	// Both remaining nodes replay all twenty events, in order.
	for _, i := range rest {
		p := peers[i]
		var got []int
		for e, err := range logOf(t, p).Replay(ctx, "test.>", eventlog.FromStart()) {
			if err != nil {
				t.Fatalf("replay on %d: %v", i, err)
			}
			var v int
			if err := e.Decode(&v); err != nil {
				t.Fatal(err)
			}
			got = append(got, v)
		}
		if len(got) != 20 {
			t.Fatalf("replay on node %d: %d events %v, want 20", i, len(got), got)
		}
		for j, v := range got {
			if v != j {
				t.Fatalf("replay on node %d: event %d is %d: %v", i, j, v, got)
			}
		}
	}
}

// TestGrowingClusterRaisesReplicas starts two nodes (the log has one
// copy), then a third with routes to them: it joins the JetStream
// cluster and the log is raised to three copies, the events included.
func TestGrowingClusterRaisesReplicas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	two, err := bus.StartLocalCluster(ctx, 2, dir, "g")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range two {
		t.Cleanup(func() { _ = n.Close() })
	}
	p, err := peer.New(two[0].Conn())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	for i := range 5 {
		if _, err := logOf(t, p).Emit(ctx, "grow.n", i); err != nil {
			t.Fatal(err)
		}
	}
	js, _ := two[0].JetStream()
	s, err := js.Stream(ctx, eventlog.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if r := s.CachedInfo().Config.Replicas; r != 1 || two[0].LogReplicas() != 1 {
		t.Fatalf("two nodes: log replicas %d, target %d; want 1", r, two[0].LogReplicas())
	}

	start := time.Now()
	third, err := bus.Start(ctx, bus.WithName("g2"), bus.WithListen("127.0.0.1:-1"), bus.WithDataDir(dir+"/g2"),
		bus.WithCluster("127.0.0.1:-1"), bus.WithRoutes(two[0].ClusterURL(), two[1].ClusterURL()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = third.Close() })
	waitReplicas(ctx, t, js, 3, 30*time.Second)
	t.Logf("third node joined and the log reached R3 in %v", time.Since(start).Round(time.Millisecond))
	if got := third.LogReplicas(); got != 3 {
		t.Errorf("LogReplicas on the new node = %d", got)
	}
	q, err := peer.New(third.Conn())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	n, err := logOf(t, q).Count(ctx, "grow.>")
	if err != nil || n != 5 {
		t.Fatalf("events seen from the new node: %d, %v", n, err)
	}
}

// TestLoneSeedGrows starts the first node of a cluster alone (a cluster
// listener, no routes): it is ready at once, with its event log waiting
// for a second node. A second node routed to it gives the JetStream
// cluster its quorum and the log one copy; a third raises the log, and
// the events emitted before, to three copies.
func TestLoneSeedGrows(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	start := func(name string, routes ...string) *bus.Node {
		t.Helper()
		o := []bus.Option{bus.WithName(name), bus.WithListen("127.0.0.1:-1"), bus.WithDataDir(dir + "/" + name),
			bus.WithCluster("127.0.0.1:-1")}
		if len(routes) > 0 {
			o = append(o, bus.WithRoutes(routes...))
		}
		n, err := bus.Start(ctx, o...)
		if err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		t.Cleanup(func() { _ = n.Close() })
		return n
	}
	// A ready timeout far below the 30 s default: a lone seed that
	// waited for its JetStream quorum would fail here.
	o := []bus.Option{bus.WithName("s0"), bus.WithListen("127.0.0.1:-1"), bus.WithDataDir(dir + "/s0"),
		bus.WithCluster("127.0.0.1:-1"), bus.WithReadyTimeout(5 * time.Second)}
	seed, err := bus.Start(ctx, o...)
	if err != nil {
		t.Fatalf("a lone seed did not become ready: %v", err)
	}
	t.Cleanup(func() { _ = seed.Close() })
	// The core bus works alone: a call between two peers of the seed.
	a, err := peer.New(seed.Conn())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	if _, err := peer.Register(a, "where", func(context.Context, struct{}) (string, error) { return "s0", nil }); err != nil {
		t.Fatal(err)
	}
	if got := callWhere(ctx, t, a, a.ID()); got != "s0" {
		t.Fatalf("call on the lone seed: %q", got)
	}
	wctx, wcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err = seed.WaitJetStream(wctx)
	wcancel()
	if !errors.Is(err, bus.ErrNotReady) {
		t.Fatalf("WaitJetStream on a lone seed: %v, want ErrNotReady", err)
	}

	second := start("s1", seed.ClusterURL())
	if err := seed.WaitJetStream(ctx); err != nil {
		t.Fatalf("the seed's JetStream after a second node joined: %v", err)
	}
	for i := range 5 {
		if _, err := logOf(t, a).Emit(ctx, "grow.n", i); err != nil {
			t.Fatal(err)
		}
	}
	js, _ := seed.JetStream()
	waitReplicas(ctx, t, js, 1, 10*time.Second)
	if seed.LogReplicas() != 1 || second.LogReplicas() != 1 {
		t.Fatalf("two nodes: target replicas %d/%d, want 1", seed.LogReplicas(), second.LogReplicas())
	}

	third := start("s2", seed.ClusterURL())
	waitReplicas(ctx, t, js, 3, 30*time.Second)
	if got := third.LogReplicas(); got != 3 {
		t.Errorf("LogReplicas on the third node = %d", got)
	}
	q, err := peer.New(third.Conn())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	if n, err := logOf(t, q).Count(ctx, "grow.>"); err != nil || n != 5 {
		t.Fatalf("events seen from the third node: %d, %v", n, err)
	}
}
