package bridge

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/internal/echotest"
)

// TestAcrossLeafnode exposes a service on a peer of a hub NATS server and
// dials it from a peer on a bus node that is a leafnode of that hub: the
// session's subjects cross the leafnode connection like any others.
func TestAcrossLeafnode(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	leafPort := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	hub, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, ServerName: "hub",
		LeafNode: server.LeafNodeOpts{Host: "127.0.0.1", Port: leafPort}})
	if err != nil {
		t.Fatal(err)
	}
	hub.Start()
	t.Cleanup(func() {
		hub.Shutdown()
		hub.WaitForShutdown()
	})
	if !hub.ReadyForConnections(10 * time.Second) {
		t.Fatal("hub not ready")
	}
	leaf, err := bus.Start(ctxT(t, 30*time.Second), bus.WithListen("127.0.0.1:-1"), bus.WithoutJetStream(),
		bus.WithName("leaf"), bus.WithLeaf(fmt.Sprintf("nats-leaf://127.0.0.1:%d", leafPort)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = leaf.Close() })

	pe := newPeer(t, connect(t, leaf))
	pd := newPeer(t, natsConnect(t, hub.ClientURL()))
	svc, err := Expose(ctxT(t, 5*time.Second), pe, "echo", echotest.TCP(t))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	// Interest crosses the leafnode asynchronously: retry the first dial.
	var c *Conn
	waitFor(t, "the service to be reachable through the leafnode", 10*time.Second, func() bool {
		c, err = Dial(ctxT(t, 10*time.Second), pd, AnyPeer, "echo", WithStrategies(Relay))
		return err == nil
	})
	defer c.Close()
	if c.Result().Peer != pe.ID() {
		t.Fatalf("answered by %s, want %s", c.Result().Peer, pe.ID())
	}
	echoOnce(t, c, "through the leafnode")
	_ = c.CloseWrite()
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Fatalf("after half-close: %q %v", b, err)
	}
}
