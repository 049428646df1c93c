package netcore

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// DefaultResolveTimeout bounds name resolution when the context has no
// deadline.
const DefaultResolveTimeout = 5 * time.Second

// Resolve returns an address of family f for host, using res (nil means
// net.DefaultResolver). An IP literal is returned as is if its family fits.
// For AnyFamily the first address is returned, IPv4 preferred. If ctx has no
// deadline, DefaultResolveTimeout applies; a passed deadline gives an error
// matching ErrTimeout.
func Resolve(ctx context.Context, res *net.Resolver, host string, f Family) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		if f != AnyFamily && FamilyOf(ip) != f {
			return netip.Addr{}, fmt.Errorf("%w: %s is not an %s address", ErrFamilyMismatch, ip, f)
		}
		return ip, nil
	}
	if res == nil {
		res = net.DefaultResolver
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultResolveTimeout)
		defer cancel()
	}
	network := "ip" + f.suffix()
	ips, err := res.LookupNetIP(ctx, network, host)
	if err != nil {
		if ctx.Err() != nil {
			return netip.Addr{}, ctxErr(ctx, fmt.Sprintf("resolve %q", host))
		}
		return netip.Addr{}, fmt.Errorf("netcore: resolve %q as %s: %w", host, f, err)
	}
	var first netip.Addr
	for _, ip := range ips {
		ip = ip.Unmap()
		if f != AnyFamily && FamilyOf(ip) != f {
			continue
		}
		if f == AnyFamily && ip.Is4() {
			return ip, nil
		}
		if !first.IsValid() {
			first = ip
		}
	}
	if !first.IsValid() {
		return netip.Addr{}, fmt.Errorf("%w: %q has no %s address", ErrNoRoute, host, f)
	}
	return first, nil
}

// Resolve returns an address of the route's family for host; see the
// package-level Resolve.
func (r Route) Resolve(ctx context.Context, host string) (netip.Addr, error) {
	return Resolve(ctx, nil, host, r.family())
}
