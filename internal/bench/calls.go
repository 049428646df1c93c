package bench

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/peer"
)

// mulArgs is the argument of the benchmark's tagged function.
type mulArgs struct{ A, B int }

func multiply(_ context.Context, in mulArgs) (int, error) { return in.A * in.B, nil }

// rawArgs and rawResult are the bytes peerbus sends and answers for
// mulArgs{5, 10}: the raw baseline moves the same payloads.
var (
	rawArgs   = []byte(`{"A":5,"B":10}`)
	rawResult = []byte(`50`)
)

// callCases are the tagged call cases.
func callCases() []Case {
	return []Case{
		{
			Name: "call", Kind: Latency,
			What:     "tagged call round trip, caller and callee peers on one node (TCP clients)",
			Baseline: "nats.go request/reply on the same connections, replying in the subscription callback",
			Setup: func(ctx context.Context, env *Env) (Side, Side, func(), error) {
				n, err := env.Node(ctx)
				if err != nil {
					return Side{}, Side{}, nil, err
				}
				return callSetup(ctx, n, n, 1)
			},
		},
		{
			Name: "call-2nodes", Kind: Latency,
			What:     "tagged call round trip, caller on one node, callee on another of a cluster",
			Baseline: "nats.go request/reply across the same two nodes",
			Setup: func(ctx context.Context, env *Env) (Side, Side, func(), error) {
				nodes, err := env.Cluster(ctx)
				if err != nil {
					return Side{}, Side{}, nil, err
				}
				return callSetup(ctx, nodes[0], nodes[1], 1)
			},
		},
		{
			Name: "call-parallel", Kind: Rate, Unit: "calls/s",
			What:     "tagged calls per second, 64 concurrent callers on one caller peer, one callee peer, one node",
			Baseline: "nats.go requests from 64 goroutines, one replying subscription",
			Setup: func(ctx context.Context, env *Env) (Side, Side, func(), error) {
				n, err := env.Node(ctx)
				if err != nil {
					return Side{}, Side{}, nil, err
				}
				return callSetup(ctx, n, n, 64)
			},
		},
	}
}

// callSetup starts a caller peer on a connection to from and a callee
// peer serving "bench.multiply" on a connection to to, and a raw
// responder on the callee's connection.
func callSetup(ctx context.Context, from, to *bus.Node, conc int) (pb, raw Side, cleanup func(), err error) {
	var cl cleanups
	cleanup = cl.run
	defer func() {
		if err != nil {
			cl.run()
		}
	}()
	callerNC, err := Connect(from, "bench-caller")
	if err != nil {
		return pb, raw, cleanup, err
	}
	cl.add(callerNC.Close)
	calleeNC, err := Connect(to, "bench-callee")
	if err != nil {
		return pb, raw, cleanup, err
	}
	cl.add(calleeNC.Close)
	caller, err := peer.New(callerNC, peer.AsClient())
	if err != nil {
		return pb, raw, cleanup, err
	}
	cl.closer(caller)
	callee, err := peer.New(calleeNC, peer.WithName("bench-callee"))
	if err != nil {
		return pb, raw, cleanup, err
	}
	cl.closer(callee)
	if _, err := peer.Register(callee, "bench.multiply", multiply); err != nil {
		return pb, raw, cleanup, err
	}
	stub, err := peer.Stub[mulArgs, int](caller, "bench.multiply")
	if err != nil {
		return pb, raw, cleanup, err
	}
	target := peer.OnPeer(callee.ID())
	call := func(ctx context.Context) (int, error) {
		v, err := stub.Call(ctx, mulArgs{5, 10}, target)
		if err != nil {
			return 0, err
		}
		if v != 50 {
			return 0, fmt.Errorf("multiply: got %d", v)
		}
		return 1, nil
	}
	// A subject as long as the peer's call subject.
	subject := "bench.raw." + callee.ID() + ".bench.multiply"
	sub, err := calleeNC.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond(rawResult) })
	if err != nil {
		return pb, raw, cleanup, err
	}
	cl.add(func() { _ = sub.Unsubscribe() })
	if err := calleeNC.Flush(); err != nil {
		return pb, raw, cleanup, err
	}
	request := func(ctx context.Context) (int, error) {
		m, err := callerNC.RequestWithContext(ctx, subject, rawArgs)
		if err != nil {
			return 0, err
		}
		if !bytes.Equal(m.Data, rawResult) {
			return 0, fmt.Errorf("raw reply %q", m.Data)
		}
		return 1, nil
	}
	// Across a route, subscriptions take a moment to propagate.
	if err := retry(ctx, call); err != nil {
		return pb, raw, cleanup, fmt.Errorf("first call: %w", err)
	}
	if err := retry(ctx, request); err != nil {
		return pb, raw, cleanup, fmt.Errorf("first request: %w", err)
	}
	return Side{Op: call, Concurrency: conc}, Side{Op: request, Concurrency: conc}, cleanup, nil
}

// retry calls op until it succeeds, for up to 10 s.
func retry(ctx context.Context, op func(context.Context) (int, error)) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := op(actx)
		cancel()
		if err == nil || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}
