package peer_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/peer"
)

// BenchmarkCall measures a tagged call round trip beside raw nats.go
// request/reply on the same servers and connections, on one node and
// across two clustered nodes. Compare peerbus and raw ns/op of the same
// topology (the ratio is what matters, not the absolute numbers).
func BenchmarkCall(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nodes, err := bus.StartLocalCluster(ctx, 2, b.TempDir(), "bench", bus.WithoutJetStream())
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	for _, topo := range []struct {
		name     string
		from, to *bus.Node
	}{{"one-node", nodes[0], nodes[0]}, {"two-nodes", nodes[0], nodes[1]}} {
		callerNC, err := topo.from.Connect()
		if err != nil {
			b.Fatal(err)
		}
		calleeNC, err := topo.to.Connect()
		if err != nil {
			b.Fatal(err)
		}
		caller, _ := peer.New(callerNC, peer.AsClient())
		callee, _ := peer.New(calleeNC)
		mul, _ := peer.Register(callee, "multiply", multiply)
		stub, _ := peer.Stub[MulArgs, int](caller, mul.Tag())
		// Wait until the call works across the route.
		for {
			if _, err := stub.Call(ctx, MulArgs{1, 2}, peer.OnPeer(callee.ID())); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		b.Run(topo.name+"/peerbus", func(b *testing.B) {
			for b.Loop() {
				if v, err := stub.Call(ctx, MulArgs{5, 10}, peer.OnPeer(callee.ID())); err != nil || v != 50 {
					b.Fatal(v, err)
				}
			}
		})
		sub, _ := calleeNC.Subscribe("raw.multiply", func(m *nats.Msg) { _ = m.Respond([]byte("50")) })
		calleeNC.Flush()
		for {
			if _, err := callerNC.Request("raw.multiply", []byte(`{"A":5,"B":10}`), time.Second); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		b.Run(topo.name+"/raw", func(b *testing.B) {
			for b.Loop() {
				if _, err := callerNC.RequestWithContext(ctx, "raw.multiply", []byte(`{"A":5,"B":10}`)); err != nil {
					b.Fatal(err)
				}
			}
		})
		sub.Unsubscribe()
		caller.Close()
		callee.Close()
		callerNC.Close()
		calleeNC.Close()
	}
}
