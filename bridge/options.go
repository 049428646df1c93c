package bridge

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/peerbus/peerbus/netcore/nat"
)

// Strategy is one way of connecting two peers. Dial tries the allowed
// strategies in the order of DefaultStrategies, each with its own
// timeout, and reports the one that worked as the connection's path.
type Strategy string

// The strategies, in the order they are tried.
const (
	// Direct: the dialer connects to the exposer's addresses (its
	// interface addresses and its STUN-mapped address).
	Direct Strategy = "direct"
	// Reverse: the exposer connects to the dialer's addresses.
	Reverse Strategy = "reverse"
	// PunchUDP: UDP hole punching, both sides sending probes to each
	// other's interface and STUN-mapped addresses at once. Used for UDP
	// services only: TCP services get no reliable stream over UDP.
	PunchUDP Strategy = "punch-udp"
	// PunchTCP: TCP hole punching by simultaneous open, both sides
	// connecting from the port they advertised to the other's predicted
	// external address. The prediction needs NATs that preserve ports
	// (as measured by netcore/nat) or no NAT. Used for TCP services only.
	PunchTCP Strategy = "punch-tcp"
	// Relay: the bytes (or datagrams) travel over the bus itself. It
	// always works while both peers are on the bus.
	Relay Strategy = "relay"
)

// DefaultStrategies are all strategies in the order Dial tries them.
var DefaultStrategies = []Strategy{Direct, Reverse, PunchUDP, PunchTCP, Relay}

// Default per-strategy timeouts (WithTimeout changes them).
const (
	// DefaultDirectTimeout bounds the Direct strategy; it ends early when
	// every TCP address failed.
	DefaultDirectTimeout = 2 * time.Second
	// DefaultReverseTimeout bounds the Reverse strategy.
	DefaultReverseTimeout = 2 * time.Second
	// DefaultPunchUDPTimeout bounds UDP hole punching.
	DefaultPunchUDPTimeout = 3 * time.Second
	// DefaultPunchTCPTimeout bounds TCP hole punching.
	DefaultPunchTCPTimeout = 6 * time.Second
	// DefaultRelayTimeout bounds setting up the relay (a request to the
	// exposer over the bus).
	DefaultRelayTimeout = 5 * time.Second
	// DefaultOpenTimeout bounds the open call (the exposer dials its
	// service and gathers its candidates) when ctx has no earlier
	// deadline.
	DefaultOpenTimeout = 10 * time.Second
	// DefaultUDPIdleTimeout ends a UDP service session on the exposer
	// after this long without a datagram in either direction.
	DefaultUDPIdleTimeout = 2 * time.Minute
)

// ParseStrategies parses a comma separated list of strategy names
// ("direct,relay"); "all" or "" means DefaultStrategies.
func ParseStrategies(s string) ([]Strategy, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "all" {
		return append([]Strategy(nil), DefaultStrategies...), nil
	}
	var out []Strategy
	for _, f := range strings.Split(s, ",") {
		st := Strategy(strings.TrimSpace(f))
		if !st.valid() {
			return nil, fmt.Errorf("%w: unknown strategy %q (want direct, reverse, punch-udp, punch-tcp, relay)", ErrBadTarget, f)
		}
		out = append(out, st)
	}
	return out, nil
}

func (s Strategy) valid() bool {
	switch s {
	case Direct, Reverse, PunchUDP, PunchTCP, Relay:
		return true
	}
	return false
}

// String returns the strategy's name.
func (s Strategy) String() string { return string(s) }

// Option configures Expose, Dial and DialPacket. Options that only make
// sense on one side say so and are ignored on the other.
type Option func(*config)

type config struct {
	strategies   []Strategy
	timeouts     map[Strategy]time.Duration
	openTimeout  time.Duration
	stun         nat.Config
	relay        relayConfig
	log          *slog.Logger
	noLoopback   bool
	udpIdle      time.Duration
	sessionSetup time.Duration
	onSession    func(SessionInfo)
}

func newConfig(opts []Option) *config {
	c := &config{
		strategies: DefaultStrategies,
		timeouts: map[Strategy]time.Duration{
			Direct: DefaultDirectTimeout, Reverse: DefaultReverseTimeout,
			PunchUDP: DefaultPunchUDPTimeout, PunchTCP: DefaultPunchTCPTimeout,
			Relay: DefaultRelayTimeout,
		},
		openTimeout:  DefaultOpenTimeout,
		relay:        relayConfig{window: DefaultWindow, chunk: DefaultChunkSize, keepalive: DefaultKeepAlive, queue: DefaultDatagramQueue},
		udpIdle:      DefaultUDPIdleTimeout,
		sessionSetup: DefaultSessionSetupTimeout,
	}
	for _, o := range opts {
		o(c)
	}
	if c.log == nil {
		c.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// allowed reports whether s may be tried.
func (c *config) allowed(s Strategy) bool {
	for _, x := range c.strategies {
		if x == s {
			return true
		}
	}
	return false
}

// WithStrategies restricts Dial to the given strategies (they are still
// tried in the order of DefaultStrategies). Dial side.
func WithStrategies(s ...Strategy) Option {
	return func(c *config) { c.strategies = append([]Strategy(nil), s...) }
}

// WithTimeout sets the timeout of one strategy. Dial side.
func WithTimeout(s Strategy, d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.timeouts[s] = d
		}
	}
}

// WithOpenTimeout bounds the open call to the exposing peer (default
// DefaultOpenTimeout). Dial side.
func WithOpenTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.openTimeout = d
		}
	}
}

// WithSTUN sets the STUN servers ("host:port") used to learn this side's
// external address and NAT type. There is no default: without servers no
// STUN server is contacted, and only interface addresses are offered.
// Both sides.
func WithSTUN(servers ...string) Option {
	return func(c *config) { c.stun.Servers = append([]string(nil), servers...) }
}

// WithSTUNConfig sets the whole STUN configuration (servers, timeouts,
// quorum) used for NAT classification. Both sides.
func WithSTUNConfig(cfg nat.Config) Option { return func(c *config) { c.stun = cfg } }

// WithWindow sets the receive window of relayed streams in bytes
// (default DefaultWindow). Both sides.
func WithWindow(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.relay.window = n
		}
	}
}

// WithChunkSize sets the largest data payload of one relay frame
// (default DefaultChunkSize, lowered to fit the bus max payload). Both
// sides.
func WithChunkSize(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.relay.chunk = n
		}
	}
}

// WithKeepAlive sets the relay keepalive interval (default
// DefaultKeepAlive); the other side is considered gone after DeadFactor
// intervals of silence. The dialer's value is used by both sides of a
// session.
func WithKeepAlive(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.relay.keepalive = d
		}
	}
}

// WithDatagramQueue sets how many received datagrams a relayed packet
// connection holds (default DefaultDatagramQueue). Both sides.
func WithDatagramQueue(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.relay.queue = n
		}
	}
}

// WithLogger sets the logger for session setup and path decisions.
// Default: discard. Both sides.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// WithoutLoopback leaves loopback addresses out of the candidates a side
// offers. By default they are offered, so peers on one host connect over
// loopback. Both sides.
func WithoutLoopback() Option { return func(c *config) { c.noLoopback = true } }

// WithUDPIdleTimeout ends a UDP service session after d without a
// datagram in either direction (default DefaultUDPIdleTimeout). Expose
// side, and the sessions of ForwardUDP.
func WithUDPIdleTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.udpIdle = d
		}
	}
}

// WithSessionSetupTimeout bounds the setup of each session ForwardUDP
// opens (default DefaultSessionSetupTimeout). Dial side.
func WithSessionSetupTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.sessionSetup = d
		}
	}
}

// SessionInfo describes a session of an exposed service once its path is
// chosen (see OnSession).
type SessionInfo struct {
	// Service is the service name.
	Service string
	// Session is the session id.
	Session string
	// Peer is the dialing peer's id ("" for a dialer without one).
	Peer string
	// Path is the strategy that connected the peers.
	Path Strategy
	// Remote is the dialer's address on a raw path (invalid for relay).
	Remote netip.AddrPort
}

// OnSession calls fn each time a session of the exposed service gets its
// path; fn must not block. Expose side.
func OnSession(fn func(SessionInfo)) Option { return func(c *config) { c.onSession = fn } }
