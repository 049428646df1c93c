package peer_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/identity"
	"github.com/peerbus/peerbus/peer"
)

func TestIdentityGivesPeerID(t *testing.T) {
	n := single(t)
	id, err := identity.New()
	if err != nil {
		t.Fatal(err)
	}
	// Without the identity's inbox prefix the peer is refused.
	if _, err := peer.New(n.Conn(), peer.WithIdentity(id)); !errors.Is(err, peer.ErrInvalidOption) {
		t.Fatalf("identity on a plain connection: %v", err)
	}
	nc, err := n.Connect(nats.CustomInboxPrefix(id.InboxPrefix()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := peer.New(nc, peer.WithIdentity(id), peer.WithID("someone-else")); !errors.Is(err, peer.ErrInvalidOption) {
		t.Fatalf("identity with another id: %v", err)
	}
	p, err := peer.New(nc, peer.WithIdentity(id))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if p.ID() != id.PeerID() {
		t.Fatalf("peer id %s, identity gives %s", p.ID(), id.PeerID())
	}
}

// identityPeer starts a peer with a new identity on n.
func identityPeer(t *testing.T, n interface {
	Connect(...nats.Option) (*nats.Conn, error)
}, opts ...peer.Option) *peer.Peer {
	t.Helper()
	id, err := identity.New()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := n.Connect(nats.CustomInboxPrefix(id.InboxPrefix()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	p, err := peer.New(nc, append([]peer.Option{peer.WithIdentity(id)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// A caller with an identity asks for bound replies: the responder
// answers on "<reply>.<its id>", and a call to one peer takes the reply
// of that peer only. Here (no policy binds the subjects) another
// connection that reads alice's requests answers first, in its own name
// and then unbound; bob still gets alice's result.
func TestBoundReplies(t *testing.T) {
	n := single(t)
	alice, bob := identityPeer(t, n), identityPeer(t, n, peer.AsClient())
	answered := make(chan struct{})
	if _, err := peer.Register(alice, "calc.add", func(ctx context.Context, in [2]int) (int, error) {
		select {
		case <-answered:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		return in[0] + in[1], nil
	}); err != nil {
		t.Fatal(err)
	}
	spy, err := n.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(spy.Close)
	replies := make(chan string, 1)
	if _, err := spy.Subscribe(peer.CallSubject(alice.ID(), "calc.add"), func(m *nats.Msg) {
		replies <- m.Reply
		_ = spy.Publish(peer.ReplySubject(m.Reply, "mallory"), []byte("666"))
		if err := spy.Flush(); err == nil {
			close(answered)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	out, err := bob.Call(context.Background(), "calc.add", []byte("[2,3]"), peer.OnPeer(alice.ID()))
	if err != nil || string(out) != "5" {
		t.Fatalf("bob's call of alice: %q, %v; want alice's 5", out, err)
	}
	reply := <-replies
	if !strings.Contains(reply, "."+peer.BoundReplyMark) {
		t.Fatalf("request reply subject %q, want a bound reply subject", reply)
	}
	if id, ok := peer.BoundResponder(peer.ReplySubject(reply, alice.ID())); !ok || id != alice.ID() {
		t.Fatalf("BoundResponder: %q, %v", id, ok)
	}
	if r := peer.ReplySubject("_INBOX.x.pbc-1", alice.ID()); r != "_INBOX.x.pbc-1" {
		t.Fatalf("ReplySubject of a compact reply: %q", r)
	}
	if _, ok := peer.BoundResponder("_INBOX.x.pbb-1"); ok {
		t.Fatal("BoundResponder of an unbound subject")
	}
}
