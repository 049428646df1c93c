package bridge

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"time"
)

// Raw path authentication. Both sides know a 32-byte session key the
// dialer chose and sent over the bus; a connection or datagram is only
// taken as the peer's once it proved it knows the key for a fresh nonce
// of this side. See docs/PROTOCOL.md, "Bridge raw paths".
const (
	roleDialer  byte = 'D'
	roleExposer byte = 'E'

	keySize   = 32
	nonceSize = 16
	idSize    = 16
	macSize   = sha256.Size

	// tcpMagic starts a TCP hello.
	tcpMagic     = "PBBT"
	tcpVersion   = 1
	tcpHelloSize = len(tcpMagic) + 2 + idSize + nonceSize
	// tcpSelect is the byte the dialer sends on the connection it uses.
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
	if len(key) != keySize {
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

// tcpProof is what the side with role proves: its knowledge of the key
// for the other side's nonce.
func (s *secret) tcpProof(role byte, theirNonce, ownNonce []byte) []byte {
	return s.mac("peerbus-bridge-tcp-v1", []byte{role}, s.id[:], theirNonce, ownNonce)
}

// handshakeTCP authenticates a raw TCP connection; both sides run it at
// once (it does not matter who connected). Each sends a hello (magic,
// version, role, session id, nonce), then a proof: the MAC of the other
// side's nonce and its own. It returns once the other side's proof is
// verified, or an error.
func handshakeTCP(c net.Conn, s *secret, deadline time.Time) error {
	if err := c.SetDeadline(deadline); err != nil {
		return err
	}
	hello := make([]byte, 0, tcpHelloSize)
	hello = append(hello, tcpMagic...)
	hello = append(hello, tcpVersion, s.role)
	hello = append(hello, s.id[:]...)
	hello = append(hello, s.nonce[:]...)
	if _, err := c.Write(hello); err != nil {
		return err
	}
	theirs := make([]byte, tcpHelloSize)
	if _, err := io.ReadFull(c, theirs); err != nil {
		return err
	}
	if string(theirs[:4]) != tcpMagic || theirs[4] != tcpVersion {
		return fmt.Errorf("%w: not a bridge hello", ErrProtocol)
	}
	if theirs[5] != s.other() || !hmac.Equal(theirs[6:6+idSize], s.id[:]) {
		return fmt.Errorf("%w: hello for another session or role", ErrProtocol)
	}
	theirNonce := theirs[6+idSize:]
	if _, err := c.Write(s.tcpProof(s.role, theirNonce, s.nonce[:])); err != nil {
		return err
	}
	proof := make([]byte, macSize)
	if _, err := io.ReadFull(c, proof); err != nil {
		return err
	}
	if !hmac.Equal(proof, s.tcpProof(s.other(), s.nonce[:], theirNonce)) {
		return fmt.Errorf("%w: bad proof", ErrProtocol)
	}
	return c.SetDeadline(time.Time{})
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
