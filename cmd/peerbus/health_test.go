package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestNodeMonitor checks that --monitor serves nats-server's monitoring
// endpoints on loopback, and that a node without it serves none.
func TestNodeMonitor(t *testing.T) {
	n := startNodeProc(t, "node", "--listen", "127.0.0.1:-1", "--data-dir", t.TempDir(), "--monitor", "-1")
	n.waitReady(t, 30*time.Second)
	mon := n.info["monitor"]
	if !strings.HasPrefix(mon, "http://127.0.0.1:") {
		t.Fatalf("monitor line %q: want http://127.0.0.1:<port> (a port alone is loopback)", mon)
	}
	get := func(path string, v any) {
		t.Helper()
		resp, err := http.Get(mon + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s\n%s", path, resp.Status, body)
		}
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v\n%s", path, err, body)
		}
	}
	var varz struct {
		ServerName string `json:"server_name"`
		Port       int    `json:"port"`
	}
	get("/varz", &varz)
	if varz.ServerName != n.info["node"] || !strings.HasSuffix(n.info["client"], ":"+strconv.Itoa(varz.Port)) {
		t.Errorf("/varz: server %q port %d; node %q client %q", varz.ServerName, varz.Port, n.info["node"], n.info["client"])
	}
	var connz struct {
		NumConns int `json:"num_connections"`
	}
	get("/connz", &connz)
	if connz.NumConns < 1 {
		t.Errorf("/connz: %d connections, want the node's own at least", connz.NumConns)
	}
	var jsz struct {
		Config *struct {
			StoreDir string `json:"store_dir"`
		} `json:"config"`
	}
	get("/jsz", &jsz)
	if jsz.Config == nil || jsz.Config.StoreDir == "" {
		t.Errorf("/jsz: no JetStream config: %+v", jsz)
	}
	var healthz struct {
		Status string `json:"status"`
	}
	get("/healthz", &healthz)
	if healthz.Status != "ok" {
		t.Errorf("/healthz: status %q", healthz.Status)
	}

	plain := startNodeProc(t, "plain", "--listen", "127.0.0.1:-1", "--no-jetstream")
	plain.waitReady(t, 30*time.Second)
	if m, ok := plain.info["monitor"]; ok {
		t.Errorf("a node without --monitor printed monitor: %s", m)
	}
}

// TestHealth checks the exit status and line of "peerbus health" for a
// ready node, a node without JetStream, the first node of a cluster
// (its log waits for a second node) and no node at all.
func TestHealth(t *testing.T) {
	n := startNodeProc(t, "node", "--listen", "127.0.0.1:-1", "--data-dir", t.TempDir())
	n.waitReady(t, 30*time.Second)
	r := runCLI(t, "", "health", "--server", n.info["client"])
	if r.code != 0 || !strings.HasPrefix(r.stdout, "ok: node "+n.info["client"]+" ("+n.info["node"]+")") {
		t.Errorf("health of a ready node: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, "", "emit", "--server", n.info["client"], "demo.x", "1"); r.code != 0 {
		t.Fatalf("emit: %s", r.stderr)
	}
	r = runCLI(t, "", "health", "--server", n.info["client"])
	if r.code != 0 || !strings.Contains(r.stdout, "event log ready (events: 1, copies: 1)") {
		t.Errorf("health with a log: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	plain := startNodeProc(t, "plain", "--listen", "127.0.0.1:-1", "--no-jetstream")
	plain.waitReady(t, 30*time.Second)
	r = runCLI(t, "", "health", "--server", plain.info["client"])
	if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "no JetStream") {
		t.Errorf("health of a node without JetStream: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, "", "health", "--no-log", "--server", plain.info["client"])
	if r.code != 0 || !strings.HasPrefix(r.stdout, "ok: ") {
		t.Errorf("health --no-log: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	first := startNodeProc(t, "first", "--listen", "127.0.0.1:-1", "--cluster", "127.0.0.1:-1", "--data-dir", t.TempDir())
	first.waitReady(t, 30*time.Second)
	r = runCLI(t, "", "health", "--timeout", "1s", "--server", first.info["client"])
	if r.code != 1 || !strings.Contains(r.stderr, "JetStream not ready") {
		t.Errorf("health of a lone first node: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	port := freePorts(t, 1)[0]
	r = runCLI(t, "", "health", "--server", "127.0.0.1:"+strconv.Itoa(port))
	if r.code != 1 || !strings.Contains(r.stderr, "not ready: cannot reach node") {
		t.Errorf("health of no node: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}
