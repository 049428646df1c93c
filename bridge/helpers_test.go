package bridge

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
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

// echoServer runs a TCP echo server that half-closes after echoing
// everything; it returns "tcp://addr".
func echoServer(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 256<<10)
				_, _ = io.CopyBuffer(c, c, buf)
				_ = c.(*net.TCPConn).CloseWrite()
				// Wait for the other side to close.
				_, _ = c.Read(buf[:1])
				_ = c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "tcp://" + l.Addr().String()
}

// udpEchoServer echoes datagrams; it returns "udp://addr".
func udpEchoServer(t testing.TB) string {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			_, _ = c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() {
		_ = c.Close()
		<-done
	})
	return "udp://" + c.LocalAddr().String()
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
