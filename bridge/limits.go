package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/time/rate"
)

// ErrLimit reports an offer or a control request beyond one of the
// exposer's Limits: the dialer gets it when the exposer refuses its
// session with the answer code "limit".
var ErrLimit = errors.New("bridge: limit exceeded")

// Limits bound what dialers can make an exposing peer do. An offer or a
// control request beyond a limit is refused (ErrLimit on the dialer's
// side); candidates an exposer must not connect to are left out of the
// session. Set them with WithLimits on Expose.
type Limits struct {
	// MaxCandidates is the most TCP and the most UDP candidates an offer
	// may carry (each list on its own). Default 16.
	MaxCandidates int
	// MaxStrategyTimeout is the longest timeout_ms a control request may
	// ask for: how long the exposer connects, probes or punches for one
	// strategy. Default 10 s.
	MaxStrategyTimeout time.Duration
	// MaxSetup is the longest setup_ms an offer may ask for, and so the
	// longest a session can stay without a path (the exposer drops it
	// after setup_ms plus setupGrace, at most MaxSetup). Default 30 s.
	MaxSetup time.Duration
	// MaxPending is the most sessions without a path the service holds
	// at once (each holds a connection to the target and path sockets).
	// Default 128.
	MaxPending int
	// MaxPendingPerPeer is the most sessions without a path one dialing
	// peer may hold at once. The peer is the caller id of the open call
	// (see peer.CallerFrom); it is the bus's authenticated identity only
	// where the bus authorizes peer ids. Default 64.
	MaxPendingPerPeer int
	// MaxSessions is the most sessions of the service, with or without a
	// path. Default 1024.
	MaxSessions int
	// AttemptRate is the most TCP connection attempts and UDP probes per
	// second the service sends to dialers' candidates (reverse and hole
	// punching), over all its sessions. Default 200.
	AttemptRate int
	// Networks, when not empty, is the allow list of networks the
	// exposer connects or sends probes to for reverse and hole-punching:
	// dialer candidates outside every prefix are left out. Loopback and
	// link-local candidates are used only when both peers are on the
	// same host, whatever the list (see sameHost).
	Networks []netip.Prefix
}

// setupGrace is what an exposer adds to a dialer's setup_ms before it
// drops a session without a path: the bus's round trips.
const setupGrace = 2 * time.Second

// DefaultLimits returns the limits Expose uses without WithLimits.
func DefaultLimits() Limits {
	return Limits{
		MaxCandidates:      16,
		MaxStrategyTimeout: 10 * time.Second,
		MaxSetup:           30 * time.Second,
		MaxPending:         128,
		MaxPendingPerPeer:  64,
		MaxSessions:        1024,
		AttemptRate:        200,
	}
}

// Validate checks l; the error wraps ErrInvalidOption.
func (l Limits) Validate() error {
	bad := func(f string, args ...any) error {
		return invalid("limits: "+f, args...)
	}
	switch {
	case l.MaxCandidates < 1 || l.MaxCandidates > 256:
		return bad("MaxCandidates %d (want 1 to 256)", l.MaxCandidates)
	case l.MaxStrategyTimeout < 100*time.Millisecond || l.MaxStrategyTimeout > 2*time.Minute:
		return bad("MaxStrategyTimeout %v (want 100ms to 2m)", l.MaxStrategyTimeout)
	case l.MaxSetup < time.Second || l.MaxSetup > 5*time.Minute:
		return bad("MaxSetup %v (want 1s to 5m)", l.MaxSetup)
	case l.MaxPending < 1:
		return bad("MaxPending %d (want at least 1)", l.MaxPending)
	case l.MaxPendingPerPeer < 1 || l.MaxPendingPerPeer > l.MaxPending:
		return bad("MaxPendingPerPeer %d (want 1 to MaxPending, %d)", l.MaxPendingPerPeer, l.MaxPending)
	case l.MaxSessions < l.MaxPending:
		return bad("MaxSessions %d (want at least MaxPending, %d)", l.MaxSessions, l.MaxPending)
	case l.AttemptRate < 1 || l.AttemptRate > 100000:
		return bad("AttemptRate %d (want 1 to 100000)", l.AttemptRate)
	}
	for _, p := range l.Networks {
		if !p.IsValid() {
			return bad("network %v", p)
		}
	}
	return nil
}

// WithLimits sets the limits of an exposed service (default
// DefaultLimits()); it returns an error wrapping ErrInvalidOption when
// they do not validate.
func WithLimits(l Limits) ExposeOption {
	return exposeOption(func(o *ExposeOptions) error {
		if err := l.Validate(); err != nil {
			return err
		}
		l.Networks = append([]netip.Prefix(nil), l.Networks...)
		o.Limits = l
		return nil
	})
}

// newAttemptLimiter is the service-wide limiter of connection attempts
// and probes.
func newAttemptLimiter(l Limits) *rate.Limiter {
	return rate.NewLimiter(rate.Limit(l.AttemptRate), max(1, l.AttemptRate/10))
}

// usableCandidates keeps the other side's candidates this side may
// connect or send to: valid unicast IPv4 addresses with a port, of a
// known kind; loopback and link-local ones only when sameHost; others
// only inside nets when nets is not empty. At most limit are kept.
func usableCandidates(cands []Candidate, sameHost bool, nets []netip.Prefix, limit int) []Candidate {
	var out []Candidate
	for _, c := range cands {
		if len(out) >= limit {
			break
		}
		if candidateProblem(c, sameHost, nets) == "" {
			out = append(out, c)
		}
	}
	return out
}

// candidateProblem says why c may not be used, or "".
func candidateProblem(c Candidate, sameHost bool, nets []netip.Prefix) string {
	ip := c.Addr.Addr()
	switch {
	case c.Kind != KindHost && c.Kind != KindMapped:
		return "unknown kind"
	case !c.Addr.IsValid() || !ip.Is4() || c.Addr.Port() == 0:
		return "not an IPv4 address with a port"
	case ip.IsUnspecified() || ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) ||
		netip.MustParsePrefix("0.0.0.0/8").Contains(ip) || netip.MustParsePrefix("240.0.0.0/4").Contains(ip):
		return "not a unicast address"
	case ip.IsLoopback() || ip.IsLinkLocalUnicast():
		if !sameHost {
			return "loopback or link-local, and the peers are not on one host"
		}
		return ""
	}
	if len(nets) == 0 {
		return ""
	}
	for _, p := range nets {
		if p.Contains(ip) {
			return ""
		}
	}
	return "outside the allowed networks"
}

// checkOffer refuses an offer beyond the service's limits.
func (s *Service) checkOffer(o *offer) error {
	lim := s.cfg.limits
	switch {
	case len(o.TCP) > lim.MaxCandidates || len(o.UDP) > lim.MaxCandidates:
		return fmt.Errorf("%w: %d TCP and %d UDP candidates, at most %d each (MaxCandidates)", ErrLimit, len(o.TCP), len(o.UDP), lim.MaxCandidates)
	case o.SetupMS < 0 || time.Duration(o.SetupMS)*time.Millisecond > lim.MaxSetup:
		return fmt.Errorf("%w: setup_ms %d beyond %v (MaxSetup)", ErrLimit, o.SetupMS, lim.MaxSetup)
	case len(o.Strategies) > len(DefaultStrategies):
		return fmt.Errorf("%w: %d strategies", ErrLimit, len(o.Strategies))
	}
	return nil
}

// release gives back the session's pending reservation, once.
func (ss *exSession) release() {
	if ss.released.Swap(true) {
		return
	}
	ss.svc.unreserve(ss.caller)
}

// unreserve gives back a pending reservation of caller.
func (s *Service) unreserve(caller string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending--
	if s.pendingBy[caller]--; s.pendingBy[caller] <= 0 {
		delete(s.pendingBy, caller)
	}
}

// attempt waits for the service's attempt limiter before a connection
// attempt; it fails when ctx ends first.
func (ss *exSession) attempt(ctx context.Context) error {
	if err := ss.svc.attempts.Wait(ctx); err != nil {
		return err
	}
	ss.svc.nAttempt.Add(1)
	return nil
}

// allowProbe reports whether one more probe may be sent now.
func (ss *exSession) allowProbe() bool {
	if !ss.svc.attempts.Allow() {
		return false
	}
	ss.svc.nAttempt.Add(1)
	return true
}
