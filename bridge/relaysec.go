package bridge

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/flynn/noise"
)

// Relay frame protection. The offer carries the dialer's first Noise
// handshake message and the answer the exposer's reply, of the pattern
// Noise_NN_25519_AESGCM_SHA256 (github.com/flynn/noise) with the
// prologue "peerbus-bridge-relay-v2 <session>". The handshake gives each
// direction of the relay its own key. Every message on a relay subject
// is then a sealed frame:
//
//	counter(8, big-endian) || AES-256-GCM(key, nonce=counter, frame)
//
// where counter counts the sender's messages from 0. A receiver drops
// (and counts) a message that does not open, or whose counter is not
// above the last one it took: frames that third parties publish on the
// session's subjects, or replay, never reach the relay's state. See
// docs/PROTOCOL.md, "Relay frames".
var noiseSuite = noise.NewCipherSuite(noise.DH25519, noise.CipherAESGCM, noise.HashSHA256)

// sealOverhead is what sealing adds to a frame.
const sealOverhead = 8 + 16

func noisePrologue(session string) []byte {
	return []byte("peerbus-bridge-relay-v2 " + session)
}

// relayKeys are one side's ciphers of a session's relay.
type relayKeys struct {
	send, recv noise.Cipher
}

// noiseInitiator starts the dialer's handshake: the state and the
// message for the offer.
func noiseInitiator(session string) (*noise.HandshakeState, []byte, error) {
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: noiseSuite, Random: rand.Reader, Pattern: noise.HandshakeNN,
		Initiator: true, Prologue: noisePrologue(session),
	})
	if err != nil {
		return nil, nil, err
	}
	msg, _, _, err := hs.WriteMessage(nil, nil)
	if err != nil {
		return nil, nil, err
	}
	return hs, msg, nil
}

// noiseFinish completes the dialer's handshake with the answer's message.
func noiseFinish(hs *noise.HandshakeState, msg []byte) (*relayKeys, error) {
	_, toExposer, toDialer, err := hs.ReadMessage(nil, msg)
	if err != nil || toExposer == nil || toDialer == nil {
		return nil, fmt.Errorf("%w: relay handshake in the answer: %v", ErrProtocol, err)
	}
	return &relayKeys{send: toExposer.Cipher(), recv: toDialer.Cipher()}, nil
}

// noiseRespond runs the exposer's side of the handshake on the offer's
// message: its keys and the message for the answer.
func noiseRespond(session string, msg []byte) (*relayKeys, []byte, error) {
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: noiseSuite, Random: rand.Reader, Pattern: noise.HandshakeNN,
		Prologue: noisePrologue(session),
	})
	if err != nil {
		return nil, nil, err
	}
	if _, _, _, err := hs.ReadMessage(nil, msg); err != nil {
		return nil, nil, fmt.Errorf("%w: relay handshake in the offer: %v", ErrProtocol, err)
	}
	reply, toExposer, toDialer, err := hs.WriteMessage(nil, nil)
	if err != nil || toExposer == nil || toDialer == nil {
		return nil, nil, fmt.Errorf("relay handshake: %v", err)
	}
	return &relayKeys{send: toDialer.Cipher(), recv: toExposer.Cipher()}, reply, nil
}

// frameSeal seals one relay side's frames and opens the other's.
type frameSeal struct {
	keys *relayKeys

	smu  sync.Mutex // a counter is sealed and published in order
	next uint64
	sbuf []byte

	// Receive side: the NATS callback only.
	recvNext uint64
}

// seal seals frame b with the next counter and hands it to publish
// while still holding the order.
func (s *frameSeal) seal(b []byte, publish func([]byte) error) error {
	s.smu.Lock()
	defer s.smu.Unlock()
	n := s.next
	s.next++
	out := binary.BigEndian.AppendUint64(s.sbuf[:0], n)
	out = s.keys.send.Encrypt(out, n, nil, b)
	s.sbuf = out
	return publish(out)
}

// open returns the frame in a sealed message, decrypted in place (the
// result aliases b), or false for a message that does not open or comes
// again.
func (s *frameSeal) open(b []byte) ([]byte, bool) {
	if len(b) < sealOverhead {
		return nil, false
	}
	n := binary.BigEndian.Uint64(b[:8])
	if n < s.recvNext {
		return nil, false
	}
	pt, err := s.keys.recv.Decrypt(b[8:8], n, nil, b[8:])
	if err != nil {
		return nil, false
	}
	s.recvNext = n + 1
	return pt, true
}
