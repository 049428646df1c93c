// Package timeout is the one timeout error type of netcore and bridge: a
// sentinel that matches context.DeadlineExceeded and
// os.ErrDeadlineExceeded and implements net.Error with Timeout() == true.
package timeout

import (
	"context"
	"errors"
	"net"
	"os"
)

// Error is a timeout sentinel; make one with New.
type Error struct {
	msg  string
	also []error
}

var _ net.Error = (*Error)(nil)

// New returns a timeout sentinel with the message msg that also matches
// every error in also (for example the timeout of a package below).
func New(msg string, also ...error) error { return &Error{msg: msg, also: also} }

// Error returns the message.
func (e *Error) Error() string { return e.msg }

// Timeout reports true.
func (e *Error) Timeout() bool { return true }

// Temporary reports true.
func (e *Error) Temporary() bool { return true }

// Is makes the sentinel match the standard deadline errors and the
// errors it was made with.
func (e *Error) Is(target error) bool {
	if target == context.DeadlineExceeded || target == os.ErrDeadlineExceeded {
		return true
	}
	for _, a := range e.also {
		if errors.Is(a, target) {
			return true
		}
	}
	return false
}

// Cause is the error of a finished ctx: t when its deadline passed, the
// context's error otherwise.
func Cause(ctx context.Context, t error) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return t
	}
	return err
}
