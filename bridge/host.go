package bridge

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"os"
	"strings"
	"sync"
	"time"
)

// Same-host detection. Loopback and link-local candidates are only used
// when both peers run on one host. A side proves that to the other with
// a host proof in its offer or answer: the current time (unix
// milliseconds, 8 bytes big-endian) followed by HMAC-SHA256, keyed with
// the host secret, of "peerbus-bridge-host-v2", the sender's role, the
// session id and the time. The host secret is the kernel's boot id
// (/proc/sys/kernel/random/boot_id on Linux), which every process of the
// host can read and no other host knows; where there is none, a random
// value of the process (then only peers of one process count as one
// host). A proof is taken only within hostProofWindow of its time (one
// host, one clock) and, at the exposer, once per session id.
const (
	hostProofLabel  = "peerbus-bridge-host-v2"
	hostProofSize   = 8 + sha256.Size
	hostProofWindow = 30 * time.Second
)

var hostSecret = sync.OnceValue(func() []byte {
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		if s := strings.TrimSpace(string(b)); len(s) >= 16 {
			return []byte(s)
		}
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
})

func hostMAC(role byte, session string, ts []byte) []byte {
	h := hmac.New(sha256.New, hostSecret())
	h.Write([]byte(hostProofLabel))
	h.Write([]byte{role})
	h.Write([]byte(session))
	h.Write(ts)
	return h.Sum(nil)
}

// hostProof is the proof of the side with role for session, now.
func hostProof(role byte, session string) []byte {
	ts := binary.BigEndian.AppendUint64(nil, uint64(time.Now().UnixMilli()))
	return append(ts, hostMAC(role, session, ts)...)
}

// checkHostProof reports whether p is a fresh proof of the side with
// role for session made on this host.
func checkHostProof(p []byte, role byte, session string) bool {
	if len(p) != hostProofSize {
		return false
	}
	at := time.UnixMilli(int64(binary.BigEndian.Uint64(p[:8])))
	if d := time.Since(at); d > hostProofWindow || d < -hostProofWindow {
		return false
	}
	return hmac.Equal(p[8:], hostMAC(role, session, p[:8]))
}

// seenSessions remembers the session ids whose host proof an exposer
// took, for hostProofWindow, so a recorded offer replayed on the bus
// does not count as one from this host again.
type seenSessions struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

// maxSeenSessions bounds seenSessions; when full, no proof is taken.
const maxSeenSessions = 1 << 14

// first records session and reports whether it was not seen within the
// window.
func (s *seenSessions) first(session string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.seen == nil {
		s.seen = map[string]time.Time{}
	}
	if len(s.seen) >= maxSeenSessions/2 {
		for k, at := range s.seen {
			if now.Sub(at) > 2*hostProofWindow {
				delete(s.seen, k)
			}
		}
	}
	if _, ok := s.seen[session]; ok || len(s.seen) >= maxSeenSessions {
		return false
	}
	s.seen[session] = now
	return true
}
