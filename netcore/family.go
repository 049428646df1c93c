package netcore

import (
	"fmt"
	"net/netip"
)

// Family is an IP address family.
type Family uint8

// Address families. AnyFamily means "no preference".
const (
	AnyFamily Family = 0
	IPv4      Family = 4
	IPv6      Family = 6
)

// FamilyOf returns the family of ip (IPv4 for IPv4-mapped IPv6 addresses),
// or AnyFamily for the zero Addr.
func FamilyOf(ip netip.Addr) Family {
	switch {
	case !ip.IsValid():
		return AnyFamily
	case ip.Unmap().Is4():
		return IPv4
	default:
		return IPv6
	}
}

// String returns "IPv4", "IPv6" or "any".
func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	case AnyFamily:
		return "any"
	}
	return fmt.Sprintf("Family(%d)", uint8(f))
}

// MarshalText encodes the family as "ipv4", "ipv6" or "any".
func (f Family) MarshalText() ([]byte, error) {
	switch f {
	case IPv4:
		return []byte("ipv4"), nil
	case IPv6:
		return []byte("ipv6"), nil
	case AnyFamily:
		return []byte("any"), nil
	}
	return nil, fmt.Errorf("netcore: invalid family %d", uint8(f))
}

// UnmarshalText accepts "ipv4"/"4"/"v4", "ipv6"/"6"/"v6" and "any"/"".
func (f *Family) UnmarshalText(b []byte) error {
	switch string(b) {
	case "ipv4", "IPv4", "4", "v4":
		*f = IPv4
	case "ipv6", "IPv6", "6", "v6":
		*f = IPv6
	case "any", "":
		*f = AnyFamily
	default:
		return fmt.Errorf("netcore: invalid family %q", b)
	}
	return nil
}

// suffix returns the suffix of Go network names ("4", "6" or "").
func (f Family) suffix() string {
	switch f {
	case IPv4:
		return "4"
	case IPv6:
		return "6"
	}
	return ""
}

// Protocol is a transport protocol: TCP or UDP.
type Protocol uint8

// Transport protocols.
const (
	TCP Protocol = iota + 1
	UDP
)

// String returns "tcp" or "udp".
func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprintf("Protocol(%d)", uint8(p))
}

// MarshalText encodes the protocol as "tcp" or "udp".
func (p Protocol) MarshalText() ([]byte, error) {
	if p != TCP && p != UDP {
		return nil, fmt.Errorf("netcore: invalid protocol %d", uint8(p))
	}
	return []byte(p.String()), nil
}

// UnmarshalText accepts "tcp" or "udp".
func (p *Protocol) UnmarshalText(b []byte) error {
	switch string(b) {
	case "tcp", "TCP":
		*p = TCP
	case "udp", "UDP":
		*p = UDP
	default:
		return fmt.Errorf("netcore: invalid protocol %q", b)
	}
	return nil
}

// network returns the Go network name, e.g. "tcp4" or "udp".
func (p Protocol) network(f Family) string { return p.String() + f.suffix() }
