package bridge

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/peerbus/peerbus/netcore"
	"github.com/peerbus/peerbus/netcore/nat"
)

// Candidate kinds.
const (
	// KindHost is an address of one of the side's interfaces.
	KindHost = "host"
	// KindMapped is the side's address as a STUN server saw it.
	KindMapped = "mapped"
)

// Candidate is an address a side offers the other for a raw path.
type Candidate struct {
	// Addr is the address.
	Addr netip.AddrPort `json:"addr"`
	// Kind is KindHost or KindMapped. A mapped TCP candidate pairs the
	// mapped IP with the listener's port: the external address a
	// port-preserving NAT gives.
	Kind string `json:"kind"`
}

// String returns "kind addr".
func (c Candidate) String() string { return c.Kind + " " + c.Addr.String() }

// NATInfo is what a side knows of the NAT in front of it, from STUN
// (netcore/nat). It is nil when no STUN server was configured.
type NATInfo struct {
	// Mapped is the external IP address.
	Mapped netip.Addr `json:"mapped,omitzero"`
	// NAT reports whether a NAT was seen.
	NAT bool `json:"nat"`
	// Mapping is the RFC 5780 mapping behaviour.
	Mapping nat.Behavior `json:"mapping,omitempty"`
	// Filtering is the RFC 5780 filtering behaviour.
	Filtering nat.Behavior `json:"filtering,omitempty"`
	// Classic is the RFC 3489 name.
	Classic nat.Classic `json:"classic,omitempty"`
	// PortAllocation is the NAT's port allocation behaviour.
	PortAllocation nat.PortAllocation `json:"port_allocation,omitempty"`
	// PortDelta is the delta of a sequential port allocation.
	PortDelta int `json:"port_delta,omitempty"`
	// Error says why the classification is incomplete, if it is.
	Error string `json:"error,omitempty"`
}

// symmetric reports a NAT whose mappings depend on the destination.
func (n *NATInfo) symmetric() bool {
	return n != nil && n.NAT && (n.Mapping == nat.AddressDependent || n.Mapping == nat.AddressAndPortDependent)
}

// predictable reports whether the side's external TCP port for a local
// port can be predicted: no NAT, or an endpoint-independent NAT that
// preserves ports. Unknown (no STUN) counts as predictable: the host
// candidates are then all there is.
func (n *NATInfo) predictable() bool {
	if n == nil || !n.NAT {
		return true
	}
	return !n.symmetric() && n.PortAllocation == nat.PortPreserving
}

// hostAddrs returns the IPv4 addresses of the interfaces that are up and
// running (with a carrier),
// without link-local ones, loopback last (and only if loopback).
func hostAddrs(loopback bool) []netip.Addr {
	ifs, err := netcore.Interfaces()
	if err != nil {
		return nil
	}
	var out, lo []netip.Addr
	for _, it := range ifs {
		if !it.Up || !it.Running {
			continue
		}
		for _, a := range it.Addrs {
			ip := a.Addr()
			if !ip.Is4() || a.LinkLocal {
				continue
			}
			if it.Loopback || ip.IsLoopback() {
				if loopback {
					lo = append(lo, ip)
				}
				continue
			}
			out = append(out, ip)
		}
	}
	return append(out, lo...)
}

// hostCandidates pairs the host addresses with port.
func hostCandidates(port uint16, loopback bool) []Candidate {
	var out []Candidate
	for _, ip := range hostAddrs(loopback) {
		out = append(out, Candidate{Addr: netip.AddrPortFrom(ip, port), Kind: KindHost})
	}
	return out
}

// addCandidate appends c unless its address is already listed.
func addCandidate(list []Candidate, c Candidate) []Candidate {
	if !c.Addr.IsValid() || c.Addr.Port() == 0 {
		return list
	}
	for _, x := range list {
		if x.Addr == c.Addr {
			return list
		}
	}
	return append(list, c)
}

// natCacheTTL is how long a NAT classification is reused.
const natCacheTTL = time.Minute

type natEntry struct {
	lock chan struct{} // holds a token while someone classifies
	info *NATInfo
	at   time.Time
}

var (
	natMu    sync.Mutex
	natCache = map[string]*natEntry{}
)

// classify returns this host's NAT information for the STUN
// configuration, classifying at most once per natCacheTTL per server
// list (concurrent callers wait for one classification). It returns nil
// without servers.
func classify(ctx context.Context, cfg nat.Config) *NATInfo {
	if len(cfg.Servers) == 0 {
		return nil
	}
	key := strings.Join(cfg.Servers, ",")
	natMu.Lock()
	e := natCache[key]
	if e == nil {
		e = &natEntry{lock: make(chan struct{}, 1)}
		natCache[key] = e
	}
	natMu.Unlock()
	select {
	case e.lock <- struct{}{}:
	case <-ctx.Done():
		return &NATInfo{Error: "classification unfinished: " + ctx.Err().Error()}
	}
	defer func() { <-e.lock }()
	natMu.Lock()
	if e.info != nil && time.Since(e.at) < natCacheTTL {
		info := e.info
		natMu.Unlock()
		return info
	}
	natMu.Unlock()
	info := &NATInfo{}
	r, err := nat.Classify(ctx, cfg)
	if r != nil {
		info.Mapped = r.MappedAddress.Addr()
		info.NAT = r.NAT
		info.Mapping, info.Filtering, info.Classic = r.Mapping, r.Filtering, r.Classic
		info.PortAllocation, info.PortDelta = r.PortAllocation, r.PortDelta
	}
	if err != nil {
		info.Error = err.Error()
	}
	if ctx.Err() == nil {
		natMu.Lock()
		e.info, e.at = info, time.Now()
		natMu.Unlock()
	}
	return info
}

// sharedConn lends a socket to netcore/nat for one ExternalAddress run:
// Close stops nat's reader without closing the socket.
type sharedConn struct {
	*net.UDPConn
	mu     sync.Mutex
	closed bool
}

func (c *sharedConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return 0, nil, net.ErrClosed
		}
		n, a, err := c.UDPConn.ReadFrom(b)
		var ne net.Error
		if err != nil && errors.As(err, &ne) && ne.Timeout() {
			continue // our own wake-up, or a stale deadline
		}
		return n, a, err
	}
}

func (c *sharedConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return c.UDPConn.SetReadDeadline(time.Now())
}

// mappedAddr asks the STUN servers for the external address of conn
// (its mapping towards them). The socket is not read by anyone else
// meanwhile; its read deadline is cleared afterwards.
func mappedAddr(ctx context.Context, conn *net.UDPConn, cfg nat.Config) (netip.AddrPort, error) {
	if len(cfg.Servers) == 0 {
		return netip.AddrPort{}, nil
	}
	shared := &sharedConn{UDPConn: conn}
	cfg.PortSamples = -1
	cfg.ListenPacket = func(context.Context, string, string) (net.PacketConn, error) { return shared, nil }
	local := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	if ip := local.Addr().Unmap(); !ip.IsUnspecified() {
		cfg.Local = netip.AddrPortFrom(ip, local.Port())
	}
	ext, err := nat.ExternalAddress(ctx, cfg)
	_ = conn.SetReadDeadline(time.Time{})
	if err != nil {
		return netip.AddrPort{}, err
	}
	return ext.Address, nil
}

// sortCandidates puts non-loopback addresses first, keeping order.
func sortCandidates(c []Candidate) {
	slices.SortStableFunc(c, func(a, b Candidate) int {
		la, lb := a.Addr.Addr().IsLoopback(), b.Addr.Addr().IsLoopback()
		switch {
		case la == lb:
			return 0
		case la:
			return 1
		}
		return -1
	})
}
