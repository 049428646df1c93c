package main

import (
	"bytes"
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/peerbus/peerbus/bridge"
	"github.com/peerbus/peerbus/internal/echotest"
)

// forwardProc is a running "peerbus forward".
type forwardProc struct {
	*proc
	ep echoEndpoint // the local listening address
}

// startForward starts "peerbus forward --server server args..." and
// waits for its ready line.
func startForward(t *testing.T, server string, args ...string) *forwardProc {
	t.Helper()
	p := startProc(t, "forward", testEnv(), peerbusBin(t), append([]string{"forward", "--server", server}, args...)...)
	f := &forwardProc{proc: p}
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, ok := p.nextLine(time.Until(deadline))
		if !ok {
			t.Fatalf("forward: no ready line; stderr:\n%s", p.stderr.String())
		}
		if l == "ready" {
			break
		}
		if v, ok := strings.CutPrefix(l, "listening: "); ok {
			proto, addr, _ := strings.Cut(v, "://")
			ap, err := netip.ParseAddrPort(addr)
			if err != nil {
				t.Fatalf("forward: bad listening line %q", l)
			}
			f.ep = echoEndpoint{proto: proto, addr: ap}
		}
	}
	if !f.ep.addr.IsValid() {
		t.Fatal("forward printed no listening line")
	}
	return f
}

// halfCloseThrough runs tool against ep with payload on stdin: the tool
// half-closes after stdin ends (socat by default, nc with -N) and must
// print exactly the echoed payload and exit 0 once the far side has
// half-closed too.
func halfCloseThrough(t *testing.T, tool string, ep echoEndpoint, payload []byte) {
	t.Helper()
	path := requireNetTool(t, tool)
	args := clientArgs(tool, ep)
	if tool == "nc" {
		args = append([]string{"-N"}, args...)
	} else {
		args = append([]string{"-t", "10"}, args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdin = bytes.NewReader(payload)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v; stderr: %s", tool, args, err, errb.String())
	}
	if !bytes.Equal(out.Bytes(), payload) {
		t.Fatalf("%s %v: echoed %d bytes, want the %d sent", tool, args, out.Len(), len(payload))
	}
	t.Logf("%s: %d bytes echoed and both sides closed in %v", tool, len(payload), time.Since(start).Round(time.Millisecond))
}

// TestForwardWithSocatAndNc has socat and nc (programs no one here
// wrote) talk through "peerbus forward" to services a "peerbus expose"
// process exposes on the other node of a cluster: TCP over the relay and
// over the default (direct) path, with half-close, and UDP.
func TestForwardWithSocatAndNc(t *testing.T) {
	requireNetTool(t, "socat")
	requireNetTool(t, "nc")
	a, b := startBridgeCluster(t)
	ex := startExpose(t, a, "echo", echotest.TCP(t), "uecho", echotest.UDP(t))
	relay := startForward(t, b, "--listen", "127.0.0.1:0", "--strategies", "relay", ex.peer, "echo")
	direct := startForward(t, b, "--listen", "tcp://127.0.0.1:0", "any", "echo")
	udp := startForward(t, b, "--listen", "udp://127.0.0.1:0", ex.peer, "uecho")
	// The exposer's subscriptions reach node b asynchronously.
	p := bridgeClient(t, b)
	dialWhenReady(t, p, ex.peer, "echo", bridge.WithStrategies(bridge.Relay)).Close()

	payload := bytes.Repeat([]byte("peerbus forward with half-close\n"), 32<<10) // 1 MiB
	for _, fw := range []*forwardProc{relay, direct} {
		for _, tool := range []string{"socat", "nc"} {
			talkThrough(t, tool, fw.ep, "hello "+tool+"\n")
			halfCloseThrough(t, tool, fw.ep, payload)
		}
	}
	for _, tool := range []string{"socat", "nc"} {
		talkThrough(t, tool, udp.ep, "datagram from "+tool+"\n")
	}
	for fw, want := range map[*forwardProc]string{relay: "path=relay", direct: "path=direct", udp: "path=direct"} {
		if !strings.Contains(fw.stderr.String(), want) {
			t.Errorf("forward log lacks %q:\n%s", want, fw.stderr.String())
		}
	}
}

// TestExposeForwardBadArgs checks the argument errors of both commands.
func TestExposeForwardBadArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"expose"}, "want NAME TARGET pairs"},
		{[]string{"expose", "web"}, "want NAME TARGET pairs"},
		{[]string{"expose", "web", "http://x:1"}, "bad target"},
		{[]string{"expose", "bad name", "tcp://127.0.0.1:1"}, "service name"},
		{[]string{"expose", "--server", "127.0.0.1:1", "web", "tcp://127.0.0.1:1"}, "cannot reach node"},
		{[]string{"forward", "peer", "web"}, `required flag(s) "listen" not set`},
		{[]string{"forward", "--listen", "nonsense", "peer", "web"}, "--listen"},
		{[]string{"forward", "--listen", "127.0.0.1:0", "--strategies", "teleport", "peer", "web"}, "unknown strategy"},
		{[]string{"forward", "--listen", "127.0.0.1:0", "peer"}, "accepts 2 arg(s)"},
		{[]string{"forward", "--listen", "127.0.0.1:0", "--server", "127.0.0.1:1", "any", "web"}, "cannot reach node"},
	} {
		r := runCLI(t, "", tc.args...)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("peerbus %v: exit %d, stderr %q; want exit 1 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
}
