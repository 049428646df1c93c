package nat

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
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
	// DefaultTimeout is the most one probe waits for an answer, across
	// all its retransmissions: the wait before any round trip to its
	// server is known, and the upper bound of the wait derived from that
	// round trip (see RTTFactor).
	DefaultTimeout = 500 * time.Millisecond
	// DefaultRetransmit is the first retransmission interval; it doubles
	// after each retransmission (100ms, 200ms, ... until the timeout).
	DefaultRetransmit = 100 * time.Millisecond
	// DefaultRTTFactor multiplies the first measured round trip to a
	// server into the no-answer timeout of its other probes.
	DefaultRTTFactor = 10
	// DefaultMinTimeout is the floor of the no-answer timeout derived
	// from the round trip. A filtering test that gets no answer (the NAT
	// filters) costs this much on a fast link, so it bounds the
	// classification time there.
	DefaultMinTimeout = 100 * time.Millisecond
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
	// DefaultTimeout. A probe waits this long while no round trip to its
	// server is known; once one is, the probes to that server still
	// waiting give up after RTTFactor times that round trip (counted from
	// their own first send), but not before MinTimeout and never after
	// Timeout.
	Timeout time.Duration

	// Retransmit is the first retransmission interval, doubled after each
	// retransmission. Zero means DefaultRetransmit. Once a probe's
	// timeout is derived from the round trip, its interval is at most a
	// quarter of that timeout, so it is still retransmitted within it.
	Retransmit time.Duration

	// RTTFactor multiplies the first round trip measured to a server (the
	// first answer of any probe to it, usually test I) into the
	// no-answer timeout of its other probes. Zero means DefaultRTTFactor;
	// otherwise it must be a finite number of at least 1.
	RTTFactor float64

	// MinTimeout is the floor of the timeout derived from the round trip.
	// Zero means DefaultMinTimeout, or Timeout if that is shorter;
	// otherwise it must not exceed Timeout. Setting it to Timeout turns
	// the derived timeout off.
	MinTimeout time.Duration

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
	index int // in Config.Servers
	name  string
	addr  netip.AddrPort
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
		RTTFactor:   DefaultRTTFactor,
		MinTimeout:  DefaultMinTimeout,
		PortSamples: DefaultPortSamples,
	}
}

// Validate checks the fields that need no network: at least one server
// (else ErrNoServers), no negative timeout, retransmit interval,
// minimum timeout or quorum, a quorum no larger than the servers, an
// RTTFactor of zero or a finite number of at least 1 and a MinTimeout no
// longer than the Timeout (else an error wrapping ErrInvalidOption). Classify and ExternalAddress validate
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
	if c.MinTimeout < 0 {
		return fmt.Errorf("%w: negative minimum timeout %v", ErrInvalidOption, c.MinTimeout)
	}
	if timeout := cmp.Or(c.Timeout, DefaultTimeout); c.MinTimeout > timeout {
		return fmt.Errorf("%w: minimum timeout %v exceeds timeout %v", ErrInvalidOption, c.MinTimeout, timeout)
	}
	if f := c.RTTFactor; f != 0 && (math.IsNaN(f) || math.IsInf(f, 0) || f < 1) {
		return fmt.Errorf("%w: RTT factor %v is not a finite number of at least 1", ErrInvalidOption, f)
	}
	return nil
}

// noAnswer returns the no-answer timeout of a probe to a server whose
// round trip rtt is known: RTTFactor times rtt, within MinTimeout and
// Timeout.
func (c *config) noAnswer(rtt time.Duration) time.Duration {
	w := time.Duration(float64(rtt) * c.RTTFactor)
	if float64(rtt)*c.RTTFactor > float64(c.Timeout) {
		w = c.Timeout // also guards the conversion against overflow
	}
	return min(max(w, c.MinTimeout), c.Timeout)
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
	if out.RTTFactor == 0 {
		out.RTTFactor = DefaultRTTFactor
	}
	if out.MinTimeout == 0 {
		out.MinTimeout = min(DefaultMinTimeout, out.Timeout)
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
	for i, s := range c.Servers {
		addr, err := resolveServer(ctx, s)
		if err != nil {
			return nil, err
		}
		out.servers = append(out.servers, server{index: i, name: s, addr: addr})
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
