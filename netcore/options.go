package netcore

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// Defaults of the pipe options.
const (
	DefaultMaxConns         = 1024
	DefaultAcceptQueue      = 16
	DefaultBacklog          = 64
	DefaultHandshakeTimeout = 10 * time.Second
)

// Options configure a pipe (Dial, DialAddr, Listen) or every pipe of a
// Daemon. DefaultOptions gives the defaults; the With* functions set
// them.
type Options struct {
	// LocalAddr is where Dial binds its socket (port 0: any port).
	LocalAddr netip.AddrPort
	// Family is the family Dial resolves host names in (AnyFamily:
	// IPv4 preferred).
	Family Family
	// TLS, if not nil, runs TLS over a TCP pipe (see WithTLS).
	TLS *tls.Config
	// Framing splits a TCP stream into messages. Default Raw().
	Framing Framing
	// MaxConns bounds the clients of a server pipe (<= 0: no limit).
	// Default DefaultMaxConns.
	MaxConns int
	// AcceptQueue is how many new clients wait for Accept (0: Accept is
	// off). Default DefaultAcceptQueue.
	AcceptQueue int
	// Backlog is how many unclaimed messages a pipe keeps. Default
	// DefaultBacklog.
	Backlog int
	// IdleTimeout closes a TCP pipe that receives nothing for this long
	// (0: never, the default).
	IdleTimeout time.Duration
	// HandshakeTimeout bounds the TLS handshake of a server's clients.
	// Default DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// Logger receives connection events. Default: discard.
	Logger *slog.Logger
	// Resolver resolves host names for Dial. Default net.DefaultResolver.
	Resolver *net.Resolver
	// DirectRecv puts a client pipe in direct receive mode (see
	// WithDirectRecv).
	DirectRecv bool
}

// DefaultOptions returns the documented defaults.
func DefaultOptions() Options {
	return Options{
		Framing:          Raw(),
		MaxConns:         DefaultMaxConns,
		AcceptQueue:      DefaultAcceptQueue,
		Backlog:          DefaultBacklog,
		HandshakeTimeout: DefaultHandshakeTimeout,
	}
}

// Option changes Options. The options of this package check their value
// and return an error wrapping ErrInvalidOption for an invalid one; Dial,
// DialAddr, Listen and Daemon.Listen return that error.
type Option func(*Options) error

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

type config struct {
	local            netip.AddrPort // Dial: source address
	family           Family
	tls              *tls.Config
	framing          Framing
	raw              bool
	maxConns         int
	acceptQueue      int
	backlog          int
	idleTimeout      time.Duration
	handshakeTimeout time.Duration
	logger           *slog.Logger
	resolver         *net.Resolver
	directRecv       bool
}

func newConfig(opts []Option) (*config, error) {
	o := DefaultOptions()
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	c := &config{
		local: o.LocalAddr, family: o.Family, tls: o.TLS, framing: o.Framing,
		maxConns: o.MaxConns, acceptQueue: o.AcceptQueue, backlog: o.Backlog,
		idleTimeout: o.IdleTimeout, handshakeTimeout: o.HandshakeTimeout,
		logger: o.Logger, resolver: o.Resolver, directRecv: o.DirectRecv,
	}
	if c.framing == nil {
		c.framing = Raw()
	}
	_, c.raw = c.framing.(rawFraming)
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// WithRoute makes Dial bind its socket to the route's local address (any
// port) and resolve host names in the route's family.
func WithRoute(r Route) Option {
	return func(o *Options) error {
		if err := r.validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidOption, err)
		}
		o.LocalAddr = netip.AddrPortFrom(r.LocalIP, 0)
		o.Family = r.family()
		return nil
	}
}

// WithLocalAddr makes Dial bind its socket to addr (port 0: any port) and
// resolve host names in addr's family.
func WithLocalAddr(addr netip.AddrPort) Option {
	return func(o *Options) error {
		if !addr.Addr().IsValid() {
			return invalid("local address %v", addr)
		}
		o.LocalAddr = addr
		o.Family = FamilyOf(addr.Addr())
		return nil
	}
}

// WithFamily makes Dial resolve host names to addresses of family f only.
func WithFamily(f Family) Option {
	return func(o *Options) error {
		if f != AnyFamily && f != IPv4 && f != IPv6 {
			return invalid("family %d", f)
		}
		o.Family = f
		return nil
	}
}

// WithResolver sets the resolver Dial uses for host names (default
// net.DefaultResolver).
func WithResolver(r *net.Resolver) Option {
	return func(o *Options) error { o.Resolver = r; return nil }
}

// WithTLS runs TLS over a TCP pipe: a client pipe verifies the server with
// cfg (certificate verification stays on unless cfg turns it off; an empty
// ServerName is taken from the host Dial was given), a server pipe needs
// cfg.Certificates or GetCertificate. The configuration is cloned; nil
// is invalid. TLS on a UDP pipe fails with ErrUnsupported.
func WithTLS(cfg *tls.Config) Option {
	return func(o *Options) error {
		if cfg == nil {
			return invalid("nil TLS configuration")
		}
		o.TLS = cfg.Clone()
		return nil
	}
}

// WithFraming sets how a TCP pipe splits its stream into messages: Raw()
// (the default), LengthPrefixed(max) or Lines(max). Both ends must agree.
func WithFraming(f Framing) Option {
	return func(o *Options) error {
		if f == nil {
			return invalid("nil framing")
		}
		o.Framing = f
		return nil
	}
}

// WithMaxConns bounds the clients a server pipe holds at once (default
// DefaultMaxConns). A TCP connection beyond the limit is closed at once; a
// UDP datagram from a new address beyond it is still delivered to the
// server's handlers and subscriptions but gets no client pipe. Either is
// counted in Stats.Rejected. n <= 0 means no limit.
func WithMaxConns(n int) Option { return func(o *Options) error { o.MaxConns = n; return nil } }

// WithAcceptQueue sets how many new clients wait for Accept (default
// DefaultAcceptQueue; negative is invalid). A client that finds the queue full is still served
// by the server's handlers and subscriptions, but Accept does not return
// it; UDP remotes that find it full get no client pipe. 0 turns Accept
// off.
func WithAcceptQueue(n int) Option {
	return func(o *Options) error {
		if n < 0 {
			return invalid("accept queue %d is negative", n)
		}
		o.AcceptQueue = n
		return nil
	}
}

// WithBacklog sets how many unclaimed messages a pipe keeps (default
// DefaultBacklog): messages that matched no handler and no subscription
// when they arrived. A later Subscribe on the pipe takes the matching ones
// first, so a client pipe returned by Accept loses nothing that arrived
// before its caller subscribed. When full, the oldest is dropped and
// counted in Stats.BacklogDropped. 0 keeps none; negative is invalid. A server and each of its
// clients have a backlog of this size.
func WithBacklog(n int) Option {
	return func(o *Options) error {
		if n < 0 {
			return invalid("backlog %d is negative", n)
		}
		o.Backlog = n
		return nil
	}
}

// WithIdleTimeout closes a TCP pipe (client or a server's client) that
// receives nothing for d. It frees the slots of half-open connections.
// Zero, the default, means no timeout; negative is invalid.
func WithIdleTimeout(d time.Duration) Option {
	return func(o *Options) error {
		if d < 0 {
			return invalid("idle timeout %v is negative", d)
		}
		o.IdleTimeout = d
		return nil
	}
}

// WithHandshakeTimeout bounds the TLS handshake of a server's clients
// (default DefaultHandshakeTimeout); a client that does not finish in time
// is dropped.
func WithHandshakeTimeout(d time.Duration) Option {
	return func(o *Options) error {
		if d <= 0 {
			return invalid("handshake timeout %v must be positive", d)
		}
		o.HandshakeTimeout = d
		return nil
	}
}

// WithLogger sets the logger for connection events and dropped clients
// (default: discard).
func WithLogger(l *slog.Logger) Option { return func(o *Options) error { o.Logger = l; return nil } }

// WithDirectRecv puts a client pipe (Dial) in direct receive mode: it has
// no reader goroutine, and the socket is read by Recv calls themselves,
// one at a time, each message being dispatched as usual (to handlers, to
// every matching subscription, or to the backlog) by the call that read
// it. This saves a goroutine hand-off per received message, which can
// make a request/response round trip markedly faster.
//
// The price: nothing is read while no Recv waits. TCP flow control then
// holds the peer back, datagrams wait in the socket buffer (and may
// overflow it), handlers run only inside Recv calls and must not call Recv
// on the pipe themselves, and a peer's close is noticed (Done, Err,
// OnClose) by the next Recv. Servers and their clients ignore the option.
//
// Without the option a client pipe gets most of the gain for
// request/response traffic anyway: it lends reading to its Recv calls
// while they keep coming and it has no handlers, and its reader goroutine
// takes reading back within a millisecond (see the package
// documentation).
func WithDirectRecv() Option { return func(o *Options) error { o.DirectRecv = true; return nil } }
