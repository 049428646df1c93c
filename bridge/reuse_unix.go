//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package bridge

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// reuseSupported reports whether sockets can share a port, which TCP hole
// punching needs (a listener and connecting sockets on one port).
const reuseSupported = true

// reuseControl sets SO_REUSEADDR and SO_REUSEPORT on a socket before it
// binds.
func reuseControl(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}
	}); err != nil {
		return err
	}
	return serr
}

// ttlSupported reports whether setTTL works here.
const ttlSupported = true

// getTTL returns the IPv4 TTL of a socket.
func getTTL(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var ttl int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		ttl, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL)
	}); err != nil {
		return 0, err
	}
	return ttl, serr
}

// setTTL sets the IPv4 TTL of a socket's packets.
func setTTL(c syscall.Conn, ttl int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, ttl)
	}); err != nil {
		return err
	}
	return serr
}
