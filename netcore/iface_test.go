package netcore

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const routeV4Fixture = `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
wlan0	00000000	FE01A8C0	0003	0	0	600	00000000	0	0	0
eth0	00000000	010200C0	0003	0	0	100	00000000	0	0	0
down0	00000000	01010101	0002	0	0	1	00000000	0	0	0
rej0	00000000	00000000	0201	0	0	0	00000000	0	0	0
docker0	000011AC	00000000	0001	0	0	0	0000FFFF	0	0	0
eth0	000200C0	00000000	0001	0	0	0	00FFFFFF	0	0	0
garbage line
`

const routeV6Fixture = `fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000064 00000002 00000000 00000003     wlan0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
zz
`

func TestParseRouteV4(t *testing.T) {
	kr, err := parseRouteV4(strings.NewReader(routeV4Fixture))
	if err != nil {
		t.Fatal(err)
	}
	want := kernelRoute{iface: "eth0", gateway: netip.MustParseAddr("192.0.2.1"), metric: 100}
	if kr != want {
		t.Fatalf("got %+v, want %+v", kr, want)
	}
	if _, err := parseRouteV4(strings.NewReader("Iface\tDestination\n")); err == nil {
		t.Fatal("table without default route: want error")
	}
}

func TestParseRouteV6(t *testing.T) {
	kr, err := parseRouteV6(strings.NewReader(routeV6Fixture))
	if err != nil {
		t.Fatal(err)
	}
	want := kernelRoute{iface: "wlan0", gateway: netip.MustParseAddr("fe80::1"), metric: 100}
	if kr != want {
		t.Fatalf("got %+v, want %+v", kr, want)
	}
	// Only the reject route on lo: no default route.
	lines := strings.Split(routeV6Fixture, "\n")
	if _, err := parseRouteV6(strings.NewReader(lines[4])); err == nil {
		t.Fatal("reject route taken as default")
	}
}

func TestInterfacesHaveLoopback(t *testing.T) {
	ifs, err := Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, it := range ifs {
		for _, a := range it.Addrs {
			if a.Addr() == netip.MustParseAddr("127.0.0.1") {
				found = true
				if !it.Loopback || a.Family != IPv4 || a.LinkLocal {
					t.Errorf("127.0.0.1 on %+v: wrong flags %+v", it, a)
				}
			}
			if a.LinkLocal != a.Addr().IsLinkLocalUnicast() {
				t.Errorf("%s: LinkLocal=%v", a.Prefix, a.LinkLocal)
			}
		}
	}
	if !found {
		t.Fatalf("no interface has 127.0.0.1: %+v", ifs)
	}
	r, err := RouteFor(netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Family != IPv4 || r.Interface == "" || r.LocalIP != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("RouteFor(127.0.0.1) = %+v", r)
	}
	if _, err := RouteFor(netip.MustParseAddr("198.51.100.77")); !errors.Is(err, ErrNoRoute) {
		t.Fatalf("RouteFor(unassigned) err = %v, want ErrNoRoute", err)
	}
	routes, err := RoutesFor(IPv4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Family != IPv4 || !r.LocalIP.Is4() {
			t.Errorf("RoutesFor(IPv4) returned %v", r)
		}
	}
}

func TestDefaultRoute(t *testing.T) {
	for _, f := range []Family{IPv4, IPv6} {
		r, err := DefaultRoute(f)
		if errors.Is(err, ErrNoRoute) {
			t.Logf("%s: no default route here: %v", f, err)
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if r.Family != f || FamilyOf(r.LocalIP) != f || r.Interface == "" {
			t.Fatalf("%s: incomplete route %+v", f, r)
		}
		if _, err := RouteFor(r.LocalIP); err != nil {
			t.Fatalf("%s: local address %s not on any interface: %v", f, r.LocalIP, err)
		}
	}
	if _, err := DefaultRoute(AnyFamily); !errors.Is(err, ErrFamilyMismatch) {
		t.Fatalf("AnyFamily: err = %v", err)
	}
}

// TestDefaultRouteFallback hides the kernel tables so DefaultRoute must use
// the UDP connect probe; it must agree with the table-based answer.
func TestDefaultRouteFallback(t *testing.T) {
	withTables, err := DefaultRoute(IPv4)
	if err != nil {
		t.Skipf("no IPv4 default route: %v", err)
	}
	missing := filepath.Join(t.TempDir(), "missing")
	oldV4 := procRouteV4
	procRouteV4 = missing
	t.Cleanup(func() { procRouteV4 = oldV4 })
	r, err := DefaultRoute(IPv4)
	if err != nil {
		t.Fatal(err)
	}
	if r.Gateway.IsValid() {
		t.Errorf("fallback cannot know the gateway, got %s", r.Gateway)
	}
	if r.Interface != withTables.Interface || r.LocalIP != withTables.LocalIP {
		t.Fatalf("fallback %+v disagrees with table %+v", r, withTables)
	}
}

// offlineResolver fails any DNS exchange, so tests never send queries;
// names are answered from /etc/hosts or not at all.
func offlineResolver(block bool) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		if block {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return nil, errors.New("test resolver: no network")
	}}
}

func TestResolve(t *testing.T) {
	ctx := context.Background()
	res := offlineResolver(false)
	ip, err := Resolve(ctx, res, "127.0.0.1", IPv4)
	if err != nil || ip != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("literal: %v %v", ip, err)
	}
	if _, err := Resolve(ctx, res, "127.0.0.1", IPv6); !errors.Is(err, ErrFamilyMismatch) {
		t.Fatalf("v4 literal as v6: err = %v", err)
	}
	ip, err = Resolve(ctx, res, "::1", IPv6)
	if err != nil || ip != netip.IPv6Loopback() {
		t.Fatalf("v6 literal: %v %v", ip, err)
	}
	ip, err = LoopbackRoute(IPv4).Resolve(ctx, "::ffff:127.0.0.1")
	if err != nil || ip != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("mapped literal: %v %v", ip, err)
	}
	ip, err = Resolve(ctx, res, "localhost", IPv4)
	if err != nil || !ip.IsLoopback() || !ip.Is4() {
		t.Fatalf("localhost as IPv4: %v %v", ip, err)
	}
}

func TestResolveDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Resolve(ctx, offlineResolver(true), "peerbus-test.invalid", IPv6)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("deadline not honoured: took %v", d)
	}
}
