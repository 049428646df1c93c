package eventlog_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/peer"
)

type balance struct {
	Total int            `json:"total"`
	Count int            `json:"count"`
	ByWho map[string]int `json:"by_who"`
}

// balanceFold sums deposits and counts its calls.
func balanceFold(calls *atomic.Int64) eventlog.Fold[balance] {
	return func(s balance, e eventlog.Event) (balance, error) {
		calls.Add(1)
		var v num
		if err := e.Decode(&v); err != nil {
			return s, err
		}
		if v.N < 0 {
			return s, errors.New("negative deposit")
		}
		if s.ByWho == nil {
			s.ByWho = map[string]int{}
		}
		s.Total += v.N
		s.Count++
		s.ByWho[e.Peer] += v.N
		return s, nil
	}
}

func sum(from, to int) int {
	t := 0
	for i := from; i <= to; i++ {
		t += i
	}
	return t
}

func TestProjectionResumesFromSnapshot(t *testing.T) {
	dir := t.TempDir()
	n1 := jsNode(t, dir, "proj")
	pub := newPeer(t, n1)
	emitN(t, pub, "acct.deposit", 0, 6)
	emitN(t, pub, "acct.closed", 100, 2) // not projected

	var calls atomic.Int64
	p1 := newPeer(t, n1)
	pr, err := eventlog.NewProjection(p1.Log, "balance", "acct.deposit", balance{}, balanceFold(&calls), eventlog.SnapshotEvery(4))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pr.Run(ctx) }()
	// Catch up on the stored events, then follow new ones.
	acks := emitN(t, pub, "acct.deposit", 6, 4)
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := pr.WaitSeq(wctx, acks[3].Seq); err != nil {
		t.Fatal(err)
	}
	st := pr.State()
	if st.Total != sum(0, 9) || st.Count != 10 || st.ByWho[pub.ID()] != sum(0, 9) || pr.Seq() != acks[3].Seq || calls.Load() != 10 {
		t.Fatalf("state %+v seq %d calls %d", st, pr.Seq(), calls.Load())
	}
	// A periodic snapshot was taken after 4 and 8 folds.
	if s := pr.LastSnapshot(); s == nil || s.Seq == 0 {
		t.Fatalf("no periodic snapshot: %+v", s)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("run: %v", err)
	}
	// Run stored a final snapshot at the last folded event.
	if s := pr.LastSnapshot(); s == nil || s.Seq != acks[3].Seq {
		t.Fatalf("final snapshot: %+v, want seq %d", s, acks[3].Seq)
	}
	more := emitN(t, pub, "acct.deposit", 10, 5)
	pub.Close()
	p1.Close()
	if err := n1.Close(); err != nil {
		t.Fatal(err)
	}

	// A new process on the restarted node: only the 5 events after the
	// snapshot are folded, not the 15 in the log.
	n2 := jsNode(t, dir, "proj")
	p2 := newPeer(t, n2)
	var calls2 atomic.Int64
	pr2, err := eventlog.NewProjection(p2.Log, "balance", "acct.deposit", balance{}, balanceFold(&calls2))
	if err != nil {
		t.Fatal(err)
	}
	if err := pr2.CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	st = pr2.State()
	if calls2.Load() != 5 || st.Total != sum(0, 14) || st.Count != 15 || pr2.Seq() != more[4].Seq {
		t.Fatalf("after restart: calls %d state %+v seq %d", calls2.Load(), st, pr2.Seq())
	}
	var seen uint64
	pr2.Read(func(s balance, seq uint64) { seen = seq })
	if seen != more[4].Seq {
		t.Fatalf("read seq %d", seen)
	}

	// A projection with other filters does not use that snapshot.
	var reported atomic.Int64
	p3 := newPeer(t, n2, peer.WithErrorHandler(func(err error) {
		if strings.Contains(err.Error(), "snapshot ignored") {
			reported.Add(1)
		}
	}))
	var calls3 atomic.Int64
	pr3, err := eventlog.NewProjection(p3.Log, "balance", "acct.deposit", balance{}, balanceFold(&calls3),
		eventlog.ProjectFrom(eventlog.FromGroups("nobody")))
	if err != nil {
		t.Fatal(err)
	}
	if err := pr3.CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	if calls3.Load() != 0 || pr3.Seq() != 0 || pr3.State().Total != 0 || reported.Load() != 1 {
		t.Fatalf("other filters: calls %d seq %d reported %d", calls3.Load(), pr3.Seq(), reported.Load())
	}
}

func TestProjectionStopsOnFoldError(t *testing.T) {
	n := jsNode(t, t.TempDir(), "projerr")
	pub := newPeer(t, n)
	good := emitN(t, pub, "acct.deposit", 1, 3)
	bad, err := pub.Emit(context.Background(), "acct.deposit", num{-5})
	if err != nil {
		t.Fatal(err)
	}
	emitN(t, pub, "acct.deposit", 4, 2)
	var calls atomic.Int64
	pr, err := eventlog.NewProjection(pub.Log, "strict", "acct.>", balance{}, balanceFold(&calls), eventlog.WithoutSnapshots())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- pr.Run(ctx) }()
	// Waiting past the bad event reports the fold error.
	if err := pr.WaitSeq(ctx, bad.Seq); err == nil || !strings.Contains(err.Error(), "negative deposit") {
		t.Fatalf("wait: %v", err)
	}
	err = <-done
	if err == nil || !strings.Contains(err.Error(), "negative deposit") || !strings.Contains(err.Error(), "seq 4") {
		t.Fatalf("run: %v", err)
	}
	// The state stays at the event before the bad one.
	if pr.Seq() != good[2].Seq || pr.State().Total != 6 {
		t.Fatalf("seq %d state %+v", pr.Seq(), pr.State())
	}
	if err := pr.Snapshot(ctx); !errors.Is(err, eventlog.ErrInvalidOption) {
		t.Fatalf("snapshot without snapshots: %v", err)
	}
	if _, err := eventlog.NewProjection(pub.Log, "bad name!", "x", 0, func(s int, _ eventlog.Event) (int, error) { return s, nil }); !errors.Is(err, eventlog.ErrInvalidOption) {
		t.Fatalf("bad name: %v", err)
	}
	// ProjectFrom takes filters only: a start option does not compile.
	if in := reflect.TypeOf(eventlog.ProjectFrom).In(0).Elem(); in != reflect.TypeOf(eventlog.FromPeers()) ||
		in == reflect.TypeOf(eventlog.FromStart()) {
		t.Fatalf("start option: ProjectFrom takes %v", in)
	}
	if _, err := eventlog.NewProjection(pub.Log, "x", "x", 0, func(s int, _ eventlog.Event) (int, error) { return s, nil },
		eventlog.SnapshotEvery(-1)); !errors.Is(err, eventlog.ErrInvalidOption) {
		t.Fatalf("negative snapshot interval: %v", err)
	}
}

func TestProjectionEndsWhenPeerCloses(t *testing.T) {
	n := jsNode(t, t.TempDir(), "projclose")
	pp, err := peer.New(n.Conn())
	if err != nil {
		t.Fatal(err)
	}
	p, err := eventlog.New(pp)
	if err != nil {
		t.Fatal(err)
	}
	pr, err := eventlog.NewProjection(p, "count", ">", 0, func(s int, _ eventlog.Event) (int, error) { return s + 1, nil })
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- pr.Run(context.Background()) }()
	a, err := p.Emit(context.Background(), "x", 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := pr.WaitSeq(ctx, a.Seq); err != nil || pr.State() != 1 {
		t.Fatalf("wait: %v, state %d", err, pr.State())
	}
	pp.Close()
	if err := <-done; !errors.Is(err, peer.ErrClosed) {
		t.Fatalf("run after close: %v", err)
	}
}
