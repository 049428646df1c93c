package netcore

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Interface is a network interface of this machine with its IPv4 and IPv6
// addresses.
type Interface struct {
	// Name is the interface name, e.g. "eth0".
	Name string `json:"name"`
	// Index is the kernel's interface index.
	Index int `json:"index"`
	// MTU is the maximum transmission unit in bytes.
	MTU int `json:"mtu"`
	// HardwareAddr is the link-layer address, empty for loopback and
	// tunnels.
	HardwareAddr string `json:"hardware_addr,omitempty"`
	// Up reports whether the interface is administratively up.
	Up bool `json:"up"`
	// Running reports whether the interface is operationally up (the
	// kernel's IFF_RUNNING: it has a carrier). A bridge with no member,
	// such as docker0 without containers, is Up but not Running.
	Running bool `json:"running"`
	// Loopback marks loopback interfaces.
	Loopback bool `json:"loopback"`
	// Multicast reports whether the interface supports multicast.
	Multicast bool `json:"multicast"`
	// Addrs lists the interface's IP addresses, IPv4 first.
	Addrs []IfaceAddr `json:"addrs"`
}

// IfaceAddr is an IP address assigned to an interface.
type IfaceAddr struct {
	// Prefix is the address with its network prefix length.
	Prefix netip.Prefix `json:"prefix"`
	// Family is IPv4 or IPv6.
	Family Family `json:"family"`
	// LinkLocal marks link-local unicast addresses (169.254.0.0/16,
	// fe80::/10). Binding to an IPv6 link-local address needs the
	// interface as zone; routes from RoutesFor add it.
	LinkLocal bool `json:"link_local"`
}

// Addr returns the address without the prefix length.
func (a IfaceAddr) Addr() netip.Addr { return a.Prefix.Addr() }

// Interfaces lists the machine's network interfaces with their IPv4 and
// IPv6 addresses, in kernel index order.
func Interfaces() ([]Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("netcore: list interfaces: %w", err)
	}
	out := make([]Interface, 0, len(ifs))
	for _, ifi := range ifs {
		it := Interface{
			Name:      ifi.Name,
			Index:     ifi.Index,
			MTU:       ifi.MTU,
			Up:        ifi.Flags&net.FlagUp != 0,
			Running:   ifi.Flags&net.FlagRunning != 0,
			Loopback:  ifi.Flags&net.FlagLoopback != 0,
			Multicast: ifi.Flags&net.FlagMulticast != 0,
		}
		if len(ifi.HardwareAddr) > 0 {
			it.HardwareAddr = ifi.HardwareAddr.String()
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			return nil, fmt.Errorf("netcore: addresses of %s: %w", ifi.Name, err)
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			ones, _ := ipn.Mask.Size()
			it.Addrs = append(it.Addrs, IfaceAddr{
				Prefix:    netip.PrefixFrom(ip, ones),
				Family:    FamilyOf(ip),
				LinkLocal: ip.IsLinkLocalUnicast(),
			})
		}
		slices.SortStableFunc(it.Addrs, func(a, b IfaceAddr) int { return cmp.Compare(a.Family, b.Family) })
		out = append(out, it)
	}
	return out, nil
}

// Route is a choice of where to bind: an interface, a local address on it
// and the address family. It is a plain value that other packages can build
// or take apart; the zero Route means "any family, any address".
//
// A pipe bound to a Route uses LocalIP as its source (client) or listening
// (server) address. An unspecified LocalIP (0.0.0.0 or ::) means all
// addresses of the family.
type Route struct {
	// Family is the address family of the route.
	Family Family `json:"family"`
	// Interface is the interface name, empty when unknown or when LocalIP
	// is unspecified.
	Interface string `json:"interface,omitempty"`
	// LocalIP is the local address to bind. For IPv6 link-local addresses
	// it carries the interface as zone.
	LocalIP netip.Addr `json:"local_ip"`
	// Gateway is the next hop of a default route, when known. It is not
	// needed for binding.
	Gateway netip.Addr `json:"gateway,omitzero"`
}

// String formats the route as "IPv4 eth0 192.0.2.2 via 192.0.2.1".
func (r Route) String() string {
	var b strings.Builder
	b.WriteString(r.Family.String())
	if r.Interface != "" {
		b.WriteString(" ")
		b.WriteString(r.Interface)
	}
	if r.LocalIP.IsValid() {
		b.WriteString(" ")
		b.WriteString(r.LocalIP.String())
	}
	if r.Gateway.IsValid() {
		b.WriteString(" via ")
		b.WriteString(r.Gateway.String())
	}
	return b.String()
}

// AddrPort returns the route's local address with the given port.
func (r Route) AddrPort(port uint16) netip.AddrPort { return netip.AddrPortFrom(r.LocalIP, port) }

// family returns the route's family, derived from LocalIP when Family is
// unset.
func (r Route) family() Family {
	if r.Family != AnyFamily {
		return r.Family
	}
	return FamilyOf(r.LocalIP)
}

// validate checks that LocalIP matches Family.
func (r Route) validate() error {
	if r.LocalIP.IsValid() && r.Family != AnyFamily && FamilyOf(r.LocalIP) != r.Family {
		return fmt.Errorf("%w: route %s has local address %s", ErrFamilyMismatch, r.Family, r.LocalIP)
	}
	return nil
}

// LoopbackRoute returns the route on the loopback address of the family
// (127.0.0.1 or ::1). AnyFamily gives IPv4.
func LoopbackRoute(f Family) Route {
	if f == IPv6 {
		return Route{Family: IPv6, LocalIP: netip.IPv6Loopback()}
	}
	return Route{Family: IPv4, LocalIP: netip.AddrFrom4([4]byte{127, 0, 0, 1})}
}

// AnyRoute returns the route on all addresses of the family (0.0.0.0 or
// ::). AnyFamily gives IPv4.
func AnyRoute(f Family) Route {
	if f == IPv6 {
		return Route{Family: IPv6, LocalIP: netip.IPv6Unspecified()}
	}
	return Route{Family: IPv4, LocalIP: netip.IPv4Unspecified()}
}

// RoutesFor lists one route per address of the given family (AnyFamily:
// both) on interfaces that are up and running (with a carrier), loopback
// included, in interface order.
func RoutesFor(f Family) ([]Route, error) {
	ifs, err := Interfaces()
	if err != nil {
		return nil, err
	}
	var out []Route
	for _, it := range ifs {
		if !it.Up || !it.Running {
			continue
		}
		for _, a := range it.Addrs {
			if f != AnyFamily && a.Family != f {
				continue
			}
			out = append(out, routeOn(it.Name, a))
		}
	}
	return out, nil
}

// RouteFor returns the route whose local address is ip, found among the
// machine's interfaces. It fails with ErrNoRoute if no interface has ip.
func RouteFor(ip netip.Addr) (Route, error) {
	ip = ip.Unmap()
	ifs, err := Interfaces()
	if err != nil {
		return Route{}, err
	}
	for _, it := range ifs {
		for _, a := range it.Addrs {
			if a.Addr() == ip.WithZone("") {
				return routeOn(it.Name, a), nil
			}
		}
	}
	return Route{}, fmt.Errorf("%w: no interface has address %s", ErrNoRoute, ip)
}

// routeOn builds the route for address a on interface name.
func routeOn(name string, a IfaceAddr) Route {
	ip := a.Addr()
	if a.LinkLocal && a.Family == IPv6 {
		ip = ip.WithZone(name)
	}
	return Route{Family: a.Family, Interface: name, LocalIP: ip}
}
