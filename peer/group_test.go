package peer_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/peer"
)

// TestAnyCallInGroup checks group-scoped any calls: OnAny with InGroup
// runs on the peers of that group only, spread over them by the bus; an
// unknown group has no responders.
func TestAnyCallInGroup(t *testing.T) {
	na, nb := cluster(t)
	caller := newPeer(t, na, peer.AsClient())
	type member struct {
		p     *peer.Peer
		group string
	}
	var members []member
	for i, g := range []string{"g1", "g1", "g1", "g2", "g2", ""} {
		n := na
		if i%2 == 1 {
			n = nb
		}
		p := newPeer(t, n, peer.WithGroup(g))
		members = append(members, member{p, g})
		if _, err := peer.Register(p, "whoami", func(context.Context, struct{}) (string, error) { return p.ID(), nil }); err != nil {
			t.Fatal(err)
		}
	}
	groupOf := map[string]string{}
	var ids []string
	for _, m := range members {
		groupOf[m.p.ID()] = m.group
		ids = append(ids, m.p.ID())
	}
	waitPeers(t, caller, "whoami", ids...)
	whoami, err := peer.Stub[struct{}, string](caller, "whoami")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, g := range []string{"g1", "g2"} {
		want := 0
		for _, m := range members {
			if m.group == g {
				want++
			}
		}
		served := map[string]int{}
		for i := 0; i < 300 && len(served) < want; i++ {
			id, err := whoami.Call(ctx, struct{}{}, peer.OnAny(), peer.InGroup(g))
			if errors.Is(err, peer.ErrNoResponders) {
				continue // interest still crossing the route
			}
			if err != nil {
				t.Fatal(err)
			}
			if groupOf[id] != g {
				t.Fatalf("call in group %s served by %s of group %q", g, id, groupOf[id])
			}
			served[id]++
		}
		if len(served) != want {
			t.Fatalf("group %s: served by %d of its %d peers: %v", g, len(served), want, served)
		}
		// The untyped call takes the same options.
		out, err := caller.Call(ctx, "whoami", []byte("null"), peer.OnAny(), peer.InGroup(g))
		var id string
		if err == nil {
			err = peer.JSON.Unmarshal(out, &id)
		}
		if err != nil || groupOf[id] != g {
			t.Fatalf("raw call in group %s: %q %v", g, id, err)
		}
	}
	// A group nobody is in, and a tag nobody of the group serves.
	if _, err := whoami.Call(ctx, struct{}{}, peer.OnAny(), peer.InGroup("nobody")); !errors.Is(err, peer.ErrNoResponders) {
		t.Fatalf("unknown group: %v", err)
	}
	nope, _ := peer.Stub[struct{}, string](caller, "nope")
	if _, err := nope.Call(ctx, struct{}{}, peer.OnAny(), peer.InGroup("g1")); !errors.Is(err, peer.ErrNoResponders) {
		t.Fatalf("unserved tag in group: %v", err)
	}
	// The built-in tags are served in the group too.
	info, _ := peer.Stub[struct{}, peer.Info](caller, peer.TagInfo)
	if i, err := info.Call(ctx, struct{}{}, peer.OnAny(), peer.InGroup("g2")); err != nil || i.Group != "g2" {
		t.Fatalf("info in g2: %+v %v", i, err)
	}
	// InGroup needs OnAny for a call of one peer; a bad group is refused.
	for _, opts := range [][]peer.CallOption{
		{peer.InGroup("g1")},
		{peer.OnPeer(members[0].p.ID()), peer.InGroup("g1")},
		{peer.OnAny(), peer.InGroup("a.b")},
		{peer.OnAny(), peer.Timeout(-1)},
	} {
		if _, err := whoami.Call(ctx, struct{}{}, opts...); !errors.Is(err, peer.ErrInvalidOption) {
			t.Fatalf("options %v: %v", opts, err)
		}
	}
}

// TestGroupAnyWire checks the subject of a group-scoped any call, as a
// client in another language sees it.
func TestGroupAnyWire(t *testing.T) {
	n := single(t)
	p := newPeer(t, n, peer.WithGroup("ops"))
	if _, err := peer.Register(p, "app.echo", func(_ context.Context, s string) (string, error) { return s, nil }); err != nil {
		t.Fatal(err)
	}
	if got := peer.GroupAnySubject("ops", "app.echo"); got != "peerbus.gany.ops.app.echo" {
		t.Fatalf("subject %q", got)
	}
	nc := n.Conn()
	m, err := nc.Request("peerbus.gany.ops.app.echo", []byte(`"hi"`), 5e9)
	if err != nil || m.Header.Get(peer.HeaderStatus) != "ok" || string(m.Data) != `"hi"` || m.Header.Get(peer.HeaderPeer) != p.ID() {
		t.Fatalf("raw group any call: %v %+v", err, m)
	}
	// A peer of no group is not on any group subject; the group token
	// never reads as a tag.
	q := newPeer(t, n)
	if _, err := peer.Register(q, "ops.app.echo", func(_ context.Context, s string) (string, error) { return "q", nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Request("peerbus.gany._.ops.app.echo", nil, 5e9); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("no-group subject: %v", err)
	}
	m, err = nc.Request("peerbus.any.ops.app.echo", []byte(`"x"`), 5e9)
	if err != nil || string(m.Data) != `"q"` {
		t.Fatalf("any subject of the tag ops.app.echo: %v %+v", err, m)
	}
}
