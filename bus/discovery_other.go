//go:build !unix

package bus

import (
	"net"
	"net/netip"
	"syscall"
)

// multicastControl does nothing here: the sender is bound to the
// interface address, which picks the interface on most systems.
func multicastControl(_ *net.Interface, _ netip.Addr) func(network, address string, c syscall.RawConn) error {
	return nil
}
