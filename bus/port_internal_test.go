package bus

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestChosenClusterPortTaken hands a node a cluster port that another
// listener holds, as when another process binds a port between its
// choice and the server's bind: the node starts on another port.
func TestChosenClusterPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	calls := 0
	pickPort = func(host string) (int, error) {
		calls++
		if calls == 1 {
			return taken, nil
		}
		return freePort(host)
	}
	defer func() { pickPort = freePort }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := Start(ctx, WithListen("127.0.0.1:-1"), WithCluster("127.0.0.1:-1"), WithDataDir(t.TempDir()))
	if err != nil {
		t.Fatalf("start with a taken cluster port: %v", err)
	}
	defer n.Close()
	if calls != 2 || n.Server().ClusterAddr().Port == taken {
		t.Fatalf("port chosen %d times, cluster on %v (taken: %d)", calls, n.Server().ClusterAddr(), taken)
	}
}
