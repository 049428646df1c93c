package identity_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"

	"github.com/peerbus/peerbus/identity"
)

func TestWriteLoad(t *testing.T) {
	id, err := identity.New()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "me.nk")
	if err := id.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	back, err := identity.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.PublicKey() != id.PublicKey() || back.PeerID() != id.PeerID() {
		t.Fatalf("loaded %s/%s, wrote %s/%s", back.PublicKey(), back.PeerID(), id.PublicKey(), id.PeerID())
	}
	if err := id.WriteFile(path); err == nil {
		t.Fatal("WriteFile replaced an existing file")
	}
}

func TestPeerIDIsUUIDv5OfKey(t *testing.T) {
	id, err := identity.New()
	if err != nil {
		t.Fatal(err)
	}
	want := uuid.NewSHA1(uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://github.com/peerbus/peerbus/identity")), []byte(id.PublicKey()))
	if id.PeerID() != want.String() {
		t.Fatalf("peer id %s, want %s", id.PeerID(), want)
	}
	got, err := identity.PeerID(id.PublicKey())
	if err != nil || got != id.PeerID() {
		t.Fatalf("PeerID(public key) = %q, %v", got, err)
	}
	other, _ := identity.New()
	if other.PeerID() == id.PeerID() {
		t.Fatal("two keys gave one id")
	}
	if identity.InboxPrefix(id.PeerID()) != "_INBOX."+id.PeerID() || id.InboxPrefix() != identity.InboxPrefix(id.PeerID()) {
		t.Fatalf("inbox prefix %q", id.InboxPrefix())
	}
}

func TestBadSeeds(t *testing.T) {
	id, _ := identity.New()
	for name, in := range map[string]string{
		"empty":      "",
		"junk":       "hello",
		"public key": id.PublicKey(),
	} {
		if _, err := identity.FromSeed([]byte(in)); !errors.Is(err, identity.ErrIdentity) {
			t.Errorf("%s: err %v, want ErrIdentity", name, err)
		}
	}
	if _, err := identity.PeerID("Uxyz"); !errors.Is(err, identity.ErrIdentity) {
		t.Errorf("PeerID of a bad key: %v", err)
	}
	if _, err := identity.Load(filepath.Join(t.TempDir(), "none")); !errors.Is(err, identity.ErrIdentity) {
		t.Errorf("Load of a missing file: %v", err)
	}
}

func FuzzFromSeed(f *testing.F) {
	id, _ := identity.New()
	seed, _ := id.Seed()
	f.Add(seed)
	f.Add([]byte("-----BEGIN USER NKEY SEED-----\n" + string(seed) + "\n------END USER NKEY SEED------\n"))
	f.Add([]byte(id.PublicKey()))
	f.Fuzz(func(t *testing.T, b []byte) {
		i, err := identity.FromSeed(b)
		if err != nil {
			if !errors.Is(err, identity.ErrIdentity) {
				t.Fatalf("error %v does not wrap ErrIdentity", err)
			}
			return
		}
		if want, _ := identity.PeerID(i.PublicKey()); want != i.PeerID() {
			t.Fatal("id not bound to the key")
		}
	})
}
