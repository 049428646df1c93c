package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// runNetCmd executes a freshly built command with args in-process and
// returns its stdout and stderr.
func runNetCmd(t *testing.T, cmd *cobra.Command, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errb lockedBuffer
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	err := cmd.ExecuteContext(ctx)
	return out.String(), errb.String(), err
}

// echoEndpoint is one socket an echo daemon listens on.
type echoEndpoint struct {
	proto string // "tcp" or "udp"
	addr  netip.AddrPort
}

// parseListening parses a "listening on tcp 127.0.0.1:7000" line.
func parseListening(t *testing.T, line string) echoEndpoint {
	t.Helper()
	var proto, addr string
	if _, err := fmt.Sscanf(line, "listening on %s %s", &proto, &addr); err != nil {
		t.Fatalf("bad line %q: %v", line, err)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || (proto != "tcp" && proto != "udp") {
		t.Fatalf("bad line %q: %v", line, err)
	}
	return echoEndpoint{proto, ap}
}

// requireNetTool returns the path of a client program; a missing one fails
// the test in CI (CI=true) and skips it elsewhere.
func requireNetTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		msg := fmt.Sprintf("%s is not installed (Debian packages socat, netcat-openbsd): %v", name, err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

// clientArgs returns the command line with which tool talks to ep.
func clientArgs(tool string, ep echoEndpoint) []string {
	host := ep.addr.Addr().String()
	port := fmt.Sprint(ep.addr.Port())
	v6 := ep.addr.Addr().Is6()
	switch tool {
	case "socat":
		fam := "4"
		if v6 {
			fam, host = "6", "["+host+"]"
		}
		return []string{"-", strings.ToUpper(ep.proto) + fam + ":" + host + ":" + port}
	default: // nc (OpenBSD netcat)
		args := []string{"-n"}
		if v6 {
			args = append(args, "-6")
		} else {
			args = append(args, "-4")
		}
		if ep.proto == "udp" {
			args = append(args, "-u")
		}
		return append(args, host, port)
	}
}

// talkThrough runs tool against ep, writes payload on its stdin and
// checks that exactly payload comes back on its stdout.
func talkThrough(t *testing.T, tool string, ep echoEndpoint, payload string) {
	t.Helper()
	path := requireNetTool(t, tool)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, clientArgs(tool, ep)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	if _, err := io.WriteString(stdin, payload); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(payload))
	read := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(stdout, got)
		read <- err
	}()
	select {
	case err := <-read:
		if err != nil {
			t.Fatalf("%s %v: reading the echo: %v; stderr: %s", tool, cmd.Args[1:], err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("%s %v: no echo within 15s; stderr: %s", tool, cmd.Args[1:], stderr.String())
	}
	if string(got) != payload {
		t.Fatalf("%s %v: got %q, want %q", tool, cmd.Args[1:], got, payload)
	}
}

// checkEchoClients has socat and nc talk to every endpoint.
func checkEchoClients(t *testing.T, eps []echoEndpoint) {
	t.Helper()
	for _, ep := range eps {
		for _, tool := range []string{"socat", "nc"} {
			t.Run(fmt.Sprintf("%s/%s/%s", tool, ep.proto, ep.addr), func(t *testing.T) {
				talkThrough(t, tool, ep, fmt.Sprintf("hello from %s over %s\n", tool, ep.proto))
			})
		}
	}
}

// TestEchoInProcess runs the echo command in-process and talks to it with
// socat and nc.
func TestEchoInProcess(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb lockedBuffer
	cmd := newEchoCmd()
	cmd.SetArgs([]string{"--tcp", "0", "--udp", "0,0"})
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	var result error
	stopped := false
	stop := func() error {
		if !stopped {
			cancel()
			result, stopped = <-done, true
		}
		return result
	}
	defer stop()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "ready\n") {
		select {
		case err := <-done:
			stopped, result = true, err
			t.Fatalf("echo ended early: %v; stderr: %s", err, errb.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("echo not ready; stdout %q", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	var eps []echoEndpoint
	for _, line := range strings.Split(strings.TrimSuffix(out.String(), "ready\n"), "\n") {
		if line != "" {
			eps = append(eps, parseListening(t, line))
		}
	}
	fams := 1
	if haveIPv6Loopback() {
		fams = 2
	}
	if len(eps) != 3*fams {
		t.Fatalf("%d sockets, want %d: %q", len(eps), 3*fams, out.String())
	}
	for _, ep := range eps {
		if !ep.addr.Addr().IsLoopback() || ep.addr.Port() == 0 {
			t.Fatalf("listening on %v: not loopback", ep)
		}
	}
	checkEchoClients(t, eps)

	if err := stop(); err != nil {
		t.Fatalf("echo returned %v", err)
	}
	if !strings.Contains(errb.String(), "stopped after") {
		t.Fatalf("no summary on stderr: %q", errb.String())
	}
	for _, ep := range eps {
		if ep.proto == "tcp" {
			if c, err := net.DialTimeout("tcp", ep.addr.String(), time.Second); err == nil {
				c.Close()
				t.Fatalf("%v still accepting after the command returned", ep)
			}
		}
	}
}

// TestEchoBinary runs the built peerbus binary as a real process, talks
// to it with socat and nc, and stops it with SIGINT.
func TestEchoBinary(t *testing.T) {
	requireNetTool(t, "socat")
	requireNetTool(t, "nc")
	p := startProc(t, "echo", testEnv(), peerbusBin(t), "echo", "--tcp", "0", "--udp", "0", "--framing", "lines")
	var eps []echoEndpoint
	for {
		line, ok := p.nextLine(60 * time.Second)
		if !ok {
			t.Fatalf("no ready line; stderr:\n%s", p.stderr.String())
		}
		if line == "ready" {
			break
		}
		eps = append(eps, parseListening(t, line))
	}
	if len(eps) < 2 {
		t.Fatalf("listening on %v", eps)
	}
	checkEchoClients(t, eps)

	// A bad client (a 2 MB line with --framing lines) is dropped; the
	// daemon still serves.
	c, err := net.Dial("tcp", eps[0].addr.String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	go c.Write(bytes.Repeat([]byte("x"), 2<<20))
	if _, err := io.Copy(io.Discard, c); err != nil && !isConnReset(err) {
		t.Fatalf("oversized line: connection not dropped: %v", err)
	}
	c.Close()
	talkThrough(t, "nc", eps[0], "after the bad client\n")

	p.signal(syscall.SIGINT)
	code, ok := p.wait(20 * time.Second)
	if !ok || code != 0 {
		t.Fatalf("exit after SIGINT: code %d, exited %v; stderr:\n%s", code, ok, p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), "stopped after") {
		t.Fatalf("no summary on stderr:\n%s", p.stderr.String())
	}
}

func isConnReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

func TestEchoCmdBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "nothing to listen on"},
		{[]string{"--tcp", "70000"}, "between 0 and 65535"},
		{[]string{"--udp", "-1"}, "between 0 and 65535"},
		{[]string{"--tcp", "7000,7000"}, "given twice"},
		{[]string{"--tcp", "abc"}, "invalid argument"},
		{[]string{"--tcp", "0", "--framing", "xml"}, `want "raw", "lines" or "length"`},
		{[]string{"--tcp", "0", "--max-conns", "0"}, "--max-conns must be positive"},
		{[]string{"--tcp", "0", "--max-size", "-5"}, "--max-size must be positive"},
		{[]string{"--tcp", "0", "--idle-timeout", "-1s"}, "--idle-timeout must not be negative"},
		{[]string{"--tcp", "0", "stray"}, "unknown command"},
	} {
		_, _, err := runNetCmd(t, newEchoCmd(), tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("echo %v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
	// A port that is taken fails cleanly, without leaving sockets open.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	_, _, err = runNetCmd(t, newEchoCmd(), "--v4", "--udp", "0", "--tcp", fmt.Sprint(port))
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("busy port: %v", err)
	}
}

func TestNetCommandsHelp(t *testing.T) {
	for _, tc := range []struct {
		cmd  *cobra.Command
		want string
	}{
		{newEchoCmd(), "peerbus echo --tcp 7000 --udp 7000"},
		{newIfacesCmd(), "peerbus ifaces --json"},
	} {
		out, _, err := runNetCmd(t, tc.cmd, "--help")
		if err != nil || !strings.Contains(out, "Examples:") || !strings.Contains(out, tc.want) {
			t.Errorf("%s --help: %v\n%s", tc.cmd.Name(), err, out)
		}
	}
	// Both are registered on the root command.
	for _, name := range []string{"echo", "ifaces"} {
		if c, _, err := rootCmd.Find([]string{name}); err != nil || c.Name() != name {
			t.Errorf("%s not registered: %v", name, err)
		}
	}
}
