package peer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/peerbus/peerbus/bus"
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

func single(t *testing.T) *bus.Node {
	t.Helper()
	n, err := bus.Start(context.Background(), bus.WithListen("127.0.0.1:-1"), bus.WithoutJetStream())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func newPeer(t *testing.T, n *bus.Node, opts ...peer.Option) *peer.Peer {
	t.Helper()
	base := []peer.Option{peer.WithPresence(100*time.Millisecond, 500*time.Millisecond)}
	p, err := peer.New(n.Conn(), append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
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
func waitPeers(t *testing.T, p *peer.Peer, tag string, ids ...string) {
	t.Helper()
	waitFor(t, "peers "+strings.Join(ids, ","), func() bool {
		infos, _ := p.Peers(context.Background(), peer.WithTag(tag))
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

type MulArgs struct{ A, B int }

func multiply(_ context.Context, in MulArgs) (int, error) { return in.A * in.B, nil }

type myErr struct{ Code int }

func (e *myErr) Error() string { return fmt.Sprintf("my error %d", e.Code) }

func TestCallsAcrossClusteredNodes(t *testing.T) {
	na, nb := cluster(t)
	a := newPeer(t, na, peer.WithName("a"), peer.WithGroup("g1"))
	b := newPeer(t, nb, peer.WithName("b"), peer.WithGroup("g2"))
	c := newPeer(t, nb, peer.WithName("c"), peer.WithGroup("g2"))
	for _, p := range []*peer.Peer{b, c} {
		if _, err := peer.Register(p, "multiply", multiply); err != nil {
			t.Fatal(err)
		}
	}
	mul, err := peer.Stub[MulArgs, int](a, "multiply")
	if err != nil {
		t.Fatal(err)
	}
	waitPeers(t, a, "multiply", b.ID(), c.ID())
	ctx := context.Background()

	// One chosen peer.
	v, err := mul.Call(ctx, MulArgs{5, 10}, peer.OnPeer(b.ID()))
	if err != nil || v != 50 {
		t.Fatalf("OnPeer: %v %v", v, err)
	}
	// Any peer: both b and c serve over time (queue group).
	served := map[string]bool{}
	infoAny, _ := peer.Stub[struct{}, peer.Info](a, "info")
	for i := 0; i < 200 && len(served) < 2; i++ {
		if _, err := mul.Call(ctx, MulArgs{i, 2}, peer.OnAny()); err != nil {
			t.Fatal(err)
		}
		info, err := infoAny.Call(ctx, struct{}{}, peer.OnAny())
		if err != nil {
			t.Fatal(err)
		}
		served[info.ID] = true
	}
	if len(served) < 2 {
		t.Fatalf("any: only %v served", served)
	}
	// All peers offering the tag.
	replies, err := mul.CallAll(ctx, MulArgs{3, 4})
	if err != nil {
		t.Fatal(err)
	}
	if len(replies) != 2 {
		t.Fatalf("all: %d replies: %+v", len(replies), replies)
	}
	for _, r := range replies {
		if r.Err != nil || r.Value != 12 {
			t.Fatalf("all: %+v", r)
		}
	}
	// Group filter: only g2 serves multiply; g1 has none.
	replies, err = mul.CallAll(ctx, MulArgs{1, 1}, peer.InGroup("g1"))
	if !errors.Is(err, peer.ErrNoResponders) {
		t.Fatalf("all in g1: %v %+v", err, replies)
	}
	pings, err := peer.Stub[struct{}, any](a, "ping")
	if err != nil {
		t.Fatal(err)
	}
	pr, err := pings.CallAll(ctx, struct{}{}, peer.InGroup("g2"))
	if err != nil || len(pr) != 2 {
		t.Fatalf("ping all in g2: %v %+v", err, pr)
	}
	// Listed peers.
	replies, err = mul.CallAll(ctx, MulArgs{2, 2}, peer.OnPeers(b.ID(), "nobody"))
	if err != nil || len(replies) != 2 || replies[0].Value != 4 || !errors.Is(replies[1].Err, peer.ErrNoResponders) {
		t.Fatalf("OnPeers: %v %+v", err, replies)
	}
}

func TestRemoteErrorsPanicsAndTimeouts(t *testing.T) {
	na, nb := cluster(t)
	a := newPeer(t, na)
	b := newPeer(t, nb)
	fail, err := peer.Register(b, "fail", func(_ context.Context, code int) (string, error) {
		return "", fmt.Errorf("wrapped: %w", &myErr{Code: code})
	})
	if err != nil {
		t.Fatal(err)
	}
	boom, err := peer.Register(b, "boom", func(context.Context, struct{}) (int, error) {
		var m map[string]int
		//lint:ignore SA5000 the function panics on purpose
		m["x"] = 1 // nil map write panics
		return 0, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	defer close(release)
	_, err = peer.Register(b, "slow", func(ctx context.Context, _ struct{}) (int, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return 1, ctx.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	waitPeers(t, a, "slow", b.ID())
	ctx := context.Background()

	// Remote error: typed, with type name and stack.
	failA, _ := peer.Stub[int, string](a, fail.Tag())
	_, err = failA.Call(ctx, 7, peer.OnPeer(b.ID()))
	var re *peer.RemoteError
	if !errors.As(err, &re) {
		t.Fatalf("want RemoteError, got %T %v", err, err)
	}
	if re.Peer != b.ID() || re.Tag != "fail" || re.Type != "*fmt.wrapError" || !strings.Contains(re.Message, "my error 7") || re.Stack == "" || re.Code != peer.CodeError {
		t.Fatalf("remote error fields: %+v", re)
	}
	// Local pass-through gives the same kind of error, and keeps the cause.
	_, lerr := fail.Call(ctx, 7)
	var lre *peer.RemoteError
	var me *myErr
	if !errors.As(lerr, &lre) || lre.Type != re.Type || lre.Message != re.Message || !errors.As(lerr, &me) || me.Code != 7 {
		t.Fatalf("local error: %T %v", lerr, lerr)
	}

	// Panic in the remote: a RemoteError, and the remote keeps serving.
	boomA, _ := peer.Stub[struct{}, int](a, boom.Tag())
	_, err = boomA.Call(ctx, struct{}{}, peer.OnPeer(b.ID()))
	if !errors.Is(err, peer.ErrPanic) || !errors.As(err, &re) || !strings.Contains(re.Stack, "panic") || !strings.Contains(re.Message, "nil map") {
		t.Fatalf("panic: %v", err)
	}
	if _, lerr := boom.Call(ctx, struct{}{}); !errors.Is(lerr, peer.ErrPanic) {
		t.Fatalf("local panic: %v", lerr)
	}
	if _, err := failA.Call(ctx, 1, peer.OnPeer(b.ID())); !errors.As(err, &re) {
		t.Fatalf("remote stopped serving after panic: %v", err)
	}

	// Unknown tag: the reply lists the tags the peer has.
	nope, _ := peer.Stub[struct{}, int](a, "nope")
	_, err = nope.Call(ctx, struct{}{}, peer.OnPeer(b.ID()))
	if !errors.Is(err, peer.ErrNoSuchTag) || !errors.As(err, &re) || !contains(re.Tags, "fail") || !contains(re.Tags, "info") {
		t.Fatalf("no such tag: %v %+v", err, re)
	}
	// Unknown tag on any peer: no responders.
	if _, err := nope.Call(ctx, struct{}{}, peer.OnAny()); !errors.Is(err, peer.ErrNoResponders) {
		t.Fatalf("any unknown: %v", err)
	}
	// Unknown peer.
	if _, err := failA.Call(ctx, 1, peer.OnPeer("00000000-0000-0000-0000-000000000000")); !errors.Is(err, peer.ErrNoResponders) {
		t.Fatalf("unknown peer: %v", err)
	}

	// Timeout: bounded by the call, matches ErrTimeout and DeadlineExceeded.
	slowA, _ := peer.Stub[struct{}, int](a, "slow")
	_, err = slowA.Call(ctx, struct{}{}, peer.OnPeer(b.ID()), peer.Timeout(200*time.Millisecond))
	if !errors.Is(err, peer.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timeout: %v", err)
	}
	// A canceled ctx ends the call too.
	cctx, cancel := context.WithCancel(ctx)
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	if _, err := slowA.Call(cctx, struct{}{}, peer.OnAny()); err == nil {
		t.Fatal("canceled call returned no error")
	}

	// Bad arguments: a typed bad-request error.
	_, err = a.Call(ctx, "fail", []byte(`"not a number"`), peer.OnPeer(b.ID()))
	if !errors.Is(err, peer.ErrBadRequest) {
		t.Fatalf("bad request: %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestLocalPassThroughAndDefaultTag(t *testing.T) {
	n := single(t)
	p := newPeer(t, n)
	f, err := peer.Register(p, "", multiply)
	if err != nil {
		t.Fatal(err)
	}
	if f.Tag() != "github.com/peerbus/peerbus/peer_test.multiply" {
		t.Fatalf("default tag %q", f.Tag())
	}
	v, err := f.Call(context.Background(), MulArgs{6, 7})
	if err != nil || v != 42 {
		t.Fatalf("local: %v %v", v, err)
	}
	// Same function on the bus under its default tag.
	v, err = f.Call(context.Background(), MulArgs{6, 7}, peer.OnPeer(p.ID()))
	if err != nil || v != 42 {
		t.Fatalf("self remote: %v %v", v, err)
	}
	// Two functions with different names share one tag across "code bases".
	q := newPeer(t, n)
	renamed := func(ctx context.Context, in MulArgs) (int, error) { return in.A * in.B, nil }
	if _, err := peer.Register(q, "MyTaggedFunction", renamed); err != nil {
		t.Fatal(err)
	}
	g, _ := peer.Register(p, "MyTaggedFunction", multiply)
	if v, err := g.Call(context.Background(), MulArgs{2, 3}, peer.OnPeer(q.ID())); err != nil || v != 6 {
		t.Fatalf("shared tag: %v %v", v, err)
	}
	if _, err := peer.Register(p, "MyTaggedFunction", multiply); !errors.Is(err, peer.ErrDuplicateTag) {
		t.Fatalf("duplicate: %v", err)
	}
	for _, bad := range []string{"", "a..b", "a b", "a.*", ">"} {
		if _, err := peer.Register(p, bad, multiply); bad != "" && !errors.Is(err, peer.ErrInvalidTag) {
			t.Fatalf("tag %q: %v", bad, err)
		}
	}
	// Untyped entry point with raw JSON.
	out, err := p.Call(context.Background(), "MyTaggedFunction", []byte(`{"A":5,"B":10}`), peer.OnAny())
	if err != nil || string(out) != "50" {
		t.Fatalf("raw: %s %v", out, err)
	}
}

func TestPayloadLimits(t *testing.T) {
	n := single(t)
	p := newPeer(t, n)
	echo, err := peer.Register(p, "echo", func(_ context.Context, s string) (string, error) { return s, nil })
	if err != nil {
		t.Fatal(err)
	}
	double, _ := peer.Register(p, "double", func(_ context.Context, s string) (string, error) { return s + s, nil })
	max := int(n.Conn().MaxPayload())
	// Just under the limit works, and comes back whole.
	big := strings.Repeat("x", max-1024)
	got, err := echo.Call(context.Background(), big, peer.OnPeer(p.ID()))
	if err != nil || len(got) != len(big) {
		t.Fatalf("near-max payload: len %d err %v", len(got), err)
	}
	// Over the limit fails before sending, with a clear error.
	if _, err := echo.Call(context.Background(), strings.Repeat("x", max+1), peer.OnPeer(p.ID())); !errors.Is(err, peer.ErrPayloadTooLarge) {
		t.Fatalf("oversized args: %v", err)
	}
	// A result over the limit is a typed error, not a truncated result.
	if _, err := double.Call(context.Background(), big, peer.OnPeer(p.ID())); !errors.Is(err, peer.ErrPayloadTooLarge) {
		t.Fatalf("oversized result: %v", err)
	}
}

func TestPresenceJoinLeaveGone(t *testing.T) {
	na, nb := cluster(t)
	a := newPeer(t, na, peer.WithName("watcher"))
	var mu sync.Mutex
	var evs []peer.PresenceEvent
	watch := a.WatchPresence(func(e peer.PresenceEvent) {
		mu.Lock()
		evs = append(evs, e)
		mu.Unlock()
	})
	defer watch.Close()
	has := func(kind peer.PresenceKind, id string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range evs {
			if e.Kind == kind && e.Peer.ID == id {
				return true
			}
		}
		return false
	}
	b := newPeer(t, nb, peer.WithName("leaver"), peer.WithGroup("g"), peer.WithHub(true))
	waitFor(t, "join", func() bool { return has(peer.PeerJoined, b.ID()) })
	hubs, _ := a.Peers(context.Background(), peer.HubsOnly())
	if len(hubs) != 1 || hubs[0].ID != b.ID() || hubs[0].Group != "g" || hubs[0].Host == "" || hubs[0].Started.IsZero() {
		t.Fatalf("hubs: %+v", hubs)
	}
	b.Close()
	waitFor(t, "leave", func() bool { return has(peer.PeerLeft, b.ID()) })

	// A peer whose connection dies without a goodbye is reported gone.
	nc, err := nb.Connect()
	if err != nil {
		t.Fatal(err)
	}
	c, err := peer.New(nc, peer.WithName("crasher"), peer.WithPresence(100*time.Millisecond, 500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "join c", func() bool { return has(peer.PeerJoined, c.ID()) })
	start := time.Now()
	nc.Close() // no leave announcement gets out
	waitFor(t, "gone", func() bool { return has(peer.PeerGone, c.ID()) })
	t.Logf("gone reported %v after the connection died", time.Since(start))
	if has(peer.PeerLeft, c.ID()) {
		t.Fatal("crashed peer reported as leave")
	}
	c.Close()
	list, _ := a.Peers(context.Background())
	if len(list) != 1 || list[0].ID != a.ID() {
		t.Fatalf("peers after leave/gone: %+v", list)
	}
	// The query any NATS client can make.
	infos, err := peer.QueryPeers(context.Background(), na.Conn(), 0)
	if err != nil || len(infos) != 1 {
		t.Fatalf("query: %v %+v", err, infos)
	}
}

func TestBuiltinsAndClose(t *testing.T) {
	n := single(t)
	p, err := peer.New(n.Conn(), peer.WithName("x"), peer.WithGroup("grp"))
	if err != nil {
		t.Fatal(err)
	}
	cl := newPeer(t, n, peer.AsClient())
	out, err := cl.Call(context.Background(), "info", nil, peer.OnPeer(p.ID()))
	if err != nil {
		t.Fatal(err)
	}
	var info peer.Info
	if err := json.Unmarshal(out, &info); err != nil || info.ID != p.ID() || info.Name != "x" || info.Group != "grp" || !contains(info.Tags, "ping") {
		t.Fatalf("info: %s %v", out, err)
	}
	out, err = cl.Call(context.Background(), "ping", nil, peer.OnPeer(p.ID()))
	if err != nil || string(out) != "null" {
		t.Fatalf("ping: %s %v", out, err)
	}
	// A client peer is not listed.
	list, _ := cl.Peers(context.Background())
	for _, i := range list {
		if i.ID == cl.ID() {
			t.Fatal("client peer listed")
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
}

func TestSlowFunctionDoesNotBlockOthers(t *testing.T) {
	n := single(t)
	p := newPeer(t, n)
	block := make(chan struct{})
	defer close(block)
	started := make(chan struct{}, 8)
	slow, _ := peer.Register(p, "slow", func(ctx context.Context, _ int) (int, error) {
		started <- struct{}{}
		select {
		case <-block:
		case <-ctx.Done():
		}
		return 0, nil
	})
	fast, _ := peer.Register(p, "fast", func(_ context.Context, x int) (int, error) { return x, nil })
	for i := 0; i < 3; i++ {
		go slow.Call(context.Background(), 1, peer.OnPeer(p.ID()), peer.Timeout(20*time.Second))
		<-started
	}
	// Three functions are blocked; another call is still served at once.
	if v, err := fast.Call(context.Background(), 7, peer.OnPeer(p.ID()), peer.Timeout(5*time.Second)); err != nil || v != 7 {
		t.Fatalf("fast call behind slow ones: %v %v", v, err)
	}
}
