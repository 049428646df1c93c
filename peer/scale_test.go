package peer_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/peer"
)

// fleet is a set of peers, each on its own TCP connection.
type fleet struct {
	peers []*peer.Peer
	conns []*nats.Conn
}

// startFleet starts n peers on connections to the nodes, in turn,
// several at a time.
func startFleet(t *testing.T, n int, nodes []*bus.Node, opts ...peer.Option) *fleet {
	t.Helper()
	f := &fleet{peers: make([]*peer.Peer, n), conns: make([]*nats.Conn, n)}
	t.Cleanup(f.close)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			nc, err := nodes[i%len(nodes)].Connect(nats.NoReconnect(), nats.Name(fmt.Sprintf("fleet-%d", i)))
			if err != nil {
				errs <- err
				return
			}
			f.conns[i] = nc
			p, err := peer.New(nc, append([]peer.Option{peer.WithName(fmt.Sprintf("p%04d", i))}, opts...)...)
			if err != nil {
				errs <- err
				return
			}
			f.peers[i] = p
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return f
}

func (f *fleet) close() {
	var wg sync.WaitGroup
	for i, p := range f.peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if p != nil {
				p.Close()
			}
			if f.conns[i] != nil {
				f.conns[i].Close()
			}
		}()
	}
	wg.Wait()
}

func (f *fleet) ids(idx []int) map[string]bool {
	out := map[string]bool{}
	for _, i := range idx {
		out[f.peers[i].ID()] = true
	}
	return out
}

// goneLog records the gone and left peers a watcher sees.
type goneLog struct {
	mu   sync.Mutex
	gone map[string]bool
	left map[string]bool
}

func watchGone(p *peer.Peer) (*goneLog, *peer.PresenceWatch) {
	l := &goneLog{gone: map[string]bool{}, left: map[string]bool{}}
	w := p.WatchPresence(func(e peer.PresenceEvent) {
		l.mu.Lock()
		defer l.mu.Unlock()
		switch e.Kind {
		case peer.PeerGone:
			l.gone[e.Peer.ID] = true
		case peer.PeerLeft:
			l.left[e.Peer.ID] = true
		}
	})
	return l, w
}

func (l *goneLog) snapshot() (gone, left map[string]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.gone), maps.Clone(l.left)
}

// eachPeer runs fn for every index, a few at a time, and fails on the
// first error.
func eachPeer(t *testing.T, idx []int, fn func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(idx))
	sem := make(chan struct{}, 8)
	for _, i := range idx {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(i); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// awaitPeers waits until p's Peers is exactly want.
func awaitPeers(p *peer.Peer, want map[string]bool, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		infos, err := p.Peers(ctx)
		cancel()
		got := map[string]bool{}
		for _, i := range infos {
			got[i.ID] = true
		}
		if err == nil && maps.Equal(got, want) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("peer %s: Peers has %d peers, want %d (err %v)", p.ID(), len(got), len(want), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPresenceScale starts 500 peers on one node, each on its own
// connection: every peer lists all of them; 50 connections die; the
// watchers report exactly those gone, every other peer lists exactly
// the others, and a fan-out call reaches exactly them.
func TestPresenceScale(t *testing.T) {
	n, killed, watchers := 500, 50, 4
	if testing.Short() {
		n, killed = 100, 10
	}
	node := single(t)
	start := time.Now()
	f := startFleet(t, n, []*bus.Node{node})
	t.Logf("%d peers started in %v", n, time.Since(start).Round(time.Millisecond))
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	want := f.ids(all)
	eachPeer(t, all, func(i int) error { return awaitPeers(f.peers[i], want, 20*time.Second) })
	t.Logf("every peer lists all %d after %v", n, time.Since(start).Round(time.Millisecond))

	// Watchers among the survivors (the last peers); the first peers die.
	var logs []*goneLog
	for i := n - watchers; i < n; i++ {
		l, w := watchGone(f.peers[i])
		defer w.Close()
		logs = append(logs, l)
	}
	for _, i := range all[n-watchers:] {
		if err := awaitPeers(f.peers[i], want, 20*time.Second); err != nil { // views synced
			t.Fatal(err)
		}
	}
	t.Logf("watchers synced after %v", time.Since(start).Round(time.Millisecond))
	dead := f.ids(all[:killed])
	for i := range killed {
		f.conns[i].Close() // the process dies: no leave
	}
	survivors := all[killed:]
	alive := f.ids(survivors)
	for wi, l := range logs {
		waitFor(t, fmt.Sprintf("watcher %d sees the %d dead peers gone", wi, killed), func() bool {
			gone, _ := l.snapshot()
			return len(gone) >= killed
		})
		gone, left := l.snapshot()
		if !maps.Equal(gone, dead) || len(left) != 0 {
			for id := range gone {
				if !dead[id] {
					for i, p := range f.peers {
						if p.ID() == id {
							t.Logf("peer %d reported gone, closed %v", i, f.conns[i].IsClosed())
						}
					}
				}
			}
			t.Fatalf("watcher %d: gone %d (want exactly the %d dead), left %d", wi, len(gone), killed, len(left))
		}
	}
	t.Logf("watchers saw the dead gone after %v", time.Since(start).Round(time.Millisecond))
	eachPeer(t, survivors, func(i int) error { return awaitPeers(f.peers[i], alive, 20*time.Second) })
	t.Logf("survivors list each other after %v", time.Since(start).Round(time.Millisecond))

	// A fan-out call from a peer without a view reaches exactly the survivors.
	caller := f.peers[killed]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	replies, err := caller.CallAll(ctx, peer.TagPing, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, r := range replies {
		if r.Err != nil {
			t.Fatalf("reply of %s: %v", r.Peer, r.Err)
		}
		got[r.Peer] = true
	}
	if !maps.Equal(got, alive) {
		t.Fatalf("fan-out reached %d peers, want exactly the %d alive", len(got), len(alive))
	}
	// And from a watcher (expected set from its view).
	replies, err = f.peers[n-1].CallAll(ctx, peer.TagPing, nil)
	if err != nil || len(replies) != len(alive) {
		t.Fatalf("fan-out from a watcher: %d replies, %v", len(replies), err)
	}
}

// TestPresenceClusterNodeDies spreads peers over a 3-node cluster:
// every peer lists all; when a node dies, the watchers on the others
// report exactly its peers gone and the survivors list exactly the
// others.
func TestPresenceClusterNodeDies(t *testing.T) {
	per := 40
	if testing.Short() {
		per = 10
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nodes, err := bus.StartLocalCluster(ctx, 3, t.TempDir(), "ps", bus.WithoutJetStream())
	if err != nil {
		t.Fatal(err)
	}
	closed := make([]bool, len(nodes))
	t.Cleanup(func() {
		for i, n := range nodes {
			if !closed[i] {
				n.Close()
			}
		}
	})
	f := startFleet(t, 3*per, nodes)
	all := make([]int, len(f.peers))
	for i := range all {
		all[i] = i
	}
	want := f.ids(all)
	eachPeer(t, all, func(i int) error { return awaitPeers(f.peers[i], want, 20*time.Second) })
	// Peer i is on node i%3; node 2 dies; watchers on nodes 0 and 1.
	var onDead, onAlive []int
	for _, i := range all {
		if i%3 == 2 {
			onDead = append(onDead, i)
		} else {
			onAlive = append(onAlive, i)
		}
	}
	var logs []*goneLog
	for _, i := range onAlive[:2] {
		l, w := watchGone(f.peers[i])
		defer w.Close()
		logs = append(logs, l)
		if err := awaitPeers(f.peers[i], want, 20*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	closed[2] = true
	nodes[2].Close()
	dead, alive := f.ids(onDead), f.ids(onAlive)
	for wi, l := range logs {
		waitFor(t, fmt.Sprintf("watcher %d sees node 2's peers gone", wi), func() bool {
			gone, _ := l.snapshot()
			return len(gone) >= len(dead)
		})
		gone, left := l.snapshot()
		if !maps.Equal(gone, dead) || len(left) != 0 {
			t.Fatalf("watcher %d: gone %v, want %v; left %v", wi, slices.Sorted(maps.Keys(gone)), slices.Sorted(maps.Keys(dead)), left)
		}
	}
	eachPeer(t, onAlive, func(i int) error { return awaitPeers(f.peers[i], alive, 20*time.Second) })
}
