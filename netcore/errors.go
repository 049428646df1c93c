package netcore

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/peerbus/peerbus/internal/timeout"
)

// Sentinel errors returned by netcore. Errors are wrapped with context, so
// compare with errors.Is.
var (
	// ErrClosed is returned by operations on a closed pipe, daemon or
	// subscription, and by a second Close. It wraps net.ErrClosed.
	ErrClosed = fmt.Errorf("netcore: closed: %w", net.ErrClosed)

	// ErrTimeout is returned when a context deadline passes while waiting,
	// for example in Recv or Accept. errors.Is(ErrTimeout,
	// context.DeadlineExceeded) and errors.Is(ErrTimeout,
	// os.ErrDeadlineExceeded) both hold, and it implements net.Error with
	// Timeout() == true.
	ErrTimeout = timeout.New("netcore: timeout")

	// ErrNoRoute is returned when no route or address of the wanted family
	// can be found.
	ErrNoRoute = errors.New("netcore: no route")

	// ErrFamilyMismatch is returned when an address is not of the family a
	// route or option asks for.
	ErrFamilyMismatch = errors.New("netcore: address family mismatch")

	// ErrNotServer is returned by server-only operations (Accept) on a pipe
	// that is not a server.
	ErrNotServer = errors.New("netcore: not a server pipe")

	// ErrNoPeer is returned by Send on a pipe that has no single peer (a
	// server pipe); use SendTo.
	ErrNoPeer = errors.New("netcore: pipe has no peer, use SendTo")

	// ErrUnknownPeer is returned by SendTo on a TCP server when no client
	// with that address is connected, or on a connected UDP pipe when the
	// address is not its peer.
	ErrUnknownPeer = errors.New("netcore: unknown peer")

	// ErrMessageTooLarge is matched by every *MessageTooLargeError.
	ErrMessageTooLarge = errors.New("netcore: message too large")

	// ErrBadMessage is returned when a message cannot be encoded by the
	// pipe's framing, for example a newline inside a line-delimited message.
	ErrBadMessage = errors.New("netcore: message cannot be framed")

	// ErrInvalidOption reports an invalid option value (a negative
	// backlog, a nil TLS configuration or framing, ...).
	ErrInvalidOption = errors.New("netcore: invalid option")

	// ErrUnsupported is returned for option combinations that make no sense,
	// such as TLS on a UDP pipe.
	ErrUnsupported = errors.New("netcore: unsupported")
)

// MessageTooLargeError reports a message that exceeds a size limit: a frame
// longer than the framing's maximum (on send or receive), or a datagram
// larger than UDP can carry. It matches ErrMessageTooLarge.
type MessageTooLargeError struct {
	// What names the limit: "frame", "line" or "datagram".
	What string
	// Size is the size of the offending message in bytes (for a received
	// frame, the size its header announced; -1 if unknown).
	Size int64
	// Limit is the maximum allowed size in bytes.
	Limit int
}

// Error describes the message and the limit it exceeds.
func (e *MessageTooLargeError) Error() string {
	if e.Size < 0 {
		return fmt.Sprintf("netcore: %s exceeds limit of %d bytes", e.What, e.Limit)
	}
	return fmt.Sprintf("netcore: %s of %d bytes exceeds limit of %d bytes", e.What, e.Size, e.Limit)
}

// Is reports whether target is ErrMessageTooLarge.
func (e *MessageTooLargeError) Is(target error) bool { return target == ErrMessageTooLarge }

// ctxCause maps a finished context to ErrTimeout for a passed deadline and
// to the context's error otherwise.
func ctxCause(ctx context.Context) error { return timeout.Cause(ctx, ErrTimeout) }

// ctxErr is ctxCause with the operation that was waiting.
func ctxErr(ctx context.Context, op string) error {
	return fmt.Errorf("netcore: %s: %w", op, ctxCause(ctx))
}
