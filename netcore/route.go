package netcore

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// Linux route flags (include/uapi/linux/route.h).
const (
	rtfUp     = 0x0001
	rtfReject = 0x0200
)

// Paths of the kernel routing tables; variables so tests can point them at
// fixtures.
var (
	procRouteV4 = "/proc/net/route"
	procRouteV6 = "/proc/net/ipv6_route"
)

// Probe destinations for the fallback: documentation addresses (RFC 5737,
// RFC 3849). Connecting a UDP socket sends no packet; the kernel only picks
// the route and source address.
var (
	probeV4 = netip.MustParseAddrPort("192.0.2.1:9")
	probeV6 = netip.MustParseAddrPort("[2001:db8::1]:9")
)

// kernelRoute is a default route read from a kernel routing table.
type kernelRoute struct {
	iface   string
	gateway netip.Addr
	metric  uint32
}

// DefaultRoute returns the route the machine uses to reach the internet for
// the family (IPv4 or IPv6): the default route's interface, a local address
// on it and its gateway.
//
// On Linux it reads /proc/net/route or /proc/net/ipv6_route and picks the
// default route with the lowest metric, then the source address the kernel
// would use. Where the tables are unavailable it falls back to the local
// address the kernel picks for a UDP socket connected to a documentation
// address (192.0.2.1 or 2001:db8::1); connecting a UDP socket sends no
// packet. Gateway is then unknown. It fails with ErrNoRoute when the family
// has no default route.
func DefaultRoute(f Family) (Route, error) {
	if f != IPv4 && f != IPv6 {
		return Route{}, fmt.Errorf("%w: default route needs IPv4 or IPv6, not %s", ErrFamilyMismatch, f)
	}
	ifs, err := Interfaces()
	if err != nil {
		return Route{}, err
	}
	kr, kerr := readDefaultRoute(f)
	probed, perr := probeSource(f)
	if kerr == nil {
		r := Route{Family: f, Interface: kr.iface, Gateway: kr.gateway}
		// Prefer the kernel's source pick when it lies on that interface.
		if perr == nil && ifaceHas(ifs, kr.iface, probed) {
			r.LocalIP = withZoneIfLinkLocal(probed, kr.iface)
			return r, nil
		}
		if a, ok := firstAddr(ifs, kr.iface, f); ok {
			r.LocalIP = withZoneIfLinkLocal(a, kr.iface)
			return r, nil
		}
		return Route{}, fmt.Errorf("%w: default %s route on %s, but it has no %s address", ErrNoRoute, f, kr.iface, f)
	}
	if perr != nil {
		return Route{}, fmt.Errorf("%w: %s: %w; %w", ErrNoRoute, f, kerr, perr)
	}
	r := Route{Family: f, LocalIP: probed}
	for _, it := range ifs {
		if ifaceHas(ifs, it.Name, probed) {
			r.Interface = it.Name
			r.LocalIP = withZoneIfLinkLocal(probed, it.Name)
			break
		}
	}
	return r, nil
}

// DefaultRoutes returns the default route of each family that has one,
// IPv4 first. It returns an error only if neither family has a route.
func DefaultRoutes() ([]Route, error) {
	var out []Route
	var errs []error
	for _, f := range []Family{IPv4, IPv6} {
		r, err := DefaultRoute(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// readDefaultRoute reads the kernel routing table of the family.
func readDefaultRoute(f Family) (kernelRoute, error) {
	path, parse := procRouteV4, parseRouteV4
	if f == IPv6 {
		path, parse = procRouteV6, parseRouteV6
	}
	fh, err := os.Open(path)
	if err != nil {
		return kernelRoute{}, fmt.Errorf("read routing table: %w", err)
	}
	defer fh.Close()
	return parse(fh)
}

// parseRouteV4 finds the default route with the lowest metric in the format
// of /proc/net/route.
func parseRouteV4(r io.Reader) (kernelRoute, error) {
	sc := bufio.NewScanner(r)
	var best kernelRoute
	found := false
	for line := 0; sc.Scan(); line++ {
		fs := strings.Fields(sc.Text())
		if line == 0 || len(fs) < 8 {
			continue // header or malformed
		}
		dst, err1 := strconv.ParseUint(fs[1], 16, 32)
		gw, err2 := strconv.ParseUint(fs[2], 16, 32)
		flags, err3 := strconv.ParseUint(fs[3], 16, 32)
		metric, err4 := strconv.ParseUint(fs[6], 10, 32)
		mask, err5 := strconv.ParseUint(fs[7], 16, 32)
		if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
			continue
		}
		if dst != 0 || mask != 0 || flags&rtfUp == 0 || flags&rtfReject != 0 {
			continue
		}
		// The kernel prints the network-order address as a host-order
		// number; writing it back in native order restores the bytes.
		var b [4]byte
		binary.NativeEndian.PutUint32(b[:], uint32(gw))
		kr := kernelRoute{iface: fs[0], metric: uint32(metric)}
		if gw != 0 {
			kr.gateway = netip.AddrFrom4(b)
		}
		if !found || kr.metric < best.metric {
			best, found = kr, true
		}
	}
	if err := sc.Err(); err != nil {
		return kernelRoute{}, fmt.Errorf("read routing table: %w", err)
	}
	if !found {
		return kernelRoute{}, errors.New("no IPv4 default route in kernel table")
	}
	return best, nil
}

// parseRouteV6 finds the default route with the lowest metric in the format
// of /proc/net/ipv6_route.
func parseRouteV6(r io.Reader) (kernelRoute, error) {
	sc := bufio.NewScanner(r)
	var best kernelRoute
	found := false
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 {
			continue
		}
		plen, err1 := strconv.ParseUint(fs[1], 16, 8)
		metric, err2 := strconv.ParseUint(fs[5], 16, 32)
		flags, err3 := strconv.ParseUint(fs[8], 16, 32)
		dst, err4 := hex.DecodeString(fs[0])
		gw, err5 := hex.DecodeString(fs[4])
		if err := errors.Join(err1, err2, err3, err4, err5); err != nil || len(dst) != 16 || len(gw) != 16 {
			continue
		}
		if plen != 0 || !allZero(dst) || flags&rtfUp == 0 || flags&rtfReject != 0 || fs[9] == "lo" {
			continue
		}
		kr := kernelRoute{iface: fs[9], metric: uint32(metric)}
		if g := netip.AddrFrom16([16]byte(gw)); !g.IsUnspecified() {
			kr.gateway = g
		}
		if !found || kr.metric < best.metric {
			best, found = kr, true
		}
	}
	if err := sc.Err(); err != nil {
		return kernelRoute{}, fmt.Errorf("read routing table: %w", err)
	}
	if !found {
		return kernelRoute{}, errors.New("no IPv6 default route in kernel table")
	}
	return best, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// probeSource returns the source address the kernel picks for the family's
// documentation address. Connecting a UDP socket sends nothing.
func probeSource(f Family) (netip.Addr, error) {
	dst := probeV4
	if f == IPv6 {
		dst = probeV6
	}
	c, err := net.DialUDP("udp"+f.suffix(), nil, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("probe %s source address: %w", f, err)
	}
	defer c.Close()
	la, ok := c.LocalAddr().(*net.UDPAddr)
	if !ok {
		return netip.Addr{}, fmt.Errorf("probe %s source address: unexpected local address %v", f, c.LocalAddr())
	}
	ip := la.AddrPort().Addr().Unmap()
	if !ip.IsValid() || ip.IsUnspecified() {
		return netip.Addr{}, fmt.Errorf("probe %s source address: kernel picked none", f)
	}
	return ip, nil
}

// ifaceHas reports whether interface name has address ip.
func ifaceHas(ifs []Interface, name string, ip netip.Addr) bool {
	for _, it := range ifs {
		if it.Name != name {
			continue
		}
		for _, a := range it.Addrs {
			if a.Addr() == ip.WithZone("") {
				return true
			}
		}
	}
	return false
}

// firstAddr returns the first address of family f on interface name,
// preferring addresses that are not link-local.
func firstAddr(ifs []Interface, name string, f Family) (netip.Addr, bool) {
	var ll netip.Addr
	for _, it := range ifs {
		if it.Name != name {
			continue
		}
		for _, a := range it.Addrs {
			if a.Family != f {
				continue
			}
			if !a.LinkLocal {
				return a.Addr(), true
			}
			if !ll.IsValid() {
				ll = a.Addr()
			}
		}
	}
	return ll, ll.IsValid()
}

// withZoneIfLinkLocal adds the interface as zone to IPv6 link-local
// addresses.
func withZoneIfLinkLocal(ip netip.Addr, iface string) netip.Addr {
	if ip.Is6() && ip.IsLinkLocalUnicast() && ip.Zone() == "" {
		return ip.WithZone(iface)
	}
	return ip
}
