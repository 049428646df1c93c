package bridge

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// Session credentials. Raw TCP paths are TLS (secure.go). Raw UDP paths
// authenticate their control packets with a 32-byte session key the
// dialer chose and sent in the offer of a UDP service; a datagram is
// only taken as the peer's once it proved it knows the key for a fresh
// nonce of this side. See docs/PROTOCOL.md, "Bridge raw paths".
const (
	roleDialer  byte = 'D'
	roleExposer byte = 'E'

	keySize   = 32
	nonceSize = 16
	idSize    = 16
	macSize   = sha256.Size

	// tcpSelect is the byte the dialer sends, inside TLS, on the raw TCP
	// connection it uses.
	tcpSelect byte = 1
)

// secret is one side's view of a session's credentials.
type secret struct {
	id    [idSize]byte
	key   []byte
	role  byte // this side's role
	nonce [nonceSize]byte
}

func (s *secret) idHex() string { return hex.EncodeToString(s.id[:]) }

func (s *secret) other() byte {
	if s.role == roleDialer {
		return roleExposer
	}
	return roleDialer
}

// newSecret makes the dialer's secret: a random session id and key.
func newSecret() (*secret, error) {
	s := &secret{role: roleDialer, key: make([]byte, keySize)}
	if _, err := rand.Read(s.id[:]); err != nil {
		return nil, err
	}
	if _, err := rand.Read(s.key); err != nil {
		return nil, err
	}
	if _, err := rand.Read(s.nonce[:]); err != nil {
		return nil, err
	}
	return s, nil
}

// exposerSecret makes the exposer's secret from the dialer's offer.
func exposerSecret(idHex string, key []byte) (*secret, error) {
	s := &secret{role: roleExposer}
	id, err := hex.DecodeString(idHex)
	if err != nil || len(id) != idSize {
		return nil, fmt.Errorf("%w: session id %q", ErrProtocol, idHex)
	}
	if len(key) != keySize && len(key) != 0 {
		return nil, fmt.Errorf("%w: session key of %d bytes", ErrProtocol, len(key))
	}
	copy(s.id[:], id)
	s.key = append([]byte(nil), key...)
	if _, err := rand.Read(s.nonce[:]); err != nil {
		return nil, err
	}
	return s, nil
}

// mac is HMAC-SHA256 of the key over label and parts.
func (s *secret) mac(label string, parts ...[]byte) []byte {
	h := hmac.New(sha256.New, s.key)
	h.Write([]byte(label))
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}

// UDP packets of a raw path. Byte 0 is the type. Data packets carry the
// datagram after it; control packets have the fixed layout
//
//	type(1) role(1) session(16) nonce(16) peer-nonce(16) mac(32)
//
// where mac = HMAC-SHA256(key, "peerbus-bridge-udp-v1" || the first 50
// bytes).
const (
	udpData      byte = 0
	udpProbe     byte = 1
	udpAck       byte = 2
	udpSelect    byte = 3
	udpSelectAck byte = 4
	udpClose     byte = 5
	udpKeepalive byte = 6

	udpCtlBody = 2 + idSize + 2*nonceSize
	udpCtlSize = udpCtlBody + macSize
)

// udpCtl is a decoded UDP control packet.
type udpCtl struct {
	typ       byte
	role      byte
	nonce     [nonceSize]byte
	peerNonce [nonceSize]byte
}

// appendUDPCtl encodes a control packet of this side with the other
// side's nonce (zero when unknown).
func (s *secret) appendUDPCtl(b []byte, typ byte, peerNonce []byte) []byte {
	start := len(b)
	b = append(b, typ, s.role)
	b = append(b, s.id[:]...)
	b = append(b, s.nonce[:]...)
	var pn [nonceSize]byte
	copy(pn[:], peerNonce)
	b = append(b, pn[:]...)
	return append(b, s.mac("peerbus-bridge-udp-v1", b[start:])...)
}

// parseUDPCtl verifies a control packet from the other side.
func (s *secret) parseUDPCtl(b []byte) (udpCtl, bool) {
	if len(b) != udpCtlSize || b[0] < udpProbe || b[0] > udpClose {
		return udpCtl{}, false
	}
	if b[1] != s.other() || !hmac.Equal(b[2:2+idSize], s.id[:]) {
		return udpCtl{}, false
	}
	if !hmac.Equal(b[udpCtlBody:], s.mac("peerbus-bridge-udp-v1", b[:udpCtlBody])) {
		return udpCtl{}, false
	}
	c := udpCtl{typ: b[0], role: b[1]}
	copy(c.nonce[:], b[2+idSize:])
	copy(c.peerNonce[:], b[2+idSize+nonceSize:])
	return c, true
}
