package eventlog_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/peer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cluster starts two clustered nodes on loopback.
func cluster(t *testing.T) (*bus.Node, *bus.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nodes, err := bus.StartLocalCluster(ctx, 2, t.TempDir(), "pt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.Close()
		}
	})
	return nodes[0], nodes[1]
}

// single starts a node without JetStream.
func single(t *testing.T) *bus.Node {
	t.Helper()
	n, err := bus.Start(context.Background(), bus.WithListen("127.0.0.1:-1"), bus.WithoutJetStream())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// jsNode starts a JetStream node named name on dir (a restart of the
// same name and dir finds the same log).
func jsNode(t testing.TB, dir, name string) *bus.Node {
	t.Helper()
	n, err := bus.Start(context.Background(), bus.WithListen("127.0.0.1:-1"), bus.WithName(name), bus.WithDataDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// tpeer is a peer and its event log.
type tpeer struct {
	*eventlog.Log
	p *peer.Peer
}

// ID returns the peer id.
func (tp tpeer) ID() string { return tp.p.ID() }

// Close closes the peer, which closes its log.
func (tp tpeer) Close() error { return tp.p.Close() }

// newPeer starts a peer on n with its event log.
func newPeer(t testing.TB, n *bus.Node, opts ...peer.Option) tpeer {
	t.Helper()
	return newPeerLog(t, n, nil, opts...)
}

// newPeerLog starts a peer on n with its event log, with log options.
func newPeerLog(t testing.TB, n *bus.Node, lopts []eventlog.Option, opts ...peer.Option) tpeer {
	t.Helper()
	base := []peer.Option{peer.WithPresence(100*time.Millisecond, 500*time.Millisecond)}
	p, err := peer.New(n.Conn(), append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	lg, err := eventlog.New(p, lopts...)
	if err != nil {
		t.Fatal(err)
	}
	return tpeer{Log: lg, p: p}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitPeers waits until p sees the peers with the given ids offering tag.
func waitPeers(t *testing.T, p tpeer, tag string, ids ...string) {
	t.Helper()
	waitFor(t, "peers "+strings.Join(ids, ","), func() bool {
		infos, _ := p.p.Peers(context.Background(), peer.WithTag(tag))
		got := map[string]bool{}
		for _, i := range infos {
			got[i.ID] = true
		}
		for _, id := range ids {
			if !got[id] {
				return false
			}
		}
		return true
	})
}
