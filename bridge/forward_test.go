package bridge

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/peerbus/peerbus/internal/echotest"
)

// TestForwardUDPSessions forwards a local UDP socket to an exposed echo
// service: each client gets its replies in its own session, an idle
// session ends on both sides, and ForwardUDP returns when its context
// ends.
func TestForwardUDPSessions(t *testing.T) {
	nodes := startCluster(t, 1)
	pe := newPeer(t, connect(t, nodes[0]))
	pd := newPeer(t, connect(t, nodes[0]))
	svc, err := Expose(ctxT(t, 5*time.Second), pe, "uecho", echotest.UDP(t))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- ForwardUDP(ctx, pd, pc, "any", "uecho",
			WithStrategies(Relay), WithUDPIdleTimeout(300*time.Millisecond))
	}()

	var clients []*net.UDPConn
	for range 2 {
		c, err := net.DialUDP("udp4", nil, pc.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	buf := make([]byte, 2048)
	for i, c := range clients {
		msg := []byte("datagram of client " + string(rune('a'+i)))
		// The first datagram opens the session; a datagram sent while it
		// is set up may be the one the session keeps, so send until the
		// echo comes.
		waitFor(t, "the echo of client "+string(rune('a'+i)), 15*time.Second, func() bool {
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			n, err := c.Read(buf)
			if err != nil {
				return false
			}
			if !bytes.Equal(buf[:n], msg) {
				t.Fatalf("client %d got %q, want %q", i, buf[:n], msg)
			}
			return true
		})
	}
	if got := svc.Stats().Opened; got < 2 {
		t.Errorf("service opened %d sessions, want one a client", got)
	}
	waitFor(t, "idle sessions to end", 10*time.Second, func() bool { return svc.Stats().Active == 0 })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ForwardUDP after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ForwardUDP did not return after its context ended")
	}
	if _, err := pc.WriteToUDPAddrPort([]byte("x"), clients[0].LocalAddr().(*net.UDPAddr).AddrPort()); err == nil {
		t.Error("ForwardUDP left its socket open")
	}
}
