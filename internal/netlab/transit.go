package netlab

import (
	"net/netip"
	"sync"
)

// TransitPrefix holds the links between transit routers and the NAT
// routers behind them (a /30 per link).
var TransitPrefix = netip.MustParsePrefix("198.51.100.0/24")

var (
	transitMu    sync.Mutex
	transitLinks = map[*Lab]int{}
)

// AddRouterBehindTransit adds a NAT router of the given kind (Masquerade,
// Symmetric or FullCone) that is not on the public segment itself but one
// routed hop behind it: a transit router (an ISP's, routing without NAT)
// sits on the public segment and links to the NAT router's WAN side over
// a /30 of TransitPrefix. Routers made by AddRouter are neighbours on the
// public segment; on the internet NATs are several hops apart, which
// matters to hole punching that sends short-lived (low TTL) packets.
//
// The returned router's WAN is its address on the transit link, which is
// reachable from the whole lab; AddHost works as for any router.
func (l *Lab) AddRouterBehindTransit(name string, kind NAT) *Router {
	l.t.Helper()
	switch kind {
	case Masquerade, Symmetric, FullCone:
	default:
		l.t.Fatalf("netlab: router kind %q cannot be behind a transit router", kind)
	}
	transitMu.Lock()
	k := transitLinks[l]
	transitLinks[l] = k + 1
	transitMu.Unlock()
	if k >= 63 {
		l.t.Fatalf("netlab: too many transit links")
	}
	if k == 0 {
		l.t.Cleanup(func() {
			transitMu.Lock()
			delete(transitLinks, l)
			transitMu.Unlock()
		})
	}
	base := TransitPrefix.Addr().As4()
	base[3] = byte(4 * k)
	transitIP, wanIP := base, base
	transitIP[3]++
	wanIP[3] += 2
	link := netip.AddrFrom4(transitIP)
	wan := netip.AddrFrom4(wanIP)

	// The transit router: public address, forwarding, no NAT.
	tr := l.newNamespace(name + "-t")
	l.attach(tr, "wan0")
	pub := l.nextAddr(&l.nextWAN, 100)
	tr.MustRun("ip", "addr", "add", prefixOf(pub), "dev", "wan0")
	tr.MustRun("ip", "route", "add", "default", "via", Gateway.String())
	tr.Sysctl("net.ipv4.ip_forward", "1")
	tr.Sysctl("net.ipv4.conf.all.rp_filter", "0")
	tr.Sysctl("net.ipv4.conf.default.rp_filter", "0")

	// The NAT router, linked to the transit router.
	n := l.newNamespace(name)
	tr.MustRun("ip", "link", "add", "down0", "type", "veth", "peer", "name", "wan0", "netns", n.Name)
	tr.MustRun("ip", "addr", "add", netip.PrefixFrom(link, 30).String(), "dev", "down0")
	tr.MustRun("ip", "link", "set", "down0", "up")
	n.MustRun("ip", "link", "set", "wan0", "up")
	n.MustRun("ip", "addr", "add", netip.PrefixFrom(wan, 30).String(), "dev", "wan0")
	n.MustRun("ip", "route", "add", "default", "via", link.String())
	l.hub.MustRun("ip", "route", "add", netip.PrefixFrom(link, 30).Masked().String(), "via", pub.String())

	l.mu.Lock()
	lan := l.nextLAN
	l.nextLAN++
	l.mu.Unlock()
	r := &Router{
		Namespace: n,
		Kind:      kind,
		WAN:       wan,
		LAN:       netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(lan), 0, 0}), 24),
	}
	n.MustRun("ip", "link", "add", "lan0", "address", randomMAC(), "type", "bridge")
	n.MustRun("ip", "addr", "add", netip.PrefixFrom(r.LAN.Addr().Next(), 24).String(), "dev", "lan0")
	n.MustRun("ip", "link", "set", "lan0", "up")
	n.Sysctl("net.ipv4.ip_forward", "1")
	n.Sysctl("net.ipv4.conf.all.rp_filter", "0")
	n.Sysctl("net.ipv4.conf.default.rp_filter", "0")
	args := []string{"-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE"}
	if kind == Symmetric {
		args = append(args, "--random-fully")
	}
	n.MustRun(l.iptables, args...)
	if r.LAN.Addr().As4()[1] == 0 {
		l.t.Fatal("netlab: LAN numbering overflow")
	}
	return r
}
