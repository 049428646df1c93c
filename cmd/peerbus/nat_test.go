package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerbus/peerbus/netcore/nat"
	"github.com/spf13/cobra"
)

// lockedBuffer is a bytes.Buffer safe to read while a command writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// execInProcess runs a freshly built command with args and returns its
// stdout, stderr and error.
func execInProcess(ctx context.Context, cmd *cobra.Command, args ...string) (string, string, error) {
	var out, errb lockedBuffer
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	err := cmd.ExecuteContext(ctx)
	return out.String(), errb.String(), err
}

// loopbackSTUN starts an RFC 5780 STUN server on 127.0.0.1 and 127.0.0.2.
func loopbackSTUN(t *testing.T) *nat.Server {
	t.Helper()
	s, err := nat.ListenServer(context.Background(), nat.ServerConfig{
		Listen: netip.MustParseAddrPort("127.0.0.1:0"),
		AltIP:  netip.MustParseAddr("127.0.0.2"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestNATCmdNeedsServer(t *testing.T) {
	_, _, err := execInProcess(context.Background(), newNATCmd())
	if err == nil || !strings.Contains(err.Error(), "--stun") || !strings.Contains(err.Error(), "no default") {
		t.Errorf("err %v, want a clear message about --stun and no default server", err)
	}
}

func TestNATCmdBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--stun", "127.0.0.1:1", "--timeout", "0s"},
		{"--stun", "127.0.0.1:1", "--quorum", "2"},
		{"--stun", "127.0.0.1:1", "--local", "nope"},
		{"--stun", "127.0.0.1:notaport"},
	} {
		if _, _, err := execInProcess(context.Background(), newNATCmd(), args...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

func TestNATCmdJSON(t *testing.T) {
	s := loopbackSTUN(t)
	out, _, err := execInProcess(context.Background(), newNATCmd(), "--stun", s.Addr().String(), "--json")
	if err != nil {
		t.Fatalf("nat --json: %v", err)
	}
	var res nat.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	if res.Classic != nat.OpenInternet || res.NAT || res.Mapping != nat.EndpointIndependent ||
		res.Filtering != nat.EndpointIndependent || res.MappedAddress.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("got %+v", res)
	}
	if res.DurationMillis <= 0 || len(res.Tests) == 0 {
		t.Errorf("duration %v ms, %d tests", res.DurationMillis, len(res.Tests))
	}
}

func TestNATCmdText(t *testing.T) {
	s := loopbackSTUN(t)
	out, _, err := execInProcess(context.Background(), newNATCmd(), "--stun", s.Addr().String(), "--verbose")
	if err != nil {
		t.Fatalf("nat: %v", err)
	}
	for _, want := range []string{
		"NAT type         open-internet", "Mapping          endpoint-independent",
		"Filtering        endpoint-independent", "Port allocation  preserving",
		"(1 of 1 servers agree, quorum 1)", "filtering-2", "ip+port",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestNATCmdTimeout(t *testing.T) {
	silent, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	begin := time.Now()
	out, _, err := execInProcess(context.Background(), newNATCmd(),
		"--stun", silent.LocalAddr().String(), "--timeout", "100ms")
	if !errors.Is(err, nat.ErrNoResponse) {
		t.Errorf("err %v, want ErrNoResponse", err)
	}
	if !strings.Contains(out, "NAT type         blocked") {
		t.Errorf("output lacks the blocked type:\n%s", out)
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("took %v with --timeout 100ms", d)
	}
}

func TestSTUNServerCmd(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out lockedBuffer
	cmd := newSTUNServerCmd()
	cmd.SetArgs([]string{"--listen", "127.0.0.1:0", "--alt-ip", "127.0.0.2"})
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()

	re := regexp.MustCompile(`listening on (\S+) \(RFC 5780, other address (\S+);`)
	var m []string
	deadline := time.Now().Add(10 * time.Second)
	for m == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no listening line: %q", out.String())
		}
		select {
		case err := <-done:
			t.Fatalf("stun-server ended early: %v: %s", err, out.String())
		case <-time.After(10 * time.Millisecond):
		}
		m = re.FindStringSubmatch(out.String())
	}
	if !strings.HasPrefix(m[2], "127.0.0.2:") {
		t.Errorf("other address %s, want on 127.0.0.2", m[2])
	}
	res, err := nat.Classify(context.Background(), nat.Config{Servers: []string{m[1]}})
	if err != nil {
		t.Fatalf("Classify against the command's server: %v", err)
	}
	if res.Classic != nat.OpenInternet {
		t.Errorf("classic %s, want open internet", res.Classic)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("stun-server: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stun-server did not stop")
	}
	if !strings.Contains(out.String(), "stun-server stopped") {
		t.Errorf("output %q lacks the stop line", out.String())
	}
}

func TestSTUNServerCmdBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--listen", "nope"},
		{"--listen", "127.0.0.1:0", "--alt-port", "4000"},
		{"--listen", "127.0.0.1:0", "--alt-ip", "nope"},
		{"--listen", "0.0.0.0:0", "--alt-ip", "127.0.0.2"},
	} {
		if _, _, err := execInProcess(context.Background(), newSTUNServerCmd(), args...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

func TestNATCommandsHelp(t *testing.T) {
	for _, c := range []*cobra.Command{newNATCmd(), newSTUNServerCmd()} {
		out, _, err := execInProcess(context.Background(), c, "--help")
		if err != nil {
			t.Fatalf("%s --help: %v", c.Name(), err)
		}
		if !strings.Contains(out, "Examples:") || !strings.Contains(out, "peerbus "+c.Name()) {
			t.Errorf("%s --help lacks examples:\n%s", c.Name(), out)
		}
	}
	// Both are registered on the root command.
	for _, name := range []string{"nat", "stun-server"} {
		if c, _, err := rootCmd.Find([]string{name}); err != nil || c.Name() != name {
			t.Errorf("rootCmd has no %s command (%v)", name, err)
		}
	}
}
