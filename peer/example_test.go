package peer_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/peer"
)

// exampleNode starts a node on a free loopback port, with JetStream in a
// temporary directory; stop closes it and removes the directory.
func exampleNode() (n *bus.Node, stop func(), err error) {
	dir, err := os.MkdirTemp("", "peerbus-example-")
	if err != nil {
		return nil, nil, err
	}
	n, err = bus.Start(context.Background(), bus.WithListen("127.0.0.1:-1"), bus.WithDataDir(dir))
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return n, func() { n.Close(); os.RemoveAll(dir) }, nil
}

// exampleArgs are the arguments of the examples' functions.
type exampleArgs struct {
	A int `json:"a"`
	B int `json:"b"`
}

// A peer serves "multiply"; a client calls it on any peer that offers it,
// typed and untyped (JSON).
func ExampleRegister() {
	n, stop, err := exampleNode()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()

	server, err := peer.New(n.Conn())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer server.Close()
	_, err = peer.Register(server, "multiply", func(_ context.Context, in exampleArgs) (int, error) {
		return in.A * in.B, nil
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	client, err := peer.New(n.Conn(), peer.AsClient())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()
	ctx := context.Background()

	// Typed: a stub of the remote function.
	multiply, err := peer.Stub[exampleArgs, int](client, "multiply")
	if err != nil {
		fmt.Println(err)
		return
	}
	v, err := multiply.Call(ctx, exampleArgs{A: 5, B: 10}, peer.OnAny())
	fmt.Println(v, err)

	// Untyped: JSON in, JSON out, as the CLI does.
	raw, err := client.Call(ctx, "multiply", []byte(`{"a":6,"b":7}`), peer.OnAny())
	fmt.Println(string(raw), err)
	// Output:
	// 50 <nil>
	// 42 <nil>
}

// A failed remote call returns a *RemoteError with the remote error's
// code, type and message; sentinels match it with errors.Is.
func ExampleRemoteError() {
	n, stop, err := exampleNode()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	p, err := peer.New(n.Conn())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()
	_, err = peer.Register(p, "divide", func(_ context.Context, in exampleArgs) (int, error) {
		if in.B == 0 {
			return 0, errors.New("division by zero")
		}
		return in.A / in.B, nil
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	ctx := context.Background()
	_, err = p.Call(ctx, "divide", []byte(`{"a":1,"b":0}`), peer.OnPeer(p.ID()))
	var re *peer.RemoteError
	if errors.As(err, &re) {
		fmt.Println(re.Code, re.Type, re.Message)
	}
	_, err = p.Call(ctx, "sqrt", nil, peer.OnPeer(p.ID()))
	fmt.Println(errors.Is(err, peer.ErrNoSuchTag))
	// Output:
	// error *errors.errorString division by zero
	// true
}

// Every peer offering a tag answers a fan-out call.
func ExamplePeer_CallAll() {
	n, stop, err := exampleNode()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	for _, name := range []string{"alpha", "beta"} {
		p, err := peer.New(n.Conn(), peer.WithName(name))
		if err != nil {
			fmt.Println(err)
			return
		}
		defer p.Close()
		if _, err := peer.Register(p, "whoami", func(context.Context, struct{}) (string, error) { return name, nil }); err != nil {
			fmt.Println(err)
			return
		}
	}
	client, err := peer.New(n.Conn(), peer.AsClient())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	whoami, _ := peer.Stub[struct{}, string](client, "whoami")
	replies, err := whoami.CallAll(context.Background(), struct{}{}, peer.Timeout(5*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	var names []string
	for _, r := range replies {
		if r.Err == nil {
			names = append(names, r.Value)
		}
	}
	slices.Sort(names) // replies come in arrival order
	fmt.Println(names)
	// Output: [alpha beta]
}

// OnAny with InGroup runs a call on one peer of a group, load-balanced
// among the group's peers only.
func ExampleInGroup() {
	n, stop, err := exampleNode()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	for _, g := range []string{"eu", "us"} {
		p, err := peer.New(n.Conn(), peer.WithGroup(g))
		if err != nil {
			fmt.Println(err)
			return
		}
		defer p.Close()
		if _, err := peer.Register(p, "region", func(context.Context, struct{}) (string, error) { return g, nil }); err != nil {
			fmt.Println(err)
			return
		}
	}
	client, err := peer.New(n.Conn(), peer.AsClient())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	region, _ := peer.Stub[struct{}, string](client, "region")
	ctx := context.Background()
	for range 3 {
		v, err := region.Call(ctx, struct{}{}, peer.OnAny(), peer.InGroup("us"))
		fmt.Println(v, err)
	}
	_, err = region.Call(ctx, struct{}{}, peer.OnAny(), peer.InGroup("asia"))
	fmt.Println(errors.Is(err, peer.ErrNoResponders))
	// Output:
	// us <nil>
	// us <nil>
	// us <nil>
	// true
}

// QueryPeers lists the peers of the bus from any NATS connection.
func ExampleQueryPeers() {
	n, stop, err := exampleNode()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	for _, name := range []string{"worker-1", "worker-2"} {
		p, err := peer.New(n.Conn(), peer.WithName(name), peer.WithGroup("workers"))
		if err != nil {
			fmt.Println(err)
			return
		}
		defer p.Close()
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	infos, err := peer.QueryPeers(ctx, n.Conn(), 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, i := range infos {
		fmt.Println(i.Name, i.Group, i.Tags)
	}
	// Output:
	// worker-1 workers [info ping]
	// worker-2 workers [info ping]
}
