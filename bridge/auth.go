package bridge

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
)

// Session ids and nonces. Raw TCP paths are TLS 1.3 (secure.go), raw
// UDP paths DTLS 1.2 (secureudp.go), both authenticated by the session
// certificates whose fingerprints travel in the offer and the answer. No
// key travels on the bus. Before the DTLS handshake, each side finds
// addresses that reach the other with probe packets that carry only the
// session id and both nonces (all of which are in the offer and the
// answer): they are reachability hints, not proofs, and nothing is sent
// to the service or chosen as the path because of them. See
// docs/PROTOCOL.md, "Bridge raw paths".
const (
	roleDialer  byte = 'D'
	roleExposer byte = 'E'

	nonceSize = 16
	idSize    = 16

	// tcpSelect is the byte the dialer sends, inside TLS, on the raw TCP
	// connection it uses, followed by the strategy's code (strategyCode).
	tcpSelect byte = 1
)

// strategyCode is the byte after a select (TCP and UDP) that names the
// strategy the dialer attributes the path to, so that both sides report
// the same; 0 for none.
func strategyCode(st Strategy) byte {
	switch st {
	case Direct:
		return 1
	case Reverse:
		return 2
	case PunchUDP:
		return 3
	case PunchTCP:
		return 4
	}
	return 0
}

// codeStrategy is the raw-path strategy of a select's code.
func codeStrategy(b byte) (Strategy, bool) {
	switch b {
	case 1:
		return Direct, true
	case 2:
		return Reverse, true
	case 3:
		return PunchUDP, true
	case 4:
		return PunchTCP, true
	}
	return "", false
}

// secret is one side's view of a session's id and nonces.
type secret struct {
	id    [idSize]byte
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

// newSecret makes the dialer's secret: a random session id and nonce.
func newSecret() (*secret, error) {
	s := &secret{role: roleDialer}
	if _, err := rand.Read(s.id[:]); err != nil {
		return nil, err
	}
	if _, err := rand.Read(s.nonce[:]); err != nil {
		return nil, err
	}
	return s, nil
}

// exposerSecret makes the exposer's secret for the dialer's session id.
func exposerSecret(idHex string) (*secret, error) {
	s := &secret{role: roleExposer}
	id, err := hex.DecodeString(idHex)
	if err != nil || len(id) != idSize {
		return nil, fmt.Errorf("%w: session id %q", ErrProtocol, idHex)
	}
	copy(s.id[:], id)
	if _, err := rand.Read(s.nonce[:]); err != nil {
		return nil, err
	}
	return s, nil
}

// UDP packets on a raw path's socket. A probe or an ack, in clear, has
// the fixed layout
//
//	type(1) role(1) session(16) nonce(16) peer-nonce(16)
//
// Every other packet is a DTLS record (first byte 20 to 63, RFC 7983).
// Inside DTLS, each application-data record is one message whose first
// byte is its type (udpData to udpKeepalive) and, for data, the datagram
// after it.
const (
	udpProbe byte = 1
	udpAck   byte = 2

	udpCtlSize = 2 + idSize + 2*nonceSize

	udpData      byte = 0
	udpSelect    byte = 3
	udpSelectAck byte = 4
	udpClose     byte = 5
	udpKeepalive byte = 6
)

// appendUDPCtl encodes a probe or ack of this side, with the other
// side's nonce.
func (s *secret) appendUDPCtl(b []byte, typ byte, peerNonce []byte) []byte {
	b = append(b, typ, s.role)
	b = append(b, s.id[:]...)
	b = append(b, s.nonce[:]...)
	var pn [nonceSize]byte
	copy(pn[:], peerNonce)
	return append(b, pn[:]...)
}

// parseUDPCtl reports the type of a probe or ack of this session from
// the other side (whose nonce is peerNonce), or false.
func (s *secret) parseUDPCtl(b []byte, peerNonce []byte) (byte, bool) {
	if len(b) != udpCtlSize || (b[0] != udpProbe && b[0] != udpAck) || b[1] != s.other() {
		return 0, false
	}
	var want [udpCtlSize - 2]byte
	copy(want[:], s.id[:])
	copy(want[idSize:], peerNonce)
	copy(want[idSize+nonceSize:], s.nonce[:])
	if subtle.ConstantTimeCompare(b[2:], want[:]) != 1 {
		return 0, false
	}
	return b[0], true
}
