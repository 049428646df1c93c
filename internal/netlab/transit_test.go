//go:build linux

package netlab

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRouterBehindTransit checks the topology: a host behind a router
// behind a transit hop reaches a public host, masqueraded to the
// router's WAN address, and is two routed hops from the public segment.
func TestRouterBehindTransit(t *testing.T) {
	Require(t)
	lab := New(t)
	pub := lab.AddPublicHost("pub", 1)
	r := lab.AddRouterBehindTransit("rt", Masquerade)
	h := r.AddHost("h")
	if !TransitPrefix.Contains(r.WAN) {
		t.Fatalf("WAN %s not in %s", r.WAN, TransitPrefix)
	}
	srv := udpListen(t, pub.Namespace, pub.Addr().String()+":7000")
	cl := udpListen(t, h.Namespace, "0.0.0.0:0")
	if _, err := cl.WriteToUDPAddrPort([]byte("hi"), netip.AddrPortFrom(pub.Addr(), 7000)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	_ = srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := srv.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "hi" {
		t.Fatalf("public host got %q, %v", buf[:n], err)
	}
	if from.Addr() != r.WAN {
		t.Fatalf("packet came from %s, want the router's WAN %s", from, r.WAN)
	}
	// Two routed hops before the public segment: the NAT router and the
	// transit router. A packet with TTL 2 dies at the transit router, one
	// with TTL 3 arrives.
	for _, tc := range []struct {
		ttl    int
		arrive bool
	}{{2, false}, {3, true}} {
		rc, err := cl.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		_ = rc.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, tc.ttl)
		})
		if err != nil {
			t.Fatal(err)
		}
		msg := fmt.Sprintf("ttl %d", tc.ttl)
		_, _ = cl.WriteToUDPAddrPort([]byte(msg), netip.AddrPortFrom(pub.Addr(), 7000))
		_ = srv.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, _, err := srv.ReadFromUDPAddrPort(buf)
		if got := err == nil && string(buf[:n]) == msg; got != tc.arrive {
			t.Errorf("TTL %d: arrived %v, want %v", tc.ttl, got, tc.arrive)
		}
	}
}
