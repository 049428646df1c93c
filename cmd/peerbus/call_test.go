package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/peerbus/peerbus/peer"
)

// cliCluster is two clustered "peerbus node" processes on loopback.
type cliCluster struct {
	n1, n2 *nodeProc
}

// startCLICluster starts two nodes with routes to both, concurrently
// (clustered JetStream waits for a quorum), and waits until both are
// ready. n1 serves echo, upper and fail as --func commands.
func startCLICluster(t *testing.T) *cliCluster {
	t.Helper()
	ports := freePorts(t, 4)
	addr := func(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }
	routes := "nats-route://" + addr(ports[2]) + ",nats-route://" + addr(ports[3])
	dir := t.TempDir()
	n1 := startNodeProc(t, "node1",
		"--name", "n1", "--listen", addr(ports[0]), "--cluster", addr(ports[2]), "--routes", routes,
		"--data-dir", filepath.Join(dir, "n1"), "--peer-name", "p1", "--group", "g1",
		"--func", "echo=cat",
		"--func", "upper=tr a-z A-Z",
		"--func", "fail=echo oops >&2; exit 3")
	n2 := startNodeProc(t, "node2",
		"--name", "n2", "--listen", addr(ports[1]), "--cluster", addr(ports[3]), "--routes", routes,
		"--data-dir", filepath.Join(dir, "n2"), "--peer-name", "p2", "--group", "g2", "--hub")
	n1.waitReady(t, 60*time.Second)
	n2.waitReady(t, 60*time.Second)
	for i, n := range []*nodeProc{n1, n2} {
		if want := "nats://" + addr(ports[i]); n.info["client"] != want {
			t.Errorf("%s: client %q, want %q", n.name, n.info["client"], want)
		}
		if want := "nats-route://" + addr(ports[2+i]); n.info["cluster"] != want {
			t.Errorf("%s: cluster %q, want %q", n.name, n.info["cluster"], want)
		}
	}
	if n1.info["tags"] != "echo,fail,info,ping,upper" || n2.info["tags"] != "info,ping" {
		t.Errorf("tags: n1 %q, n2 %q", n1.info["tags"], n2.info["tags"])
	}
	return &cliCluster{n1: n1, n2: n2}
}

// peerIDs lists the peer ids "peers --json" prints on server.
func peerIDs(t *testing.T, server string) ([]peer.Info, map[string]bool) {
	t.Helper()
	r := runCLI(t, "", "peers", "--json", "--server", server)
	if r.code != 0 {
		t.Fatalf("peers --json: exit %d: %s", r.code, r.stderr)
	}
	var infos []peer.Info
	if err := json.Unmarshal([]byte(r.stdout), &infos); err != nil {
		t.Fatalf("peers --json printed %q: %v", r.stdout, err)
	}
	ids := map[string]bool{}
	for _, i := range infos {
		ids[i.ID] = true
	}
	return infos, ids
}

func TestCLICluster(t *testing.T) {
	c := startCLICluster(t)
	s1, s2 := c.n1.info["client"], c.n2.info["client"]
	id1, id2 := c.n1.info["peer"], c.n2.info["peer"]

	t.Run("peers", func(t *testing.T) {
		var infos []peer.Info
		waitFor(t, "both peers listed by node1", 20*time.Second, func() bool {
			var ids map[string]bool
			infos, ids = peerIDs(t, s1)
			return ids[id1] && ids[id2]
		})
		for _, i := range infos {
			switch i.ID {
			case id1:
				if i.Name != "p1" || i.Group != "g1" || i.Hub || i.Node != "n1" || !i.HasTag("echo") {
					t.Errorf("peer 1: %+v", i)
				}
			case id2:
				if i.Name != "p2" || i.Group != "g2" || !i.Hub || i.Node != "n2" {
					t.Errorf("peer 2: %+v", i)
				}
			}
		}
		r := runCLI(t, "", "peers", "--server", s2)
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if r.code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "ID ") ||
			!strings.Contains(r.stdout, id1) || !strings.Contains(r.stdout, id2) ||
			!strings.Contains(r.stdout, " echo,fail,info,ping,upper ") {
			t.Errorf("peers table: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		r = runCLI(t, "", "peers", "--json", "--hub", "--server", s1)
		var hubs []peer.Info
		if err := json.Unmarshal([]byte(r.stdout), &hubs); err != nil || len(hubs) != 1 || hubs[0].ID != id2 {
			t.Errorf("peers --hub: %v %s", err, r.stdout)
		}
		r = runCLI(t, "", "peers", "--json", "--group", "nosuch", "--server", s1)
		if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
			t.Errorf("peers of an empty group: exit %d %q", r.code, r.stdout)
		}
	})

	t.Run("call any", func(t *testing.T) {
		// echo is served on node1 only: node2 reaches it over the route.
		r := runCLI(t, "", "call", "--server", s2, "--peer", "any", "echo", `{"x":1}`)
		if r.code != 0 || r.stdout != "{\"x\":1}\n" {
			t.Fatalf("call echo: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		r = runCLI(t, "[1, 2]\n", "call", "--server", s2, "echo", "-")
		if r.code != 0 || r.stdout != "[1, 2]\n" {
			t.Errorf("call echo with stdin: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		r = runCLI(t, "", "call", "--server", s1, "upper", `"abc"`)
		if r.code != 0 || r.stdout != "\"ABC\"\n" {
			t.Errorf("call upper: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		r = runCLI(t, "", "call", "--server", s2, "--group", "g1", "echo", `7`)
		if r.code != 0 || r.stdout != "7\n" {
			t.Errorf("call --group g1: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		r = runCLI(t, "", "call", "--server", s2, "--group", "g2", "echo", `7`)
		if r.code != 1 || !strings.Contains(r.stderr, `no peer of group "g2" offers tag "echo"`) {
			t.Errorf("call --group g2: exit %d, stderr %q", r.code, r.stderr)
		}
	})

	t.Run("call on a peer", func(t *testing.T) {
		r := runCLI(t, "", "call", "--server", s2, "--peer", id2, "info")
		var info peer.Info
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &info) != nil || info.ID != id2 {
			t.Errorf("call info on peer 2: exit %d %q %q", r.code, r.stdout, r.stderr)
		}
		// A peer that lacks the tag answers with its tags (a remote error).
		r = runCLI(t, "", "call", "--server", s1, "--peer", id2, "echo", `{}`)
		if r.code != 2 || !strings.Contains(r.stderr, "no_such_tag") || !strings.Contains(r.stderr, "info, ping") {
			t.Errorf("call echo on peer 2: exit %d, stderr %q", r.code, r.stderr)
		}
		r = runCLI(t, "", "call", "--server", s1, "--peer", "no-such-peer", "info")
		if r.code != 1 || !strings.Contains(r.stderr, `no peer with id "no-such-peer"`) || !strings.Contains(r.stderr, id1) {
			t.Errorf("call on an unknown peer: exit %d, stderr %q", r.code, r.stderr)
		}
	})

	t.Run("remote failure", func(t *testing.T) {
		r := runCLI(t, "", "call", "--server", s2, "fail", `{}`)
		if r.code != 2 || r.stdout != "" {
			t.Errorf("call fail: exit %d, stdout %q", r.code, r.stdout)
		}
		for _, want := range []string{"oops", "exit status 3", "*main.CommandError", id1} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("call fail: stderr %q lacks %q", r.stderr, want)
			}
		}
		if strings.Contains(r.stderr, "stack:") {
			t.Errorf("stack printed without --stack: %q", r.stderr)
		}
		r = runCLI(t, "", "call", "--server", s2, "--stack", "fail")
		if r.code != 2 || !strings.Contains(r.stderr, "stack:") || !strings.Contains(r.stderr, "sh -c echo oops") {
			t.Errorf("call --stack fail: exit %d, stderr %q", r.code, r.stderr)
		}
		r = runCLI(t, "", "call", "--server", s1, "upper", `true`)
		if r.code != 2 || !strings.Contains(r.stderr, "invalid JSON on stdout") || !strings.Contains(r.stderr, "TRUE") {
			t.Errorf("call upper true: exit %d, stderr %q", r.code, r.stderr)
		}
	})

	t.Run("unknown tag", func(t *testing.T) {
		r := runCLI(t, "", "call", "--server", s2, "nosuchtag", `{}`)
		if r.code != 1 || !strings.Contains(r.stderr, `no peer offers tag "nosuchtag"`) ||
			!strings.Contains(r.stderr, "echo, fail, info, ping, upper") {
			t.Errorf("call nosuchtag: exit %d, stderr %q", r.code, r.stderr)
		}
		r = runCLI(t, "", "call", "--server", s1, "--peer", "all", "nosuchtag")
		if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, `no peer offers tag "nosuchtag"`) ||
			!strings.Contains(r.stderr, "echo, fail, info, ping, upper") {
			t.Errorf("call --peer all nosuchtag: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("call all", func(t *testing.T) {
		r := runCLI(t, "", "call", "--server", s1, "--peer", "all", "ping")
		if r.code != 0 {
			t.Fatalf("call --peer all ping: exit %d, stderr %q", r.code, r.stderr)
		}
		var got []string
		for l := range strings.Lines(r.stdout) {
			var line struct {
				Peer   string          `json:"peer"`
				Result json.RawMessage `json:"result"`
				Error  json.RawMessage `json:"error"`
			}
			if err := json.Unmarshal([]byte(l), &line); err != nil || string(line.Result) != "null" || line.Error != nil {
				t.Errorf("line %q: %v", l, err)
			}
			got = append(got, line.Peer)
		}
		slices.Sort(got)
		want := []string{id1, id2}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("ping answered by %v, want %v", got, want)
		}

		r = runCLI(t, "", "call", "--server", s2, "--peer", "all", "--group", "g2", "ping")
		if r.code != 0 || strings.Count(r.stdout, "\n") != 1 || !strings.Contains(r.stdout, id2) {
			t.Errorf("call --peer all --group g2: exit %d %q %q", r.code, r.stdout, r.stderr)
		}

		r = runCLI(t, "", "call", "--server", s2, "--peer", "all", "fail")
		var line struct {
			Peer  string `json:"peer"`
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if r.code != 2 || json.Unmarshal([]byte(r.stdout), &line) != nil || line.Peer != id1 ||
			line.Error.Code != peer.CodeError || !strings.Contains(line.Error.Message, "oops") {
			t.Errorf("call --peer all fail: exit %d %q %q", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		// The JSON is checked before connecting: the server does not exist.
		dead := "nats://127.0.0.1:" + strconv.Itoa(freePorts(t, 1)[0])
		for _, tc := range []struct {
			stdin string
			args  []string
			want  string
		}{
			{"", []string{"call", "--server", dead, "echo", `{"x":`}, "invalid JSON argument"},
			{"{oops}", []string{"call", "--server", dead, "echo", "-"}, "invalid JSON stdin"},
			{"", []string{"call", "--server", dead, "echo", ""}, "empty JSON argument"},
			{"", []string{"call", "--server", dead, "bad*tag"}, "invalid tag"},
			{"", []string{"call", "--server", dead, "--timeout", "soon", "echo"}, `invalid argument "soon"`},
			{"", []string{"call", "--server", dead}, "accepts between 1 and 2 arg(s)"},
			{"", []string{"call", "--server", dead, "--peer", id1, "--group", "g1", "echo"}, "--group applies to --peer any or all"},
			{"", []string{"emit", "--server", dead, "bad..name"}, "invalid event name"},
			{"", []string{"emit", "--server", dead, "demo.x", "nope"}, "invalid JSON argument"},
			{"", []string{"watch", "--server", dead, "a.>.b"}, "invalid event name"},
			{"", []string{"call", "--server", "nats://bad host:1", "echo"}, "invalid --server URL"},
		} {
			r := runCLI(t, tc.stdin, tc.args...)
			if r.code != 1 || !strings.Contains(r.stderr, tc.want) || strings.Contains(r.stderr, "cannot reach") {
				t.Errorf("peerbus %q: exit %d, stderr %q; want exit 1 and %q", tc.args, r.code, r.stderr, tc.want)
			}
		}
	})

	t.Run("unreachable server", func(t *testing.T) {
		port := strconv.Itoa(freePorts(t, 1)[0])
		for _, args := range [][]string{
			{"call", "--server", "127.0.0.1:" + port, "echo", `{}`},
			{"peers", "--server", "nats://127.0.0.1:" + port},
			{"emit", "--server", "nats://127.0.0.1:" + port, "demo.x"},
			{"watch", "--server", "nats://127.0.0.1:" + port, "demo.>"},
		} {
			r := runCLI(t, "", args...)
			if r.code != 1 || !strings.Contains(r.stderr, "cannot reach node at nats://127.0.0.1:"+port) ||
				!strings.Contains(r.stderr, "connection refused") {
				t.Errorf("peerbus %q: exit %d, stderr %q", args, r.code, r.stderr)
			}
			if r.elapsed > connectTimeout {
				t.Errorf("peerbus %q took %v to fail", args, r.elapsed)
			}
		}
	})

	t.Run("watch and emit", func(t *testing.T) {
		testWatchEmit(t, s1, s2)
	})

	t.Run("leave", func(t *testing.T) {
		c.n2.signal(syscall.SIGTERM)
		code, ok := c.n2.wait(10 * time.Second)
		if !ok || code != 0 {
			t.Fatalf("node2 after SIGTERM: exited=%v code=%d; stderr:\n%s", ok, code, c.n2.stderr.String())
		}
		if l, ok := c.n2.nextLine(time.Second); ok {
			t.Errorf("node2 printed %q on stdout after ready", l)
		}
		waitFor(t, "node2's peer gone from node1's list", 10*time.Second, func() bool {
			_, ids := peerIDs(t, s1)
			return ids[id1] && !ids[id2]
		})
		r := runCLI(t, "", "call", "--server", s1, "--peer", id2, "ping")
		if r.code != 1 || !strings.Contains(r.stderr, "no peer with id") {
			t.Errorf("call on the stopped peer: exit %d, stderr %q", r.code, r.stderr)
		}
	})
}

func TestReadJSONArg(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		stdin string
		want  string
		err   string
	}{
		{[]string{"t"}, "", "null", ""},
		{[]string{"t", ` {"a":1} `}, "", `{"a":1}`, ""},
		{[]string{"t", "-"}, "[1,2]\n", "[1,2]", ""},
		{[]string{"t", "-"}, "", "", "empty JSON stdin"},
		{[]string{"t", "{"}, "", "", "invalid JSON argument: unexpected end of JSON input"},
		{[]string{"t", `{"a":}`}, "", "", "at byte 6"},
		{[]string{"t", "1 2"}, "", "", "invalid JSON argument"},
	} {
		got, err := readJSONArg(tc.args, 1, strings.NewReader(tc.stdin))
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: err = %v, want %q", tc.args, err, tc.err)
		case tc.err == "" && (err != nil || string(got) != tc.want):
			t.Errorf("%q: got %q, %v; want %q", tc.args, got, err, tc.want)
		}
	}
}

func TestCommandsHelp(t *testing.T) {
	for _, c := range []string{"node", "call", "peers", "emit", "watch", "health", "stats", "top"} {
		r := runCLI(t, "", c, "--help")
		if r.code != 0 || !strings.Contains(r.stdout, "Examples:") || !strings.Contains(r.stdout, "peerbus "+c) {
			t.Errorf("peerbus %s --help: exit %d\n%s", c, r.code, r.stdout)
		}
	}
}

// TestExampleCalc runs examples/calc with its own node and against a
// running node, and calls multiply with the CLI.
func TestExampleCalc(t *testing.T) {
	calc := buildBinary(t, "../../examples/calc", "calc")
	check := func(t *testing.T, p *proc, server string) {
		t.Helper()
		l, ok := p.nextLine(30 * time.Second)
		if !ok || !strings.Contains(l, "serves multiply") {
			t.Fatalf("calc printed %q (ok=%v); stderr:\n%s", l, ok, p.stderr.String())
		}
		r := runCLI(t, "", "call", "--server", server, "--peer", "any", "multiply", `{"a":5,"b":10}`)
		if r.code != 0 || r.stdout != "50\n" {
			t.Errorf("call multiply: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		p.signal(os.Interrupt)
		if code, ok := p.wait(10 * time.Second); !ok || code != 0 {
			t.Errorf("calc after SIGINT: exited=%v code=%d", ok, code)
		}
	}
	t.Run("embedded node", func(t *testing.T) {
		addr := "127.0.0.1:" + strconv.Itoa(freePorts(t, 1)[0])
		p := startProc(t, "calc", testEnv("PEERBUS_LISTEN="+addr, "PEERBUS_DATA_DIR="+t.TempDir()), calc)
		check(t, p, addr)
	})
	t.Run("running node", func(t *testing.T) {
		n := startNodeProc(t, "node", "--listen", "127.0.0.1:-1", "--no-jetstream")
		n.waitReady(t, 30*time.Second)
		p := startProc(t, "calc", testEnv("PEERBUS_NATS_URL="+n.info["client"], "PEERBUS_GROUP=math"), calc)
		check(t, p, n.info["client"])
	})
	t.Run("node on its address", func(t *testing.T) {
		// The Quick start's case: a node holds the address calc would
		// listen on, and calc joins it.
		n := startNodeProc(t, "node", "--listen", "127.0.0.1:-1", "--data-dir", t.TempDir())
		n.waitReady(t, 30*time.Second)
		addr := strings.TrimPrefix(n.info["client"], "nats://")
		p := startProc(t, "calc", testEnv("PEERBUS_LISTEN="+addr), calc)
		check(t, p, n.info["client"])
		if !strings.Contains(p.stderr.String(), "joined the node on "+n.info["client"]) {
			t.Errorf("calc did not say it joined; stderr:\n%s", p.stderr.String())
		}
	})
}
