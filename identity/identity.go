// Package identity holds a peer's key pair: a NATS user nkey (ed25519)
// kept in a seed file, and the peer id it gives.
//
// The peer id of an identity is the UUID version 5 of its public key in
// the namespace Namespace, so that anyone holding the public key works
// out the id and no other key gives it. A node enforcing a policy
// (package policy) lets a connection that authenticated with the key use
// only the subjects of that id, so no other connection can claim it.
//
// A connection made with ConnectOptions signs the server's nonce with
// the key and takes its reply inboxes under InboxPrefix(id), the only
// inboxes its permissions let it subscribe.
package identity

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Namespace is the UUID namespace of peer ids derived from public keys:
// the version 5 UUID of the URL
// "https://github.com/peerbus/peerbus/identity" in the URL namespace.
var Namespace = uuid.MustParse("71ce02e4-dcea-515a-839e-9c100030abb6")

// InboxRoot is the first token of every reply inbox.
const InboxRoot = "_INBOX"

// ErrIdentity reports a seed or a public key that cannot be used, or a
// seed file that cannot be read or written.
var ErrIdentity = errors.New("identity: bad identity")

// Identity is a user key pair. Its methods are safe for concurrent use.
type Identity struct {
	kp  nkeys.KeyPair
	pub string
	id  string
}

// New makes a new identity with a random key.
func New() (*Identity, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIdentity, err)
	}
	return fromKeyPair(kp)
}

// FromSeed returns the identity of a user seed ("SU..."), given bare or
// in a decorated credentials file.
func FromSeed(seed []byte) (*Identity, error) {
	kp, err := nkeys.ParseDecoratedNKey(bytes.TrimSpace(seed))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIdentity, err)
	}
	if _, err := kp.Seed(); err != nil {
		return nil, fmt.Errorf("%w: a public key, not a seed", ErrIdentity)
	}
	return fromKeyPair(kp)
}

func fromKeyPair(kp nkeys.KeyPair) (*Identity, error) {
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIdentity, err)
	}
	if !nkeys.IsValidPublicUserKey(pub) {
		return nil, fmt.Errorf("%w: %s is not a user key (want a seed starting with SU)", ErrIdentity, pub)
	}
	id, _ := PeerID(pub)
	return &Identity{kp: kp, pub: pub, id: id}, nil
}

// Load reads the seed file at path (see FromSeed).
func Load(path string) (*Identity, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIdentity, err) // matches fs.ErrNotExist...
	}
	i, err := FromSeed(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrIdentity, path, errors.Unwrap(err))
	}
	return i, nil
}

// WriteFile writes the seed to a new file at path, readable and
// writable by its owner only (mode 0600). It refuses to replace an
// existing file.
func (i *Identity) WriteFile(path string) error {
	seed, err := i.kp.Seed()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrIdentity, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrIdentity, err)
	}
	_, err = fmt.Fprintf(f, "%s\n", seed)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("%w: write %s: %v", ErrIdentity, path, err)
	}
	return nil
}

// PublicKey returns the public user key ("U...").
func (i *Identity) PublicKey() string { return i.pub }

// PeerID returns the peer id the key gives (see PeerID).
func (i *Identity) PeerID() string { return i.id }

// Seed returns the seed ("SU..."). Keep it secret.
func (i *Identity) Seed() ([]byte, error) { return i.kp.Seed() }

// Sign signs nonce with the key (what NATS nkey authentication needs).
func (i *Identity) Sign(nonce []byte) ([]byte, error) { return i.kp.Sign(nonce) }

// InboxPrefix returns the prefix of the identity's reply inboxes.
func (i *Identity) InboxPrefix() string { return InboxPrefix(i.id) }

// ConnectOptions returns the NATS options a connection of the identity
// needs: nkey authentication with the key, and reply inboxes under
// InboxPrefix.
func (i *Identity) ConnectOptions() []nats.Option {
	return []nats.Option{
		nats.Nkey(i.pub, i.kp.Sign),
		nats.CustomInboxPrefix(i.InboxPrefix()),
	}
}

// PeerID returns the peer id of a public user key: the version 5 UUID
// of the key in Namespace.
func PeerID(publicKey string) (string, error) {
	if !nkeys.IsValidPublicUserKey(publicKey) {
		return "", fmt.Errorf("%w: %q is not a public user nkey", ErrIdentity, publicKey)
	}
	return uuid.NewSHA1(Namespace, []byte(publicKey)).String(), nil
}

// InboxPrefix returns the prefix of the reply inboxes of peer id:
// "_INBOX.<id>". A node enforcing a policy lets a connection subscribe
// only inboxes under its own prefix.
func InboxPrefix(id string) string { return InboxRoot + "." + id }

// IsPublicKey reports whether s is a public user nkey.
func IsPublicKey(s string) bool { return nkeys.IsValidPublicUserKey(strings.TrimSpace(s)) }
