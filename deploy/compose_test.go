//go:build compose

// Package deploy_test tests the docker-compose.yml deployment: three
// peerbus nodes and the calc example in containers built FROM scratch.
// It needs Docker with compose (the plugin or docker-compose) and is
// behind the "compose" build tag:
//
//	go test -tags compose -count=1 -v ./deploy/
//
// Without Docker it skips, unless CI=true: then it fails.
package deploy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/peer"
)

// requireDocker skips the test when Docker or compose is missing, or
// fails it when CI=true.
func requireDocker(t *testing.T, root string) {
	t.Helper()
	why := ""
	if _, err := exec.LookPath("docker"); err != nil {
		why = "no docker command"
	} else if out, err := exec.Command("docker", "info").CombinedOutput(); err != nil {
		why = "docker does not answer: " + strings.TrimSpace(string(out))
	} else if out, err := exec.Command(filepath.Join(root, "deploy", "compose.sh"), "version").CombinedOutput(); err != nil {
		why = "no docker compose: " + strings.TrimSpace(string(out))
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("compose test cannot run: %s (CI=true, so this fails instead of skipping)", why)
	}
	t.Skipf("compose test skipped: %s", why)
}

// deployment is one compose project started by the test.
type deployment struct {
	t       *testing.T
	root    string
	project string
	env     []string
}

// run runs a command in the repository root with the project's
// environment and returns its combined output.
func (d *deployment) run(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env = d.root, d.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (d *deployment) must(timeout time.Duration, name string, args ...string) string {
	d.t.Helper()
	out, err := d.run(timeout, name, args...)
	if err != nil {
		d.t.Fatal(err)
	}
	return out
}

// compose runs deploy/compose.sh (docker compose or docker-compose).
func (d *deployment) compose(args ...string) string {
	d.t.Helper()
	return d.must(5*time.Minute, "deploy/compose.sh", args...)
}

// container returns the container id of a service.
func (d *deployment) container(service string) string {
	d.t.Helper()
	id := strings.TrimSpace(d.compose("ps", "-q", service))
	if id == "" {
		d.t.Fatalf("no container for %s", service)
	}
	return id
}

// network is the name of the project's private network.
func (d *deployment) network() string { return d.project + "_bus" }

// leftovers lists containers, networks and volumes of the project.
func (d *deployment) leftovers() []string {
	var left []string
	label := "label=com.docker.compose.project=" + d.project
	for _, kind := range [][]string{
		{"ps", "-a", "-q", "--filter", label},
		{"network", "ls", "-q", "--filter", label},
		{"volume", "ls", "-q", "--filter", label},
	} {
		out, err := d.run(time.Minute, "docker", kind...)
		if err != nil {
			left = append(left, err.Error())
			continue
		}
		for _, f := range strings.Fields(out) {
			left = append(left, kind[0]+" "+f)
		}
	}
	return left
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// presenceLog records the presence events a peer sees.
type presenceLog struct {
	mu     sync.Mutex
	events []peer.PresenceEvent
}

func (l *presenceLog) add(e peer.PresenceEvent) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

// find returns the first event of one of kinds for the peer named name
// at or after since.
func (l *presenceLog) find(name string, since time.Time, kinds ...peer.PresenceKind) (peer.PresenceEvent, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if e.Peer.Name == name && !e.Time.Before(since) && slices.Contains(kinds, e.Kind) {
			return e, true
		}
	}
	return peer.PresenceEvent{}, false
}

// waitFor polls cond every 100ms until it holds and returns how long it
// took, failing after timeout.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(start)
}

// newDeployment prepares a compose project of its own for the test, with
// node 1's port published on a free port of 127.0.0.1 and env added to
// the environment of its commands, builds the binaries and the image,
// and takes everything down when the test ends.
func newDeployment(t *testing.T, env ...string) (*deployment, int) {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	requireDocker(t, root)
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	port := freePort(t)
	d := &deployment{t: t, root: root, project: "pbtest" + hex.EncodeToString(rnd[:])}
	d.env = append(os.Environ(), "COMPOSE_PROJECT_NAME="+d.project, "PEERBUS_COMPOSE_PORT="+strconv.Itoa(port))
	d.env = append(d.env, env...)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := d.run(time.Minute, "deploy/compose.sh", "logs", "--no-color", "--tail", "60")
			t.Logf("compose logs:\n%s", out)
		}
		if out, err := d.run(5*time.Minute, "deploy/compose.sh", "down", "-v", "--remove-orphans", "--timeout", "5"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
		if left := d.leftovers(); len(left) > 0 {
			t.Errorf("left behind after compose down: %v", left)
		}
	})
	start := time.Now()
	d.must(10*time.Minute, "deploy/build.sh")
	t.Logf("static binaries built in %v", time.Since(start).Round(time.Millisecond))
	return d, port
}

// build builds the image.
func (d *deployment) build() {
	d.t.Helper()
	start := time.Now()
	d.compose("build", "--quiet")
	d.t.Logf("image built in %v", time.Since(start).Round(time.Millisecond))
}

// upAndReady starts the project and waits until the three nodes print
// "ready" (JetStream current with a meta leader) and their healthchecks
// pass; it returns the nodes' container ids.
func (d *deployment) upAndReady(nodes []string) map[string]string {
	t := d.t
	t.Helper()
	start := time.Now()
	d.compose("up", "-d")
	ids := map[string]string{}
	for _, n := range nodes {
		ids[n] = d.container(n)
	}
	waitFor(t, "three nodes ready", 90*time.Second, func() bool {
		for _, n := range nodes {
			out, _ := d.run(time.Minute, "docker", "logs", ids[n])
			if !strings.Contains(out, "\nready\n") {
				return false
			}
		}
		return true
	})
	t.Logf("MEASURE compose: 3-node cluster ready %v after compose up", (time.Since(start)).Round(time.Millisecond))
	// The healthcheck ("peerbus health", the image has no shell) passes
	// on every node; calc waits for it (depends_on with condition
	// service_healthy).
	health := func(id string) string {
		out, _ := d.run(time.Minute, "docker", "inspect", "--format", "{{.State.Health.Status}}", id)
		return strings.TrimSpace(out)
	}
	waitFor(t, "three nodes healthy", 90*time.Second, func() bool {
		for _, n := range nodes {
			if health(ids[n]) != "healthy" {
				return false
			}
		}
		return true
	})
	t.Logf("MEASURE compose: 3 nodes healthy %v after compose up", (time.Since(start)).Round(time.Millisecond))
	return ids
}

func TestCompose(t *testing.T) {
	d, port := newDeployment(t)
	d.build()
	nodes := []string{"node1", "node2", "node3"}
	ids := d.upAndReady(nodes)
	var err error

	// The host talks to node 1 through its port published on 127.0.0.1.
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	var nc *nats.Conn
	waitFor(t, "node 1's published port", 30*time.Second, func() bool {
		nc, err = nats.Connect(url, nats.MaxReconnects(-1))
		return err == nil
	})
	defer nc.Close()
	p, err := peer.New(nc, peer.AsClient())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	lg, err := eventlog.New(p)
	if err != nil {
		t.Fatal(err)
	}
	var pres presenceLog
	watch := p.WatchPresence(pres.add)
	defer watch.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	ids2 := map[string]string{} // peer name -> peer id
	waitFor(t, "the peers of the three nodes and calc", 60*time.Second, func() bool {
		infos, err := p.Peers(ctx)
		if err != nil {
			return false
		}
		for _, i := range infos {
			ids2[i.Name] = i.ID
		}
		return len(infos) == 4 && ids2["calc"] != "" && ids2["node1"] != "" && ids2["node2"] != "" && ids2["node3"] != ""
	})

	call := func(tag, args string, opts ...peer.CallOption) (string, error) {
		out, err := p.Call(ctx, tag, []byte(args), append(opts, peer.Timeout(3*time.Second))...)
		return string(out), err
	}
	mustCall := func(within time.Duration, want, tag, args string, opts ...peer.CallOption) {
		t.Helper()
		var got string
		var err error
		waitFor(t, "call "+tag, within, func() bool {
			got, err = call(tag, args, opts...)
			return err == nil && (want == "" || got == want)
		})
	}
	// Calls across containers: calc, and every node's own peer.
	mustCall(10*time.Second, "50", "multiply", `{"a":5,"b":10}`, peer.OnAny())
	for _, n := range nodes {
		mustCall(10*time.Second, "", "ping", "null", peer.OnPeer(ids2[n]))
	}
	// Calls from inside a container, with the image's own CLI.
	if out := d.must(time.Minute, "docker", "exec", ids["node3"], "/peerbus", "call", "multiply", `{"a":6,"b":7}`); strings.TrimSpace(out) != "42" {
		t.Errorf("multiply from node 3's container printed %q", out)
	}

	// Emit and replay; the event log becomes R3.
	emit := func(name string, n int) {
		t.Helper()
		for i := range n {
			if _, err := lg.Emit(ctx, name, i); err != nil {
				t.Fatalf("emit %s %d: %v", name, i, err)
			}
		}
	}
	replay := func() []string {
		t.Helper()
		var names []string
		for e, err := range lg.Replay(ctx, "compose.>", eventlog.FromStart()) {
			if err != nil {
				t.Fatalf("replay: %v", err)
			}
			names = append(names, e.Name)
		}
		return names
	}
	emit("compose.before", 5)
	if got := replay(); len(got) != 5 {
		t.Fatalf("replay after 5 emits: %v", got)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	streamInfo := func() *jetstream.StreamInfo {
		s, err := js.Stream(ctx, eventlog.Stream)
		if err != nil {
			return nil
		}
		return s.CachedInfo()
	}
	// replicaCurrent reports whether node's replica of the log is
	// current and caught up (or node leads the stream).
	replicaCurrent := func(node string, replicas int) bool {
		info := streamInfo()
		if info == nil || info.Config.Replicas != replicas || info.Cluster == nil || info.Cluster.Leader == "" {
			return false
		}
		if info.Cluster.Leader == node {
			return true
		}
		for _, r := range info.Cluster.Replicas {
			if r.Name == node {
				return r.Current && !r.Offline && r.Lag == 0
			}
		}
		return false
	}
	waitFor(t, "the event log at R3", 30*time.Second, func() bool {
		return replicaCurrent("node1", 3) && replicaCurrent("node2", 3) && replicaCurrent("node3", 3)
	})

	// Node 3 dies (SIGKILL: no goodbye): the others go on.
	killed := time.Now()
	d.must(time.Minute, "docker", "kill", ids["node3"])
	gone := waitFor(t, "node 3's peer reported gone", 10*time.Second, func() bool {
		_, ok := pres.find("node3", killed, peer.PeerGone, peer.PeerLeft)
		return ok
	})
	t.Logf("MEASURE compose: killed node reported gone %v after the kill", gone.Round(time.Millisecond))
	if gone > 5*time.Second {
		t.Errorf("node 3 reported gone after %v, want within 5s", gone)
	}
	for _, n := range []string{"node1", "node2"} {
		mustCall(5*time.Second, "", "ping", "null", peer.OnPeer(ids2[n]))
	}
	// calc may have been connected to node 3: it reconnects to another.
	d2 := time.Now()
	mustCall(30*time.Second, "50", "multiply", `{"a":5,"b":10}`, peer.OnAny())
	t.Logf("multiply answered %v after the kill", time.Since(d2).Round(time.Millisecond))
	emit("compose.degraded", 5)
	if got := replay(); len(got) != 10 {
		t.Fatalf("replay with node 3 down: %d events, want 10", len(got))
	}

	// Node 3 comes back and catches up.
	back := time.Now()
	d.compose("start", "node3")
	waitFor(t, "node 3 back", 60*time.Second, func() bool {
		e, ok := pres.find("node3", back, peer.PeerJoined)
		if ok {
			ids2["node3"] = e.Peer.ID // a new peer id: a new process
		}
		return ok && replicaCurrent("node3", 3)
	})
	t.Logf("MEASURE compose: restarted node back and its replica current %v after start", time.Since(back).Round(time.Millisecond))

	// Partition node 2 off the network; the majority goes on.
	d.must(time.Minute, "docker", "network", "disconnect", d.network(), ids["node2"])
	parted := time.Now()
	waitFor(t, "node 2 reported gone", 10*time.Second, func() bool {
		_, ok := pres.find("node2", parted, peer.PeerGone, peer.PeerLeft)
		return ok
	})
	emit("compose.partition", 5)
	mustCall(5*time.Second, "", "ping", "null", peer.OnPeer(ids2["node3"]))
	// calc may have been connected to node 2: it notices the dead
	// connection by its pings and moves to another node.
	mustCall(30*time.Second, "50", "multiply", `{"a":5,"b":10}`, peer.OnAny())
	t.Logf("MEASURE compose: multiply answered %v after the partition", time.Since(parted).Round(time.Millisecond))

	// Heal: node 2 rejoins (under its name on the network) and its
	// replica of the log catches up with the events of the partition.
	healed := time.Now()
	d.must(time.Minute, "docker", "network", "connect", "--alias", "node2", d.network(), ids["node2"])
	rejoin := waitFor(t, "node 2 rejoins", 60*time.Second, func() bool {
		_, ok := pres.find("node2", healed, peer.PeerJoined)
		return ok
	})
	caught := waitFor(t, "node 2's replica catches up", 60*time.Second, func() bool { return replicaCurrent("node2", 3) })
	t.Logf("MEASURE compose: partitioned node rejoined %v after the heal, replica current %v later",
		rejoin.Round(time.Millisecond), caught.Round(time.Millisecond))
	mustCall(10*time.Second, "", "ping", "null", peer.OnPeer(ids2["node2"]))

	// Prove node 2's copy holds every event: make it the stream leader
	// (which serves replays) and replay.
	waitFor(t, "node 2 leads the event log", 30*time.Second, func() bool {
		if info := streamInfo(); info != nil && info.Cluster != nil && info.Cluster.Leader == "node2" {
			return true
		}
		req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": "node2"}})
		_, _ = nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+eventlog.Stream, req, 5*time.Second)
		time.Sleep(time.Second)
		return false
	})
	got := replay()
	want := slices.Concat(slices.Repeat([]string{"compose.before"}, 5), slices.Repeat([]string{"compose.degraded"}, 5),
		slices.Repeat([]string{"compose.partition"}, 5))
	if !slices.Equal(got, want) {
		t.Fatalf("replay from node 2's copy: %v, want %v", got, want)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "events replayed from node 2's copy: %d", len(got))
	t.Log(b.String())
}
