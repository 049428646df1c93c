package bridge

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/peerbus/peerbus/netcore/nat"
)

// Hole punching through NATs that keep state for packets they drop.
//
// A NAT built on Linux conntrack (MASQUERADE) records a packet that
// arrives on one of its external ports for which it has no mapping yet,
// even though no socket answers it. Once that record exists, the NAT
// refuses to map its own host's outgoing packets to the same port pair
// and picks another port: the first side whose probe reaches the other
// NAT too early spoils the hole. So the punch strategies first send
// opening probes with a low TTL (openTTL): they leave through this side's
// NAT, creating its mapping towards the other side, and expire before
// reaching the other NAT. Only after the opening phase (openPhase) do the
// probes travel all the way; by then both NATs expect them.
const (
	// openTTL is the TTL of opening probes: enough to pass a NAT that is
	// the first hop, too little to reach a NAT further away.
	openTTL = 2
	// openPhase is how long opening probes are sent before full ones.
	openPhase = 250 * time.Millisecond
	// openInterval is the interval between opening probes.
	openInterval = 25 * time.Millisecond
)

// openFiltering reports whether the side's NAT lets any remote endpoint
// send to an existing mapping (endpoint-independent filtering), or there
// is no NAT: only then is it worth (and harmless) sending to its mapped
// address without punching.
func (n *NATInfo) openFiltering() bool {
	return n == nil || !n.NAT || n.Filtering == nat.EndpointIndependent
}

// reachable keeps the candidates worth trying without punching: every
// candidate but the mapped ones of a side whose NAT filters.
func reachable(cands []Candidate, n *NATInfo) []Candidate {
	var out []Candidate
	for _, c := range cands {
		if c.Kind == KindMapped && !n.openFiltering() {
			continue
		}
		out = append(out, c)
	}
	return out
}

// pathSocket serializes the writes of a UDP path socket, so that opening
// probes can be sent with a low TTL.
type pathSocket struct {
	*net.UDPConn
	mu  sync.Mutex
	ttl int // the socket's normal TTL
}

func newPathSocket(c *net.UDPConn) *pathSocket {
	s := &pathSocket{UDPConn: c, ttl: 64}
	if ttl, err := getTTL(c); err == nil && ttl > 0 {
		s.ttl = ttl
	}
	return s
}

// send writes one packet with the normal TTL.
func (s *pathSocket) send(b []byte, to netip.AddrPort) { _, _ = s.sendErr(b, to) }

// sendErr is send with its result.
func (s *pathSocket) sendErr(b []byte, to netip.AddrPort) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.WriteToUDPAddrPort(b, to)
}

// sendOpening writes b to every address with the opening TTL.
func (s *pathSocket) sendOpening(b []byte, to []netip.AddrPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ttlSupported || setTTL(s.UDPConn, openTTL) != nil {
		return
	}
	for _, a := range to {
		_, _ = s.WriteToUDPAddrPort(b, a)
	}
	_ = setTTL(s.UDPConn, s.ttl)
}

// probeLoop sends pkt to cands every probeInterval until ctx ends, and
// runs each tick's extra function. With punch, candidates behind a NAT
// (mapped ones) first get opening probes for openPhase. gate, if not
// nil, is asked before each probe (the exposer's rate limit); a probe it
// refuses is not sent.
func probeLoop(ctx context.Context, s *pathSocket, pkt []byte, cands []Candidate, punch bool, gate func() bool, tick func()) {
	if gate == nil {
		gate = func() bool { return true }
	}
	var mapped []netip.AddrPort
	if punch {
		for _, c := range cands {
			if c.Kind == KindMapped {
				mapped = append(mapped, c.Addr)
			}
		}
	}
	start := time.Now()
	interval := probeInterval
	if len(mapped) > 0 {
		interval = openInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		opening := len(mapped) > 0 && time.Since(start) < openPhase
		for _, c := range cands {
			if opening && c.Kind == KindMapped {
				continue
			}
			if gate() {
				s.send(pkt, c.Addr)
			}
		}
		if opening {
			var open []netip.AddrPort
			for _, a := range mapped {
				if gate() {
					open = append(open, a)
				}
			}
			s.sendOpening(pkt, open)
		}
		if tick != nil {
			tick()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
