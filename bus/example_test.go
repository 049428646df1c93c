package bus_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/bus"
)

// A node with JetStream, listening on a free loopback port.
func ExampleStart() {
	dir, err := os.MkdirTemp("", "peerbus-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	n, err := bus.Start(context.Background(),
		bus.WithListen("127.0.0.1:-1"), // -1: any free port
		bus.WithDataDir(dir))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer n.Close()

	_, err = n.JetStream()
	fmt.Println("jetstream:", err == nil)
	fmt.Println("loopback client URL:", strings.HasPrefix(n.ClientURL(), "nats://127.0.0.1:"))
	fmt.Println("in-process connection:", n.Conn().IsConnected())
	// Output:
	// jetstream: true
	// loopback client URL: true
	// in-process connection: true
}

// Ordinary NATS clients reach a node at its client URL.
func ExampleNode_ClientURL() {
	n, err := bus.Start(context.Background(), bus.WithListen("127.0.0.1:-1"), bus.WithoutJetStream())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer n.Close()

	nc, err := nats.Connect(n.ClientURL())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	sub, err := n.Conn().Subscribe("greet", func(m *nats.Msg) { _ = m.Respond([]byte("hello " + string(m.Data))) })
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sub.Unsubscribe()
	_ = n.Conn().Flush()

	reply, err := nc.Request("greet", []byte("world"), 5*time.Second)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(reply.Data))
	// Output: hello world
}

// A second node in external mode uses the first one's server instead
// of embedding its own.
func ExampleWithExternalURL() {
	n1, err := bus.Start(context.Background(), bus.WithListen("127.0.0.1:-1"), bus.WithoutJetStream())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer n1.Close()

	n2, err := bus.Start(context.Background(), bus.WithExternalURL(n1.ClientURL()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer n2.Close()

	fmt.Println("embedded server:", n2.Server() != nil)
	fmt.Println("same server:", n2.Conn().ConnectedServerName() == n1.Name())
	// Output:
	// embedded server: false
	// same server: true
}

// Two clustered nodes on loopback, started together so that clustered
// JetStream finds its quorum.
func ExampleStartLocalCluster() {
	dir, err := os.MkdirTemp("", "peerbus-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nodes, err := bus.StartLocalCluster(ctx, 2, dir, "example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	for _, n := range nodes {
		fmt.Println(n.Name(), "routed:", n.NumRoutes() > 0, "cluster URL:", strings.HasPrefix(n.ClusterURL(), "nats-route://127.0.0.1:"))
	}
	// Output:
	// example-0 routed: true cluster URL: true
	// example-1 routed: true cluster URL: true
}

// ApplyEnv reads the PEERBUS_* variables; here from a map instead of the
// process environment.
func ExampleOptions_ApplyEnv() {
	env := map[string]string{
		bus.EnvListen: "0.0.0.0:4222",
		bus.EnvRoutes: "10.0.0.1:6222, 10.0.0.2:6222",
	}
	o := bus.DefaultOptions()
	if err := o.ApplyEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(o.Listen, o.Routes, o.ClusterName)
	// Output: 0.0.0.0:4222 [10.0.0.1:6222 10.0.0.2:6222] peerbus
}

// Settings is the table behind ApplyEnv and the CLI's flags: here a
// value given as text, as a flag or a variable gives it, is applied.
func ExampleSettings() {
	o := bus.DefaultOptions()
	for _, s := range bus.Settings() {
		if s.Flag == "listen" {
			fmt.Printf("--%s [$%s] default %s\n", s.Flag, s.Env, s.Default)
			if err := s.Set(&o, "127.0.0.1:-1"); err != nil {
				fmt.Println(err)
			}
			if err := s.Set(&o, "nonsense"); err != nil {
				fmt.Println("refused:", errors.Is(err, bus.ErrInvalidOption))
			}
		}
	}
	fmt.Println(o.Listen)
	// Output:
	// --listen [$PEERBUS_LISTEN] default 127.0.0.1:4222
	// refused: true
	// 127.0.0.1:-1
}
