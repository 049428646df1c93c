package bus_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/peerbus/peerbus/bus"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func startNode(t *testing.T, opts ...bus.Option) *bus.Node {
	t.Helper()
	base := []bus.Option{bus.WithListen("127.0.0.1:-1"), bus.WithDataDir(t.TempDir())}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := bus.Start(ctx, append(base, opts...)...)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func TestStartCloseIdempotent(t *testing.T) {
	n := startNode(t)
	if err := n.Start(context.Background()); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	if n.Conn() == nil || !n.Conn().IsConnected() {
		t.Fatal("in-process connection not connected")
	}
	js, err := n.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(context.Background()); err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	// The client URL is reachable by an ordinary NATS client.
	nc, err := nats.Connect(n.ClientURL())
	if err != nil {
		t.Fatalf("external client: %v", err)
	}
	nc.Close()
	if err := n.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	err = n.Close()
	if !errors.Is(err, net.ErrClosed) || !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("second close = %v, want net.ErrClosed", err)
	}
	if err := n.Start(context.Background()); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("start after close = %v", err)
	}
}

func TestTwoNodesClusterByRoutes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	nodes, err := bus.StartLocalCluster(ctx, 2, t.TempDir(), "n")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("2-node cluster ready in %v", time.Since(start))
	a, b := nodes[0], nodes[1]
	t.Cleanup(func() { a.Close(); b.Close() })
	sub, err := a.Conn().SubscribeSync("hello")
	if err != nil {
		t.Fatal(err)
	}
	a.Conn().Flush()
	// Interest propagates over the route; publish until it arrives.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := b.Conn().Publish("hello", []byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := sub.NextMsg(100 * time.Millisecond); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("message never crossed the route")
		}
	}
	if a.NumRoutes() == 0 || b.NumRoutes() == 0 {
		t.Fatalf("routes a=%d b=%d", a.NumRoutes(), b.NumRoutes())
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []bus.Option{
		bus.WithListen("nope"),
		bus.WithListen("127.0.0.1:99999"),
		bus.WithName("bad name"),
		bus.WithCluster("x"),
	} {
		if _, err := bus.New(o); !errors.Is(err, bus.ErrInvalidOption) {
			t.Errorf("got %v, want ErrInvalidOption", err)
		}
	}
}

func TestPortInUseFailsCleanly(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = bus.Start(ctx, bus.WithListen(l.Addr().String()), bus.WithDataDir(t.TempDir()))
	if !errors.Is(err, bus.ErrNotReady) || !errors.Is(err, bus.ErrAddrInUse) {
		t.Fatalf("got %v, want ErrNotReady and ErrAddrInUse", err)
	}
	// The error names the port and says how to join what holds it.
	for _, want := range []string{"client port " + l.Addr().String(), bus.EnvNATSURL + "=nats://" + l.Addr().String()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	var ae *bus.AddrInUseError
	if !errors.As(err, &ae) || ae.Listener != "client" || ae.JoinURL != "nats://"+l.Addr().String() {
		t.Errorf("error %#v: want an *AddrInUseError of the client port with its JoinURL", err)
	}

	// A taken cluster port is named as such.
	_, err = bus.Start(ctx, bus.WithListen("127.0.0.1:-1"), bus.WithCluster(l.Addr().String()), bus.WithDataDir(t.TempDir()))
	if !errors.Is(err, bus.ErrAddrInUse) || !strings.Contains(err.Error(), "cluster port "+l.Addr().String()) {
		t.Errorf("cluster port taken: got %v, want ErrAddrInUse naming the cluster port", err)
	}

	// So is a taken monitor port.
	_, err = bus.Start(ctx, bus.WithListen("127.0.0.1:-1"), bus.WithMonitor(l.Addr().String()), bus.WithoutJetStream())
	if !errors.As(err, &ae) || ae.Listener != "monitor" || !strings.Contains(err.Error(), "monitor port "+l.Addr().String()) {
		t.Errorf("monitor port taken: got %v, want an AddrInUseError naming the monitor port", err)
	}
}

func TestEnv(t *testing.T) {
	env := map[string]string{
		bus.EnvName: "n1", bus.EnvListen: "127.0.0.1:5000", bus.EnvRoutes: "a:1, b:2",
		bus.EnvDataDir: "/tmp/x", bus.EnvNATSURL: "nats://h:4222", bus.EnvCluster: "0.0.0.0:7000",
	}
	o := bus.DefaultOptions()
	if err := o.ApplyEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if o.Name != "n1" || o.Listen != "127.0.0.1:5000" || len(o.Routes) != 2 || o.Routes[1] != "b:2" ||
		o.DataDir != "/tmp/x" || o.ExternalURL != "nats://h:4222" || o.ClusterListen != "0.0.0.0:7000" {
		t.Fatalf("env not applied: %+v", o)
	}
	env[bus.EnvNoJetStream] = "maybe"
	if err := o.ApplyEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); !errors.Is(err, bus.ErrInvalidOption) {
		t.Fatalf("bad bool: %v", err)
	}
}

func TestExternalMode(t *testing.T) {
	a := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := bus.Start(ctx, bus.WithExternalURL(a.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Server() != nil {
		t.Fatal("external node embeds a server")
	}
	if _, err := c.JetStream(); err != nil {
		t.Fatalf("jetstream through external: %v", err)
	}
}
