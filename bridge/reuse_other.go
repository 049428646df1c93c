//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package bridge

import "syscall"

// reuseSupported is false here: TCP hole punching is skipped.
const reuseSupported = false

func reuseControl(_, _ string, _ syscall.RawConn) error { return nil }

const ttlSupported = false

func getTTL(syscall.Conn) (int, error) { return 64, nil }
func setTTL(syscall.Conn, int) error   { return nil }
