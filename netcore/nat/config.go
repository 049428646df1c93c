package nat

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// DefaultPort is the STUN port used when a server address has none.
const DefaultPort = 3478

// Defaults for the zero values of Config fields.
const (
	// DefaultTimeout is how long one probe waits for an answer, across
	// all its retransmissions. A filtering test that gets no answer (the
	// NAT filters) costs this much, so it bounds the classification time
	// on a loss-free link.
	DefaultTimeout = 500 * time.Millisecond
	// DefaultRetransmit is the first retransmission interval; it doubles
	// after each retransmission (100ms, 200ms, ... until the timeout).
	DefaultRetransmit = 100 * time.Millisecond
	// DefaultPortSamples is how many fresh sockets observe port
	// allocation.
	DefaultPortSamples = 4
)

// ListenPacketFunc opens a packet socket; net.ListenConfig.ListenPacket
// has this signature.
type ListenPacketFunc func(ctx context.Context, network, address string) (net.PacketConn, error)

// Config configures Classify and ExternalAddress. Only Servers is
// required; every other zero value means the documented default.
type Config struct {
	// Servers are the STUN servers, "host:port" (port defaults to 3478;
	// IPv6 literals in brackets). There is no default: no server is ever
	// contacted unless listed here. The first server is the primary: the
	// RFC 5780 mapping and filtering tests run against it, so it should
	// support RFC 5780 (have two IP addresses). The others only
	// contribute to the mapped-address quorum.
	Servers []string

	// Quorum is how many servers must agree on the mapped IP address
	// (ports legitimately differ per server behind a symmetric NAT).
	// Zero means a majority: len(Servers)/2 + 1.
	Quorum int

	// Timeout bounds each probe, retransmissions included. Zero means
	// DefaultTimeout.
	Timeout time.Duration

	// Retransmit is the first retransmission interval, doubled after each
	// retransmission. Zero means DefaultRetransmit.
	Retransmit time.Duration

	// PortSamples is how many fresh sockets are used to observe port
	// allocation. Zero means DefaultPortSamples; negative disables it.
	PortSamples int

	// Local is the address of the main probe socket. A zero or
	// unspecified IP lets the kernel choose (the source address of the
	// route to the primary server is then used as the local IP); port 0
	// means an ephemeral port. Other probe sockets use the same IP and
	// ephemeral ports.
	Local netip.AddrPort

	// Logger receives debug records of each probe. Nil discards.
	Logger *slog.Logger

	// ListenPacket opens the probe sockets. Nil means
	// (&net.ListenConfig{}).ListenPacket. Tests use it to open sockets in
	// another network namespace or to inject loss; with sockets in
	// another namespace set Local's IP too, since the route lookup for an
	// unspecified one happens in the calling thread's namespace.
	ListenPacket ListenPacketFunc
}

// config is a Config with defaults applied and servers parsed.
type config struct {
	Config
	servers []server
	quorum  int
	network string
	log     *slog.Logger
}

// server is one resolved STUN server.
type server struct {
	name string
	addr netip.AddrPort
}

// DefaultConfig returns a Config with the servers given and every other
// field at its documented default spelled out (a zero field means the
// same default).
func DefaultConfig(servers ...string) Config {
	return Config{
		Servers:     append([]string(nil), servers...),
		Quorum:      len(servers)/2 + 1,
		Timeout:     DefaultTimeout,
		Retransmit:  DefaultRetransmit,
		PortSamples: DefaultPortSamples,
	}
}

// Validate checks the fields that need no network: at least one server
// (else ErrNoServers), no negative timeout, retransmit interval or
// quorum, and a quorum no larger than the servers (else an error
// wrapping ErrInvalidOption). Classify and ExternalAddress validate
// their Config; the servers' addresses are checked when they are
// resolved.
func (c Config) Validate() error {
	if len(c.Servers) == 0 {
		return ErrNoServers
	}
	if c.Timeout < 0 || c.Retransmit < 0 || c.Quorum < 0 {
		return fmt.Errorf("%w: negative timeout, retransmit or quorum", ErrInvalidOption)
	}
	if c.Quorum > len(c.Servers) {
		return fmt.Errorf("%w: quorum %d exceeds %d servers", ErrInvalidOption, c.Quorum, len(c.Servers))
	}
	return nil
}

func (c Config) resolve(ctx context.Context) (*config, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	out := &config{Config: c}
	if out.Timeout == 0 {
		out.Timeout = DefaultTimeout
	}
	if out.Retransmit == 0 {
		out.Retransmit = DefaultRetransmit
	}
	if out.PortSamples == 0 {
		out.PortSamples = DefaultPortSamples
	}
	out.quorum = c.Quorum
	if out.quorum == 0 {
		out.quorum = len(c.Servers)/2 + 1
	}
	out.log = c.Logger
	if out.log == nil {
		out.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if out.ListenPacket == nil {
		out.ListenPacket = (&net.ListenConfig{}).ListenPacket
	}
	for _, s := range c.Servers {
		addr, err := resolveServer(ctx, s)
		if err != nil {
			return nil, err
		}
		out.servers = append(out.servers, server{name: s, addr: addr})
	}
	primary := out.servers[0].addr
	out.network = "udp4"
	if primary.Addr().Is6() {
		out.network = "udp6"
	}
	if c.Local.Addr().IsValid() && c.Local.Addr().Is4() != primary.Addr().Is4() {
		return nil, fmt.Errorf("%w: local address %s and primary server %s differ in family",
			ErrInvalidOption, c.Local, primary)
	}
	return out, nil
}

// resolveServer turns "host[:port]" into an address, resolving names.
func resolveServer(ctx context.Context, s string) (netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		// No port: the whole string is the host (possibly a bare IPv6).
		host, portStr = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), strconv.Itoa(DefaultPort)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return netip.AddrPort{}, fmt.Errorf("%w: %q: bad port", ErrBadServer, s)
	}
	if host == "" {
		return netip.AddrPort{}, fmt.Errorf("%w: %q: empty host", ErrBadServer, s)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(ip.Unmap(), uint16(port)), nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: %q: %w", ErrBadServer, s, err)
	}
	if len(ips) == 0 {
		return netip.AddrPort{}, fmt.Errorf("%w: %q: no addresses", ErrBadServer, s)
	}
	// Prefer IPv4: NAT classification is mostly an IPv4 matter.
	best := ips[0]
	for _, ip := range ips {
		if ip.Unmap().Is4() {
			best = ip
			break
		}
	}
	return netip.AddrPortFrom(best.Unmap(), uint16(port)), nil
}
