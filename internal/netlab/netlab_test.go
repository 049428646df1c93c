package netlab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	RunHelpers(map[string]Helper{
		// addrs prints the IPv4 addresses the process sees.
		"addrs": func(args []string) int {
			addrs, err := net.InterfaceAddrs()
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			for _, a := range addrs {
				fmt.Println(a)
			}
			fmt.Println("args:", strings.Join(args, ","))
			return 0
		},
	})
	goleak.VerifyTestMain(m)
}

// udpListen opens a UDP socket inside ns.
func udpListen(t *testing.T, ns *Namespace, addr string) *net.UDPConn {
	t.Helper()
	var conn *net.UDPConn
	err := ns.Do(func() error {
		c, err := net.ListenPacket("udp4", addr)
		if err != nil {
			return err
		}
		conn = c.(*net.UDPConn)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// exchange sends one datagram from c to dst and reports the source
// address the receiver r saw, or false if nothing arrived in time.
func exchange(t *testing.T, c, r *net.UDPConn, dst netip.AddrPort, timeout time.Duration) (netip.AddrPort, bool) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort([]byte("x"), dst); err != nil {
		t.Fatalf("send to %v: %v", dst, err)
	}
	buf := make([]byte, 16)
	_ = r.SetReadDeadline(time.Now().Add(timeout))
	_, from, err := r.ReadFromUDPAddrPort(buf)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return from, true
}

func TestLabRouters(t *testing.T) {
	Require(t)
	lab := New(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(lab.Dump())
		}
	})
	pub := lab.AddPublicHost("pub", 2)
	if len(pub.Addrs) != 2 || pub.Addrs[0].String() != "203.0.113.1" || pub.Addrs[1].String() != "203.0.113.2" {
		t.Fatalf("public addresses %v", pub.Addrs)
	}
	kinds := []NAT{NoNAT, Firewall, Masquerade, Symmetric, FullCone}
	for _, kind := range kinds {
		r := lab.AddRouter(strings.ReplaceAll(string(kind), "-", ""), kind)
		h := r.AddHost("h" + strings.ReplaceAll(string(kind), "-", ""))
		t.Run(string(kind), func(t *testing.T) {
			if !r.LAN.Contains(h.Addr()) || h.Router != r {
				t.Fatalf("host %v not in LAN %v", h.Addr(), r.LAN)
			}
			srv := udpListen(t, pub.Namespace, "0.0.0.0:7000")
			cli := udpListen(t, h.Namespace, "0.0.0.0:40000")
			from, ok := exchange(t, cli, srv, netip.AddrPortFrom(pub.Addr(), 7000), 2*time.Second)
			if !ok {
				t.Fatal("host cannot reach the public host")
			}
			natted := kind != NoNAT && kind != Firewall
			switch {
			case natted && from.Addr() != r.WAN:
				t.Errorf("public host saw %v, want the router's WAN %v", from, r.WAN)
			case !natted && from != netip.AddrPortFrom(h.Addr(), 40000):
				t.Errorf("public host saw %v, want the host itself", from)
			}
			// The reply always comes back.
			if _, ok := exchange(t, srv, cli, from, 2*time.Second); !ok {
				t.Error("reply did not come back")
			}
			// Unsolicited traffic from another public address and port.
			other := udpListen(t, pub.Namespace, pub.Addrs[1].String()+":7001")
			_, got := exchange(t, other, cli, from, 300*time.Millisecond)
			wantThrough := kind == NoNAT || kind == FullCone
			if got != wantThrough {
				t.Errorf("unsolicited datagram delivered=%v, want %v", got, wantThrough)
			}
		})
	}
}

func TestLabTwoNATs(t *testing.T) {
	Require(t)
	lab := New(t)
	rdv := lab.AddPublicHost("rdv", 1)
	r1 := lab.AddRouter("r1", Masquerade)
	r2 := lab.AddRouter("r2", Symmetric)
	a, b := r1.AddHost("a"), r2.AddHost("b")
	if r1.LAN == r2.LAN || r1.WAN == r2.WAN {
		t.Fatalf("routers share addresses: %v %v", r1, r2)
	}
	srv := udpListen(t, rdv.Namespace, "0.0.0.0:7000")
	for _, h := range []*Host{a, b} {
		c := udpListen(t, h.Namespace, "0.0.0.0:0")
		from, ok := exchange(t, c, srv, netip.AddrPortFrom(rdv.Addr(), 7000), 2*time.Second)
		if !ok || from.Addr() != h.Router.WAN {
			t.Errorf("%s: rendezvous saw %v (%v), want %v", h.Name, from, ok, h.Router.WAN)
		}
	}
	// A second host behind r1 shares its router. Adding ports to the
	// bridges must not disturb hosts already talking (bridge MACs are
	// fixed), so everyone talks again afterwards.
	a2 := r1.AddHost("a2")
	if a2.Addr() == a.Addr() || !r1.LAN.Contains(a2.Addr()) {
		t.Errorf("second host address %v", a2.Addr())
	}
	lab.AddRouter("r3", NoNAT).AddHost("c")
	for _, h := range []*Host{a, a2, b} {
		c := udpListen(t, h.Namespace, "0.0.0.0:0")
		from, ok := exchange(t, c, srv, netip.AddrPortFrom(rdv.Addr(), 7000), 2*time.Second)
		if !ok || from.Addr() != h.Router.WAN {
			t.Errorf("%s again: rendezvous saw %v (%v), want %v", h.Name, from, ok, h.Router.WAN)
		}
		if _, ok := exchange(t, srv, c, from, 2*time.Second); !ok {
			t.Errorf("%s again: no reply", h.Name)
		}
	}
}

func TestLabTeardown(t *testing.T) {
	Require(t)
	var names []string
	t.Run("lab", func(t *testing.T) {
		lab := New(t)
		h := lab.AddPublicHost("x", 1)
		h.Start("sleep", "300")
		for _, n := range lab.Namespaces() {
			names = append(names, n.Name)
		}
	})
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s left behind", n)
		}
	}
	if len(names) != 2 {
		t.Errorf("namespaces %v, want hub and x", names)
	}
}

func TestHelperAndCommands(t *testing.T) {
	Require(t)
	lab := New(t)
	h := lab.AddPublicHost("h", 1)
	out, err := h.HelperCommand(context.Background(), "addrs", "a", "b").CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "203.0.113.1/24") || !strings.Contains(string(out), "args: a,b") {
		t.Errorf("helper output %q: want the namespace's address and the args", out)
	}

	const key = "/proc/sys/net/ipv4/conf/all/accept_local"
	before := strings.TrimSpace(h.MustRun("cat", key))
	want := "1"
	if before == "1" {
		want = "0"
	}
	h.Sysctl("net.ipv4.conf.all.accept_local", want)
	if got := strings.TrimSpace(h.MustRun("cat", key)); got != want {
		t.Errorf("accept_local %q after Sysctl, want %q", got, want)
	}
	if _, err := h.Run(context.Background(), "false"); err == nil {
		t.Error("Run(false) did not fail")
	}

	p := h.Start("sh", "-c", "echo ready; exec sleep 300")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.WaitOutput(ctx, "ready"); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	_ = p.Stop()
	if time.Since(begin) > time.Second {
		t.Errorf("Stop took %v", time.Since(begin))
	}
	select {
	case <-p.Done():
	default:
		t.Error("process still running after Stop")
	}
}
