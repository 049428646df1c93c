package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerbus/peerbus/internal/netlab"
)

// startNodeIn starts "peerbus node args..." inside namespace ns.
func startNodeIn(t *testing.T, ns *netlab.Namespace, name string, args ...string) *nodeProc {
	t.Helper()
	full := append([]string{"netns", "exec", ns.Name, peerbusBin(t), "node", "--log-level", "info"}, args...)
	p := startProc(t, name, testEnv(), "ip", full...)
	return &nodeProc{proc: p, info: map[string]string{}}
}

// runIn runs the peerbus CLI inside namespace ns.
func runIn(t *testing.T, ns *netlab.Namespace, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, peerbusBin(t)}, args...)...)
	cmd.Env = testEnv()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("peerbus %v in %s: %v", args, ns.Name, err)
	}
	return r
}

// peerNamesIn lists the peer names seen from the node in ns.
func peerNamesIn(t *testing.T, ns *netlab.Namespace) []string {
	t.Helper()
	r := runIn(t, ns, "peers", "--json")
	if r.code != 0 {
		return nil
	}
	var list []struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("peers --json printed %q: %v", r.stdout, err)
	}
	var names []string
	for _, p := range list {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	return names
}

// TestDiscoveryInNamespaces starts nodes with --discover and no routes in
// network namespaces on one bridge (the lab's public segment): three
// started together form one cluster; a node of another cluster stays
// out, ready alone as the first node of its own cluster, and forms it
// with a second node that comes later; a node started later joins the
// running cluster.
func TestDiscoveryInNamespaces(t *testing.T) {
	netlab.Require(t)
	lab := netlab.New(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(lab.Dump())
		}
	})
	names := []string{"a", "b", "c", "d", "x", "y"}
	hosts := map[string]*netlab.Host{}
	for _, n := range names {
		hosts[n] = lab.AddPublicHost(n, 1)
	}
	peerbusBin(t) // build before timing
	node := func(name string, extra ...string) *nodeProc {
		args := append([]string{"--discover", "--discovery-window", "2s", "--data-dir", t.TempDir(),
			"--peer-name", name, "--func", "who=echo '\"" + name + "\"'"}, extra...)
		return startNodeIn(t, hosts[name].Namespace, name, args...)
	}

	start := time.Now()
	nodes := map[string]*nodeProc{}
	for _, n := range []string{"a", "b", "c"} {
		nodes[n] = node(n)
	}
	// A node of another cluster, started at the same time: it ignores
	// the others and is the first node of its own cluster.
	nodes["x"] = node("x", "--cluster-name", "other")
	var wg sync.WaitGroup
	for _, n := range []string{"a", "b", "c"} {
		wg.Add(1)
		go func() { defer wg.Done(); nodes[n].waitReady(t, 40*time.Second) }()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("3-node cluster formed by discovery, ready %v after start (2 s of it the discovery window)",
		time.Since(start).Round(time.Millisecond))

	for _, n := range []string{"a", "b", "c"} {
		info := nodes[n].info
		addr := hosts[n].Addr().String()
		// The default name and the announced route carry the node's
		// address on the LAN: the namespaces share the hostname.
		if !strings.Contains(info["node"], strings.ReplaceAll(addr, ".", "-")) {
			t.Errorf("%s: default node name %q lacks its address %s", n, info["node"], addr)
		}
		if info["cluster"] != "nats-route://"+addr+":6222" {
			t.Errorf("%s: cluster URL %q, want its LAN address %s:6222", n, info["cluster"], addr)
		}
	}
	waitFor(t, "a, b and c see each other", 15*time.Second, func() bool {
		return slices.Equal(peerNamesIn(t, hosts["a"].Namespace), []string{"a", "b", "c"}) &&
			slices.Equal(peerNamesIn(t, hosts["c"].Namespace), []string{"a", "b", "c"})
	})
	r := runIn(t, hosts["a"].Namespace, "call", "--peer", nodes["c"].info["peer"], "who")
	if r.code != 0 || strings.TrimSpace(r.stdout) != `"c"` {
		t.Errorf("call from a to c: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	// The event log works on the discovered cluster.
	if r := runIn(t, hosts["b"].Namespace, "emit", "demo.found", `{"n":1}`); r.code != 0 {
		t.Errorf("emit on b: exit %d: %s", r.code, r.stderr)
	}

	// The node of the other cluster heard the beacons but stays out: it
	// is the first node of its own cluster, ready alone, its event log
	// waiting for a second node. One comes, and the log works.
	nodes["x"].waitReady(t, 30*time.Second)
	if got := peerNamesIn(t, hosts["x"].Namespace); !slices.Equal(got, []string{"x"}) {
		t.Errorf("x alone sees %v", got)
	}
	waitFor(t, "x to say its event log waits for a second node", 10*time.Second, func() bool {
		return strings.Contains(nodes["x"].stderr.String(), "first node of the cluster")
	})
	nodes["y"] = node("y", "--cluster-name", "other")
	nodes["y"].waitReady(t, 30*time.Second)
	waitFor(t, "x and y see each other", 15*time.Second, func() bool {
		return slices.Equal(peerNamesIn(t, hosts["x"].Namespace), []string{"x", "y"})
	})
	if r := runIn(t, hosts["x"].Namespace, "emit", "demo.other", `{"n":1}`); r.code != 0 {
		t.Errorf("emit on x once y joined: exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(nodes["x"].stderr.String(), "ignoring a node of another cluster") {
		t.Errorf("x did not report the foreign beacons; stderr:\n%s", nodes["x"].stderr.String())
	}

	// A node started later hears the running cluster and joins it; the
	// running nodes hear it too and add a route to it at run time.
	late := time.Now()
	nodes["d"] = node("d")
	nodes["d"].waitReady(t, 30*time.Second)
	waitFor(t, "d joins", 15*time.Second, func() bool {
		return slices.Equal(peerNamesIn(t, hosts["a"].Namespace), []string{"a", "b", "c", "d"})
	})
	t.Logf("late node joined %v after its start", time.Since(late).Round(time.Millisecond))
	r = runIn(t, hosts["d"].Namespace, "call", "--peer", nodes["a"].info["peer"], "who")
	if r.code != 0 || strings.TrimSpace(r.stdout) != `"a"` {
		t.Errorf("call from d to a: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	waitFor(t, "a adds a route to d", 10*time.Second, func() bool {
		return strings.Contains(nodes["a"].stderr.String(), "discovery: route added")
	})
	if got := peerNamesIn(t, hosts["x"].Namespace); !slices.Equal(got, []string{"x", "y"}) {
		t.Errorf("the other cluster's node sees %v after d joined", got)
	}
	if got := peerNamesIn(t, hosts["b"].Namespace); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
		t.Errorf("b sees %v at the end", got)
	}
}
