package bridge

import (
	"cmp"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"strings"
	"time"

	"github.com/peerbus/peerbus/netcore/nat"
)

// Strategy is one way of connecting two peers. Dial runs the allowed
// strategies at once (the relay last), each with its own
// timeout, and reports the one that worked as the connection's path.
type Strategy string

// The strategies, in the order of preference.
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

// DefaultStrategies are all strategies in the order of preference:
// when two paths come up at nearly the same time, the earlier one wins.
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

// Options are the settings both sides of a session have: the dialer
// (Dial, DialPacket, ForwardUDP) and the exposer (Expose). A zero field
// means its default.
type Options struct {
	// STUN configures NAT classification and the mapped address; no
	// servers (the default) means no STUN server is contacted.
	STUN nat.Config
	// Logger receives session setup and path decisions. Default: discard.
	Logger *slog.Logger
	// NoLoopback leaves loopback addresses out of the offered candidates.
	NoLoopback bool
	// Window is the receive window of relayed streams in bytes. Default
	// DefaultWindow.
	Window int
	// ChunkSize is the largest data payload of one relay frame. Default
	// DefaultChunkSize.
	ChunkSize int
	// KeepAlive is the relay keepalive interval (the dialer's value is
	// used by both sides). Default DefaultKeepAlive.
	KeepAlive time.Duration
	// DatagramQueue is how many received datagrams a relayed packet
	// connection holds. Default DefaultDatagramQueue.
	DatagramQueue int
}

// DialOptions configure Dial, DialPacket and ForwardUDP.
// DefaultDialOptions gives the defaults.
type DialOptions struct {
	Options
	// Strategies are the strategies that may be tried (in the order of
	// DefaultStrategies). Nil means all; empty means none (ErrNoPath).
	Strategies []Strategy
	// Timeouts bound each strategy. Default: the Default*Timeout
	// constants.
	Timeouts map[Strategy]time.Duration
	// OpenTimeout bounds the open call. Default DefaultOpenTimeout.
	OpenTimeout time.Duration
	// SessionSetupTimeout bounds the setup of each ForwardUDP session.
	// Default DefaultSessionSetupTimeout.
	SessionSetupTimeout time.Duration
	// UDPIdleTimeout ends a ForwardUDP session without a datagram for
	// this long. Default DefaultUDPIdleTimeout.
	UDPIdleTimeout time.Duration
}

// ExposeOptions configure Expose. DefaultExposeOptions gives the
// defaults.
type ExposeOptions struct {
	Options
	// UDPIdleTimeout ends a UDP service session without a datagram for
	// this long. Default DefaultUDPIdleTimeout.
	UDPIdleTimeout time.Duration
	// OnSession, if not nil, is called each time a session gets its
	// path; it must not block.
	OnSession func(SessionInfo)
	// Limits bound what dialers can make the exposer do. Default
	// DefaultLimits().
	Limits Limits
}

// defaultOptions are the defaults of both sides.
func defaultOptions() Options {
	return Options{
		Window: DefaultWindow, ChunkSize: DefaultChunkSize,
		KeepAlive: DefaultKeepAlive, DatagramQueue: DefaultDatagramQueue,
	}
}

// DefaultDialOptions returns the documented defaults of the dial side.
func DefaultDialOptions() DialOptions {
	return DialOptions{
		Options:    defaultOptions(),
		Strategies: append([]Strategy(nil), DefaultStrategies...),
		Timeouts: map[Strategy]time.Duration{
			Direct: DefaultDirectTimeout, Reverse: DefaultReverseTimeout,
			PunchUDP: DefaultPunchUDPTimeout, PunchTCP: DefaultPunchTCPTimeout,
			Relay: DefaultRelayTimeout,
		},
		OpenTimeout:         DefaultOpenTimeout,
		SessionSetupTimeout: DefaultSessionSetupTimeout,
		UDPIdleTimeout:      DefaultUDPIdleTimeout,
	}
}

// DefaultExposeOptions returns the documented defaults of the expose
// side.
func DefaultExposeOptions() ExposeOptions {
	return ExposeOptions{Options: defaultOptions(), UDPIdleTimeout: DefaultUDPIdleTimeout, Limits: DefaultLimits()}
}

// DialOption changes DialOptions: the options of the dial side and the
// Option values that apply to both sides. They check their value and
// return an error wrapping ErrInvalidOption for an invalid one.
type DialOption interface{ applyDial(*DialOptions) error }

// ExposeOption changes ExposeOptions: the options of the expose side and
// the Option values that apply to both sides. They check their value
// and return an error wrapping ErrInvalidOption for an invalid one.
type ExposeOption interface{ applyExpose(*ExposeOptions) error }

// Option changes the Options of both sides; it is a DialOption and an
// ExposeOption.
type Option func(*Options) error

func (o Option) applyDial(d *DialOptions) error     { return o(&d.Options) }
func (o Option) applyExpose(e *ExposeOptions) error { return o(&e.Options) }

// dialOption is a DialOption only.
type dialOption func(*DialOptions) error

func (o dialOption) applyDial(d *DialOptions) error { return o(d) }

// exposeOption is an ExposeOption only.
type exposeOption func(*ExposeOptions) error

func (o exposeOption) applyExpose(e *ExposeOptions) error { return o(e) }

// optionErr wraps a non-nil err in ErrInvalidOption.
func optionErr(err error) error {
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	return nil
}

// invalid returns an error wrapping ErrInvalidOption.
func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidOption, fmt.Sprintf(format, a...))
}

// positive checks a duration option.
func positive(what string, d time.Duration) error {
	if d <= 0 {
		return invalid("%s %v must be positive", what, d)
	}
	return nil
}

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
	limits       Limits
}

// sharedConfig fills the settings of both sides, a zero field taking
// its default.
func sharedConfig(o Options) *config {
	d := defaultOptions()
	c := &config{
		stun: o.STUN, log: o.Logger, noLoopback: o.NoLoopback,
		relay: relayConfig{
			window: cmp.Or(o.Window, d.Window), chunk: cmp.Or(o.ChunkSize, d.ChunkSize),
			keepalive: cmp.Or(o.KeepAlive, d.KeepAlive), queue: cmp.Or(o.DatagramQueue, d.DatagramQueue),
		},
		udpIdle: DefaultUDPIdleTimeout,
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c
}

// dialConfig applies opts to the dial defaults.
func dialConfig(opts []DialOption) (*config, error) {
	o := DefaultDialOptions()
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt.applyDial(&o); err != nil {
			return nil, err
		}
	}
	c := sharedConfig(o.Options)
	c.strategies = o.Strategies
	if o.Strategies == nil {
		c.strategies = DefaultStrategies
	}
	c.timeouts = DefaultDialOptions().Timeouts
	for st, d := range o.Timeouts {
		if d > 0 {
			c.timeouts[st] = d
		}
	}
	c.openTimeout = cmp.Or(o.OpenTimeout, DefaultOpenTimeout)
	c.sessionSetup = cmp.Or(o.SessionSetupTimeout, DefaultSessionSetupTimeout)
	c.udpIdle = cmp.Or(o.UDPIdleTimeout, DefaultUDPIdleTimeout)
	return c, nil
}

// exposeConfig applies opts to the expose defaults.
func exposeConfig(opts []ExposeOption) (*config, error) {
	o := DefaultExposeOptions()
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt.applyExpose(&o); err != nil {
			return nil, err
		}
	}
	c := sharedConfig(o.Options)
	c.udpIdle = cmp.Or(o.UDPIdleTimeout, DefaultUDPIdleTimeout)
	c.onSession = o.OnSession
	if err := o.Limits.Validate(); err != nil {
		return nil, err
	}
	c.limits = o.Limits
	return c, nil
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

// WithStrategies restricts Dial to the given strategies (they still run
// at once, preferred in the order of DefaultStrategies), each a known one; with none
// Dial fails with ErrNoPath. Dial side.
func WithStrategies(s ...Strategy) DialOption {
	return dialOption(func(o *DialOptions) error {
		for _, st := range s {
			if !st.valid() {
				return invalid("unknown strategy %q", st)
			}
		}
		o.Strategies = append([]Strategy{}, s...) // none: Dial fails with ErrNoPath
		return nil
	})
}

// WithTimeout sets the timeout of one strategy (positive). Dial side.
func WithTimeout(s Strategy, d time.Duration) DialOption {
	return dialOption(func(o *DialOptions) error {
		if !s.valid() {
			return invalid("unknown strategy %q", s)
		}
		if err := positive("timeout of "+string(s), d); err != nil {
			return err
		}
		o.Timeouts = maps.Clone(o.Timeouts)
		if o.Timeouts == nil {
			o.Timeouts = map[Strategy]time.Duration{}
		}
		o.Timeouts[s] = d
		return nil
	})
}

// WithOpenTimeout bounds the open call to the exposing peer (positive,
// default DefaultOpenTimeout). Dial side.
func WithOpenTimeout(d time.Duration) DialOption {
	return dialOption(func(o *DialOptions) error {
		if err := positive("open timeout", d); err != nil {
			return err
		}
		o.OpenTimeout = d
		return nil
	})
}

// WithSessionSetupTimeout bounds the setup of each session ForwardUDP
// opens (positive, default DefaultSessionSetupTimeout). Dial side.
func WithSessionSetupTimeout(d time.Duration) DialOption {
	return dialOption(func(o *DialOptions) error {
		if err := positive("session setup timeout", d); err != nil {
			return err
		}
		o.SessionSetupTimeout = d
		return nil
	})
}

// WithSTUN sets the STUN servers ("host:port") used to learn this side's
// external address and NAT type. There is no default: without servers no
// STUN server is contacted, and only interface addresses are offered.
// Both sides.
func WithSTUN(servers ...string) Option {
	return func(o *Options) error {
		for _, s := range servers {
			if s == "" {
				return invalid("empty STUN server")
			}
		}
		o.STUN.Servers = append([]string(nil), servers...)
		return nil
	}
}

// WithSTUNConfig sets the whole STUN configuration (servers, timeouts,
// quorum) used for NAT classification. Both sides.
func WithSTUNConfig(cfg nat.Config) Option {
	return func(o *Options) error { o.STUN = cfg; return nil }
}

// WithWindow sets the receive window of relayed streams in bytes
// (positive, default DefaultWindow). Both sides.
func WithWindow(n int) Option {
	return func(o *Options) error {
		if n <= 0 {
			return invalid("window %d must be positive", n)
		}
		o.Window = n
		return nil
	}
}

// WithChunkSize sets the largest data payload of one relay frame
// (positive, default DefaultChunkSize, lowered to fit the bus max
// payload). Both sides.
func WithChunkSize(n int) Option {
	return func(o *Options) error {
		if n <= 0 {
			return invalid("chunk size %d must be positive", n)
		}
		o.ChunkSize = n
		return nil
	}
}

// WithKeepAlive sets the relay keepalive interval (positive, default
// DefaultKeepAlive); the other side is considered gone after DeadFactor
// intervals of silence. The dialer's value is used by both sides of a
// session.
func WithKeepAlive(d time.Duration) Option {
	return func(o *Options) error {
		if err := positive("keepalive", d); err != nil {
			return err
		}
		o.KeepAlive = d
		return nil
	}
}

// WithDatagramQueue sets how many received datagrams a relayed packet
// connection holds (positive, default DefaultDatagramQueue). Both sides.
func WithDatagramQueue(n int) Option {
	return func(o *Options) error {
		if n <= 0 {
			return invalid("datagram queue %d must be positive", n)
		}
		o.DatagramQueue = n
		return nil
	}
}

// WithLogger sets the logger for session setup and path decisions
// (nil: discard, the default). Both sides.
func WithLogger(l *slog.Logger) Option { return func(o *Options) error { o.Logger = l; return nil } }

// WithoutLoopback leaves loopback addresses out of the candidates a side
// offers. By default they are offered, so peers on one host connect over
// loopback. Both sides.
func WithoutLoopback() Option { return func(o *Options) error { o.NoLoopback = true; return nil } }

// UDPIdleOption is the option WithUDPIdleTimeout: a DialOption (for the
// sessions of ForwardUDP) and an ExposeOption.
type UDPIdleOption time.Duration

func (d UDPIdleOption) check() error { return positive("udp idle timeout", time.Duration(d)) }

func (d UDPIdleOption) applyDial(o *DialOptions) error {
	if err := d.check(); err != nil {
		return err
	}
	o.UDPIdleTimeout = time.Duration(d)
	return nil
}

func (d UDPIdleOption) applyExpose(o *ExposeOptions) error {
	if err := d.check(); err != nil {
		return err
	}
	o.UDPIdleTimeout = time.Duration(d)
	return nil
}

// WithUDPIdleTimeout ends a UDP session after d (positive) without a
// datagram in either direction (default DefaultUDPIdleTimeout): a
// session of an exposed UDP service, or of ForwardUDP.
func WithUDPIdleTimeout(d time.Duration) UDPIdleOption { return UDPIdleOption(d) }

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
func OnSession(fn func(SessionInfo)) ExposeOption {
	return exposeOption(func(o *ExposeOptions) error { o.OnSession = fn; return nil })
}
