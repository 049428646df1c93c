package eventlog_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/peer"
)

// TestEmitWithoutQuorum checks the error of an emit when two of the
// three nodes of a replicated log are down: it says that the cluster
// lost its quorum, with the counts, and that the outcome is unknown and
// a retry with the same id is safe; and the node keeps running. The
// peer's node is the log's leader, or one of its followers.
func TestEmitWithoutQuorum(t *testing.T) {
	for _, onLeader := range []bool{true, false} {
		name := "on the leader"
		if !onLeader {
			name = "on a follower"
		}
		t.Run(name, func(t *testing.T) { testEmitWithoutQuorum(t, onLeader) })
	}
}

func testEmitWithoutQuorum(t *testing.T, onLeader bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	nodes, err := bus.StartLocalCluster(ctx, 3, t.TempDir(), "quorum")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.Close()
		}
	})
	p0 := newPeer(t, nodes[0])
	if _, err := p0.Emit(ctx, "q.one", num{1}); err != nil {
		t.Fatal(err)
	}
	js, err := nodes[0].JetStream()
	if err != nil {
		t.Fatal(err)
	}
	var leader *bus.Node
	waitFor(t, "a log leader and two current replicas", func() bool {
		s, err := js.Stream(ctx, eventlog.Stream)
		if err != nil || s.CachedInfo().Cluster == nil {
			return false
		}
		c := s.CachedInfo().Cluster
		if len(c.Replicas) != 2 || !c.Replicas[0].Current || !c.Replicas[1].Current {
			return false
		}
		for _, n := range nodes {
			if n.Name() == c.Leader {
				leader = n
			}
		}
		return leader != nil
	})
	keep := leader
	if !onLeader {
		for _, n := range nodes {
			if n != leader {
				keep = n
				break
			}
		}
	}
	p := newPeerLog(t, keep, nil, peer.WithCallTimeout(6*time.Second))
	if _, err := p.Emit(ctx, "q.one", num{1}); err != nil { // knows the log's replicas
		t.Fatal(err)
	}
	p0.Close()
	for _, n := range nodes {
		if n != keep {
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if onLeader {
		kjs, err := keep.JetStream()
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the leader to see the others offline", func() bool {
			s, err := kjs.Stream(ctx, eventlog.Stream)
			if err != nil || s.CachedInfo().Cluster == nil {
				return false
			}
			c := s.CachedInfo().Cluster
			return len(c.Replicas) == 2 && c.Replicas[0].Offline && c.Replicas[1].Offline
		})
	}
	_, err = p.Emit(ctx, "q.two", num{2}, eventlog.WithEventID("q-2"))
	t.Logf("error: %v", err)
	var qe *eventlog.QuorumError
	if !errors.Is(err, eventlog.ErrNoQuorum) || !errors.As(err, &qe) {
		t.Fatalf("emit without quorum: %v, want ErrNoQuorum", err)
	}
	// NoLeader depends on whether the peer's node was elected before the
	// others went; the counts do not.
	if qe.Nodes != 3 || qe.Reachable != 1 {
		t.Errorf("quorum error %+v, want 1 of 3 nodes reachable", qe)
	}
	if errors.Is(err, eventlog.ErrNoJetStream) {
		t.Errorf("emit without quorum says there is no JetStream: %v", err)
	}
	if onLeader {
		// The leader took the event and waits for a quorum: it may
		// store it once the others are back.
		var oe *eventlog.OutcomeError
		if !errors.Is(err, eventlog.ErrUnknownOutcome) || !errors.As(err, &oe) || oe.ID != "q-2" {
			t.Errorf("emit without quorum: %v, want an unknown outcome of event q-2", err)
		}
	}
	// The node keeps running: transient events still flow.
	if _, err := p.EmitTransient(ctx, "q.live", num{3}); err != nil {
		t.Fatal(err)
	}
}
