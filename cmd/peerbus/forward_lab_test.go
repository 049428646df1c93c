//go:build linux

package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/peerbus/peerbus/internal/netlab"
)

// labProc starts the peerbus binary with args inside namespace ns.
func labProc(t *testing.T, ns *netlab.Namespace, name string, args ...string) *proc {
	t.Helper()
	return startProc(t, name, testEnv(), "ip", append([]string{"netns", "exec", ns.Name, peerbusBin(t)}, args...)...)
}

// waitLine waits for a stdout line starting with prefix and returns the
// rest of it.
func waitLine(t *testing.T, p *proc, prefix string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		l, ok := p.nextLine(time.Until(deadline))
		if !ok {
			t.Fatalf("%s: no %q line within %v; stderr:\n%s", p.name, prefix, timeout, p.stderr.String())
		}
		if v, ok := strings.CutPrefix(l, prefix); ok {
			return v
		}
	}
}

// TestForwardNATLab runs the commands in a lab of network namespaces: a
// public rendezvous host runs "peerbus node" (its client port reachable
// from both NATed hosts) and "peerbus stun-server" (RFC 5780, two
// addresses); behind NAT router A, "peerbus echo" is exposed by
// "peerbus expose"; behind NAT router B, "peerbus forward" forwards local
// ports to it, and the test talks to those ports from inside B.
//
// Behind endpoint-independent NATs (MASQUERADE) the path must be
// hole-punched (TCP simultaneous open for the TCP service; for the UDP
// service UDP hole punching, or, between two neighbouring Linux NATs
// where UDP probes cannot cross, the punched TCP path); behind symmetric
// NATs (MASQUERADE --random-fully) it must be the relay. With NATs behind
// a transit hop, as on the internet, the UDP service must get punched
// UDP.
func TestForwardNATLab(t *testing.T) {
	netlab.Require(t)
	peerbusBin(t) // build before the parallel subtests
	for _, tc := range []struct {
		name    string
		kind    netlab.NAT
		transit bool
		tcp     []string
		udp     []string
	}{
		{"masquerade", netlab.Masquerade, false, []string{"punch-tcp"}, []string{"punch-udp", "punch-tcp"}},
		{"masquerade-transit", netlab.Masquerade, true, []string{"punch-tcp"}, []string{"punch-udp"}},
		{"symmetric", netlab.Symmetric, false, []string{"relay"}, []string{"relay"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runForwardLab(t, tc.kind, tc.transit, tc.tcp, tc.udp)
		})
	}
}

func runForwardLab(t *testing.T, kind netlab.NAT, transit bool, wantTCP, wantUDP []string) {
	lab := netlab.New(t)
	pub := lab.AddPublicHost("rdv", 2)
	addRouter := lab.AddRouter
	if transit {
		addRouter = lab.AddRouterBehindTransit
	}
	ha := addRouter("ra", kind).AddHost("a")
	hb := addRouter("rb", kind).AddHost("b")

	node := labProc(t, pub.Namespace, "rendezvous-node", "node", "--listen", "0.0.0.0:4222", "--no-jetstream", "--log-level", "warn")
	waitLine(t, node, "ready", 60*time.Second)
	stun := labProc(t, pub.Namespace, "stun-server", "stun-server", "--listen", pub.Addrs[0].String()+":3478", "--alt-ip", pub.Addrs[1].String())
	waitLine(t, stun, "stun-server listening", 30*time.Second)
	server := "nats://" + pub.Addr().String() + ":4222"
	stunAddr := pub.Addr().String() + ":3478"

	echo := labProc(t, ha.Namespace, "echo", "echo", "--tcp", "7000", "--udp", "7001", "--v4")
	waitLine(t, echo, "ready", 30*time.Second)
	expose := labProc(t, ha.Namespace, "expose", "expose", "--server", server, "--stun", stunAddr,
		"echo", "tcp://127.0.0.1:7000", "uecho", "udp://127.0.0.1:7001")
	id := waitLine(t, expose, "peer: ", 30*time.Second)
	waitLine(t, expose, "ready", 30*time.Second)

	fwTCP := labProc(t, hb.Namespace, "forward-tcp", "forward", "--server", server, "--stun", stunAddr,
		"--listen", "127.0.0.1:9000", id, "echo")
	waitLine(t, fwTCP, "ready", 30*time.Second)
	fwUDP := labProc(t, hb.Namespace, "forward-udp", "forward", "--server", server, "--stun", stunAddr,
		"--listen", "udp://127.0.0.1:9001", id, "uecho")
	waitLine(t, fwUDP, "ready", 30*time.Second)

	// TCP: 1 MiB echoed through the forwarded port, then both sides close.
	var c net.Conn
	if err := hb.Do(func() (err error) { c, err = net.Dial("tcp", "127.0.0.1:9000"); return }); err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("through two NATs\n"), 64<<10)
	go func() {
		_, _ = c.Write(payload)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
	got, err := io.ReadAll(c)
	_ = c.Close()
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("tcp: echoed %d of %d bytes: %v\nforward:\n%s\nexpose:\n%s", len(got), len(payload), err,
			fwTCP.stderr.String(), expose.stderr.String())
	}
	checkPath(t, fwTCP, "connection", wantTCP)

	// UDP: datagrams through the forwarded port.
	var u net.Conn
	if err := hb.Do(func() (err error) { u, err = net.Dial("udp", "127.0.0.1:9001"); return }); err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	buf := make([]byte, 2048)
	echoed := 0
	deadline := time.Now().Add(60 * time.Second)
	sent := map[string]bool{}
	for i := 0; echoed < 5 && time.Now().Before(deadline); i++ {
		msg := fmt.Sprintf("datagram %d", i)
		sent[msg] = true
		_, _ = u.Write([]byte(msg))
		// Datagrams sent while the session is set up are echoed late:
		// count every echo of one that was sent.
		_ = u.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			n, err := u.Read(buf)
			if err != nil {
				break
			}
			if sent[string(buf[:n])] {
				echoed++
			} else {
				t.Fatalf("udp: unexpected datagram %q", buf[:n])
			}
		}
	}
	if echoed < 5 {
		t.Fatalf("udp: %d datagrams echoed\nforward:\n%s\nexpose:\n%s", echoed, fwUDP.stderr.String(), expose.stderr.String())
	}
	checkPath(t, fwUDP, "udp session", wantUDP)
}

// checkPath finds the forward's log line for the session and checks its
// path.
func checkPath(t *testing.T, fw *proc, msg string, want []string) {
	t.Helper()
	for _, l := range strings.Split(fw.stderr.String(), "\n") {
		if !strings.Contains(l, "msg=\""+msg+"\"") && !strings.Contains(l, "msg="+msg+" ") {
			continue
		}
		for _, w := range want {
			if strings.Contains(l, "path="+w+" ") {
				t.Logf("%s: %s", fw.name, l)
				return
			}
		}
		t.Fatalf("%s: path not one of %v: %s", fw.name, want, l)
	}
	t.Fatalf("%s: no %q log line:\n%s", fw.name, msg, fw.stderr.String())
}
