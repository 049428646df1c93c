//go:build unix

package bus

import (
	"net"
	"net/netip"
	"syscall"
)

// multicastControl sets IP_MULTICAST_IF on the beacon sender, so that
// beacons leave on the discovery interface whatever the routing table
// says about the group.
func multicastControl(_ *net.Interface, ip netip.Addr) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInet4Addr(int(fd), syscall.IPPROTO_IP, syscall.IP_MULTICAST_IF, ip.As4())
		})
		if err != nil {
			return err
		}
		return serr
	}
}
