package netcore

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// TestRouteBinding binds pipes to a route other than the default source:
// 127.0.0.2, a second loopback address.
func TestRouteBinding(t *testing.T) {
	alt := Route{Family: IPv4, Interface: "lo", LocalIP: netip.MustParseAddr("127.0.0.2")}
	ctx := testCtx(t)
	for _, proto := range []Protocol{TCP, UDP} {
		t.Run(proto.String(), func(t *testing.T) {
			// A server on the route listens on its address.
			srv, err := Listen(ctx, proto, alt, 0, WithFraming(Lines(0)))
			if err != nil {
				t.Skipf("cannot bind 127.0.0.2 here: %v", err)
			}
			defer srv.Close()
			if srv.LocalAddr().Addr() != alt.LocalIP {
				t.Fatalf("server on %s, want %s", srv.LocalAddr(), alt.LocalIP)
			}
			// A client bound to the route sends from its address.
			sub := mustSubscribe(t, srv, "", From(alt.AddrPort(0)))
			c, err := Dial(ctx, proto, srv.LocalAddr().String(), WithRoute(alt), WithFraming(Lines(0)))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.LocalAddr().Addr() != alt.LocalIP {
				t.Fatalf("client bound to %s, want %s", c.LocalAddr(), alt.LocalIP)
			}
			c.Send(ctx, []byte("from the route"))
			m, err := sub.Recv(ctx)
			if err != nil || m.From != c.LocalAddr() {
				t.Fatalf("got %q from %s (%v), want from %s", m.Data, m.From, err, c.LocalAddr())
			}
			// A client on the default loopback source does not match
			// the filter.
			other := mustDial(t, proto, srv, WithRoute(LoopbackRoute(IPv4)), WithFraming(Lines(0)))
			other.Send(ctx, []byte("from 127.0.0.1"))
			waitFor(t, "second message", func() bool { return srv.Stats().MessagesIn == 2 })
			if sub.Len() != 0 {
				t.Fatal("source filter let 127.0.0.1 through")
			}
		})
	}
}

// TestDaemonAllAddresses listens on 0.0.0.0 and :: and is reached over
// loopback.
func TestDaemonAllAddresses(t *testing.T) {
	d := NewDaemon(echo)
	defer d.Close()
	ctx := testCtx(t)
	pipes, err := d.ListenAll(ctx, ListenSpec{UDP: []uint16{0}, Families: testFamilies(t), AllAddresses: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pipes {
		if !p.LocalAddr().Addr().IsUnspecified() {
			t.Fatalf("%v is not on all addresses", p)
		}
		dst := netip.AddrPortFrom(LoopbackRoute(p.Family()).LocalIP, p.LocalAddr().Port())
		c, err := DialAddr(ctx, UDP, dst)
		if err != nil {
			t.Fatal(err)
		}
		sub := mustSubscribe(t, c, "")
		c.Send(ctx, []byte("anyone there"))
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		m, err := sub.Recv(rctx)
		cancel()
		c.Close()
		if err != nil || string(m.Data) != "anyone there" {
			t.Fatalf("%v: got %q, %v", p, m.Data, err)
		}
	}
}
