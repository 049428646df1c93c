package peer_test

import (
	"errors"
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
