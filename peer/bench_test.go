package peer_test

import (
	"context"
	"runtime"
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

// BenchmarkCallParallel measures tagged calls from 64 goroutines through
// one caller peer to one callee peer, beside raw nats.go requests from
// 64 goroutines to one callback subscription, on one node over TCP
// client connections (as peerbus bench's call-parallel). Compare the
// ns/op, cpu-ns/op (the CPU time of the process, server included, per
// call: steadier than ns/op on a machine shared with other work) and
// allocs/op of the two in one run:
//
//	go test -run '^$' -bench CallParallel -benchmem ./peer/
func BenchmarkCallParallel(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	n, err := bus.Start(ctx, bus.WithListen("127.0.0.1:-1"), bus.WithoutJetStream(), bus.WithDataDir(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	callerNC, err := nats.Connect(n.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer callerNC.Close()
	calleeNC, err := nats.Connect(n.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer calleeNC.Close()
	caller, err := peer.New(callerNC, peer.AsClient())
	if err != nil {
		b.Fatal(err)
	}
	defer caller.Close()
	callee, err := peer.New(calleeNC)
	if err != nil {
		b.Fatal(err)
	}
	defer callee.Close()
	if _, err := peer.Register(callee, "multiply", multiply); err != nil {
		b.Fatal(err)
	}
	stub, _ := peer.Stub[MulArgs, int](caller, "multiply")
	target := peer.OnPeer(callee.ID())
	sub, err := calleeNC.Subscribe("raw."+callee.ID()+".multiply", func(m *nats.Msg) { _ = m.Respond([]byte("50")) })
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := calleeNC.Flush(); err != nil {
		b.Fatal(err)
	}
	const callers = 64
	b.Run("peerbus", func(b *testing.B) {
		b.SetParallelism(max(callers/runtime.GOMAXPROCS(0), 1))
		b.ReportAllocs()
		defer reportCPU(b)()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if v, err := stub.Call(ctx, MulArgs{5, 10}, target); err != nil || v != 50 {
					b.Error(v, err)
					return
				}
			}
		})
	})
	b.Run("raw", func(b *testing.B) {
		b.SetParallelism(max(callers/runtime.GOMAXPROCS(0), 1))
		b.ReportAllocs()
		args := []byte(`{"A":5,"B":10}`)
		defer reportCPU(b)()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := callerNC.RequestWithContext(ctx, sub.Subject, args); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// reportCPU starts counting the process's CPU time; the returned func
// reports it per op as cpu-ns/op.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
		}
	}
}
