package bridge

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/internal/netlab"
	"github.com/peerbus/peerbus/peer"
)

// labHelpers are the helper modes of this test binary (see lab_test.go).
var labHelpers = map[string]netlab.Helper{}

// startCluster starts n clustered nodes without JetStream.
func startCluster(t testing.TB, n int) []*bus.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var nodes []*bus.Node
	if n == 1 {
		node, err := bus.Start(ctx, bus.WithListen("127.0.0.1:-1"), bus.WithoutJetStream(), bus.WithName("solo"))
		if err != nil {
			t.Fatal(err)
		}
		nodes = []*bus.Node{node}
	} else {
		var err error
		nodes, err = bus.StartLocalCluster(ctx, n, t.TempDir(), "n", bus.WithoutJetStream())
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, node := range nodes {
			_ = node.Close()
		}
	})
	if n > 1 {
		deadline := time.Now().Add(10 * time.Second)
		for _, node := range nodes {
			for node.NumRoutes() < n-1 {
				if time.Now().After(deadline) {
					t.Fatalf("cluster routes not up")
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	return nodes
}

// connect opens a client connection to node, closed at cleanup.
func connect(t testing.TB, node *bus.Node) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(node.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// newPeer starts a peer on nc, closed at cleanup.
func newPeer(t testing.TB, nc *nats.Conn, opts ...peer.Option) *peer.Peer {
	t.Helper()
	p, err := peer.New(nc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// natsConnect connects to url, closed at cleanup.
func natsConnect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// waitPeer waits until peer id answers a ping from p: its subscriptions
// have reached p's node.
func waitPeer(t testing.TB, p *peer.Peer, id string) {
	t.Helper()
	ping, err := peer.Stub[struct{}, any](p, peer.TagPing)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := ping.Call(ctx, struct{}{}, peer.OnPeer(id))
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer %s unreachable: %v", id, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
