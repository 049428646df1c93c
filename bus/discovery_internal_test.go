package bus

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"
)

// fakeLAN is an in-memory multicast group: every datagram sent reaches
// every member, the sender included (like multicast loopback).
type fakeLAN struct {
	mu      sync.Mutex
	members []*fakeConn
}

type fakeConn struct {
	lan    *fakeLAN
	in     chan []byte
	closed chan struct{}
	once   sync.Once
}

func (l *fakeLAN) join() *fakeConn {
	c := &fakeConn{lan: l, in: make(chan []byte, 256), closed: make(chan struct{})}
	l.mu.Lock()
	l.members = append(l.members, c)
	l.mu.Unlock()
	return c
}

func (l *fakeLAN) broadcast(b []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.members {
		select {
		case m.in <- append([]byte(nil), b...):
		default:
		}
	}
}

func (c *fakeConn) Send(b []byte) error { c.lan.broadcast(b); return nil }

func (c *fakeConn) Receive(buf []byte) (int, error) {
	select {
	case b := <-c.in:
		return copy(buf, b), nil
	case <-c.closed:
		return 0, net.ErrClosed
	}
}

func (c *fakeConn) Close() error { c.once.Do(func() { close(c.closed) }); return nil }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func beaconOf(cluster, name, route string) Beacon {
	return Beacon{Cluster: cluster, Name: name, Route: netip.MustParseAddrPort(route)}
}

func TestDiscovererFindsItsCluster(t *testing.T) {
	lan := &fakeLAN{}
	start := func(b Beacon) *discoverer {
		d, err := newDiscoverer(lan.join(), b, 50*time.Millisecond, quiet)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close() })
		return d
	}
	a := start(beaconOf("peerbus", "a", "10.0.0.1:6222"))
	var mu sync.Mutex
	var late []netip.AddrPort
	a.OnNew(func(r netip.AddrPort) { mu.Lock(); late = append(late, r); mu.Unlock() })
	start(beaconOf("peerbus", "b", "10.0.0.2:6222"))
	start(beaconOf("other", "c", "10.0.0.3:6222"))   // another cluster
	start(beaconOf("peerbus", "a", "10.0.0.4:6222")) // a's name on another node
	lan.broadcast([]byte("garbage"))
	lan.broadcast([]byte("pb\x09\x00future"))

	got := a.Wait(context.Background(), 300*time.Millisecond)
	if len(got) != 1 || got[0] != netip.MustParseAddrPort("10.0.0.2:6222") {
		t.Fatalf("a found %v, want only b", got)
	}
	mu.Lock()
	if len(late) != 1 {
		t.Errorf("OnNew saw %v", late)
	}
	mu.Unlock()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	_ = a.Close()
}

func TestDiscovererBoundsRoutes(t *testing.T) {
	lan := &fakeLAN{}
	d, err := newDiscoverer(lan.join(), beaconOf("peerbus", "a", "10.0.0.1:6222"), time.Hour, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for i := range 200 {
		b, err := beaconOf("peerbus", "n"+strconv.Itoa(i), "10.1.0.1:"+strconv.Itoa(1000+i)).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		d.handle(b)
	}
	if n := len(d.Routes()); n != maxDiscovered {
		t.Fatalf("%d routes remembered, want the bound %d", n, maxDiscovered)
	}
}

// TestAddDiscoveredRoutes checks the run-time route addition: a running
// node is reloaded with a discovered route (here on loopback, inserted
// without a beacon) and joins the other node, cluster credentials
// included.
func TestAddDiscoveredRoutes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := func() *Node {
		n, err := Start(ctx, WithListen("127.0.0.1:-1"), WithoutJetStream(), WithCluster("127.0.0.1:-1"),
			WithClusterAuth("route", "pw"), WithUser("app", "pw"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Close() })
		return n
	}
	a, b := start(), start()
	if a.NumRoutes() != 0 {
		t.Fatal("routed before discovery")
	}
	lan := &fakeLAN{}
	d, err := newDiscoverer(lan.join(), beaconOf("peerbus", "a", "10.0.0.1:6222"), time.Hour, quiet)
	if err != nil {
		t.Fatal(err)
	}
	addr := b.Server().ClusterAddr()
	d.mu.Lock()
	d.routes[netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(addr.Port))] = "b"
	d.mu.Unlock()
	a.disc = d // closed by a.Close
	if err := a.addDiscoveredRoutes(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for a.NumRoutes() == 0 || b.NumRoutes() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no route after the reload")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A second call finds nothing new and leaves the routes alone.
	if err := a.addDiscoveredRoutes(); err != nil {
		t.Fatal(err)
	}
	if len(a.routes) != 1 {
		t.Fatalf("routes after the second call: %v", a.routes)
	}
	// The node still takes its own credentials after the reload.
	nc, err := a.Connect()
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
}

func TestDefaultNodeName(t *testing.T) {
	h := hostLabel()
	for _, tc := range []struct {
		port int
		host string
		want string
	}{
		{4222, "", h + "-4222"},
		{4222, "127.0.0.1", h + "-4222"},
		{4222, "0.0.0.0", h + "-4222"},
		{4222, "10.1.2.3", h + "-10-1-2-3-4222"},
		{4222, "2001:db8::1", h + "-2001-db8--1-4222"},
	} {
		if got := defaultNodeName(tc.port, tc.host); got != tc.want {
			t.Errorf("defaultNodeName(%d, %q) = %q, want %q", tc.port, tc.host, got, tc.want)
		}
	}
}

func TestTargetReplicas(t *testing.T) {
	for _, tc := range []struct{ want, peers, got int }{
		{0, 0, 1}, {0, 1, 1}, {0, 2, 1}, {0, 3, 3}, {0, 5, 3},
		{1, 3, 1}, {3, 2, 2}, {5, 7, 5}, {2, 5, 2},
	} {
		if got := targetReplicas(tc.want, tc.peers); got != tc.got {
			t.Errorf("targetReplicas(%d, %d) = %d, want %d", tc.want, tc.peers, got, tc.got)
		}
	}
}
