package netcore

import (
	"crypto/tls"
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

// Option configures a pipe (Dial, DialAddr, Listen) or every pipe of a
// Daemon.
type Option func(*config)

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

func newConfig(opts []Option) *config {
	c := &config{
		framing:          Raw(),
		maxConns:         DefaultMaxConns,
		acceptQueue:      DefaultAcceptQueue,
		backlog:          DefaultBacklog,
		handshakeTimeout: DefaultHandshakeTimeout,
	}
	for _, o := range opts {
		if o != nil {
			o(c)
		}
	}
	if c.framing == nil {
		c.framing = Raw()
	}
	_, c.raw = c.framing.(rawFraming)
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// WithRoute makes Dial bind its socket to the route's local address (any
// port) and resolve host names in the route's family.
func WithRoute(r Route) Option {
	return func(c *config) {
		c.local = netip.AddrPortFrom(r.LocalIP, 0)
		c.family = r.family()
	}
}

// WithLocalAddr makes Dial bind its socket to addr (port 0: any port) and
// resolve host names in addr's family.
func WithLocalAddr(addr netip.AddrPort) Option {
	return func(c *config) {
		c.local = addr
		c.family = FamilyOf(addr.Addr())
	}
}

// WithFamily makes Dial resolve host names to addresses of family f only.
func WithFamily(f Family) Option { return func(c *config) { c.family = f } }

// WithResolver sets the resolver Dial uses for host names (default
// net.DefaultResolver).
func WithResolver(r *net.Resolver) Option { return func(c *config) { c.resolver = r } }

// WithTLS runs TLS over a TCP pipe: a client pipe verifies the server with
// cfg (certificate verification stays on unless cfg turns it off; an empty
// ServerName is taken from the host Dial was given), a server pipe needs
// cfg.Certificates or GetCertificate. The configuration is cloned. TLS on a
// UDP pipe fails with ErrUnsupported.
func WithTLS(cfg *tls.Config) Option {
	return func(c *config) {
		if cfg != nil {
			c.tls = cfg.Clone()
		}
	}
}

// WithFraming sets how a TCP pipe splits its stream into messages: Raw()
// (the default), LengthPrefixed(max) or Lines(max). Both ends must agree.
func WithFraming(f Framing) Option { return func(c *config) { c.framing = f } }

// WithMaxConns bounds the clients a server pipe holds at once (default
// DefaultMaxConns). A TCP connection beyond the limit is closed at once; a
// UDP datagram from a new address beyond it is still delivered to the
// server's handlers and subscriptions but gets no client pipe. Either is
// counted in Stats.Rejected. n <= 0 means no limit.
func WithMaxConns(n int) Option { return func(c *config) { c.maxConns = n } }

// WithAcceptQueue sets how many new clients wait for Accept (default
// DefaultAcceptQueue). A client that finds the queue full is still served
// by the server's handlers and subscriptions, but Accept does not return
// it; UDP remotes that find it full get no client pipe. 0 turns Accept
// off.
func WithAcceptQueue(n int) Option { return func(c *config) { c.acceptQueue = max(n, 0) } }

// WithBacklog sets how many unclaimed messages a pipe keeps (default
// DefaultBacklog): messages that matched no handler and no subscription
// when they arrived. A later Subscribe on the pipe takes the matching ones
// first, so a client pipe returned by Accept loses nothing that arrived
// before its caller subscribed. When full, the oldest is dropped and
// counted in Stats.BacklogDropped. 0 keeps none. A server and each of its
// clients have a backlog of this size.
func WithBacklog(n int) Option { return func(c *config) { c.backlog = max(n, 0) } }

// WithIdleTimeout closes a TCP pipe (client or a server's client) that
// receives nothing for d. It frees the slots of half-open connections.
// Zero, the default, means no timeout.
func WithIdleTimeout(d time.Duration) Option { return func(c *config) { c.idleTimeout = d } }

// WithHandshakeTimeout bounds the TLS handshake of a server's clients
// (default DefaultHandshakeTimeout); a client that does not finish in time
// is dropped.
func WithHandshakeTimeout(d time.Duration) Option {
	return func(c *config) { c.handshakeTimeout = d }
}

// WithLogger sets the logger for connection events and dropped clients
// (default: discard).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

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
func WithDirectRecv() Option { return func(c *config) { c.directRecv = true } }
