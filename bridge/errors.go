package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/peerbus/peerbus/internal/timeout"
	"github.com/peerbus/peerbus/netcore"
)

// Sentinel errors returned by this package. Errors are wrapped with
// context, so compare with errors.Is.
var (
	// ErrClosed is returned by operations on a closed connection,
	// service, link or subscription, and by a second Close. It wraps
	// net.ErrClosed.
	ErrClosed = fmt.Errorf("bridge: closed: %w", net.ErrClosed)

	// ErrTimeout is returned when a deadline passes while waiting: a
	// connection's read or write deadline, or a context deadline in
	// Subscription.Recv. It matches context.DeadlineExceeded,
	// os.ErrDeadlineExceeded and netcore.ErrTimeout, and implements
	// net.Error with Timeout() == true.
	ErrTimeout = timeout.New("bridge: timeout", netcore.ErrTimeout)

	// ErrNoSuchService reports a dial of a service name that the target
	// peer does not expose, or that no peer exposes.
	ErrNoSuchService = errors.New("bridge: no such service")

	// ErrWrongProtocol reports a Dial of a UDP service or a DialPacket of
	// a TCP service.
	ErrWrongProtocol = errors.New("bridge: wrong protocol for service")

	// ErrServiceUnavailable reports that the exposing peer could not
	// reach its local service (for example connection refused).
	ErrServiceUnavailable = errors.New("bridge: service unavailable")

	// ErrNoPath reports that no allowed strategy produced a connection.
	ErrNoPath = errors.New("bridge: no path to peer")

	// ErrPeerGone reports that the other side of a relayed connection
	// stopped answering (no frame for the keepalive timeout) or its
	// session vanished.
	ErrPeerGone = errors.New("bridge: peer gone")

	// ErrPeerClosed is returned by Write once the other side has closed
	// the connection (it no longer reads), and by Read when the other
	// side aborted without finishing its stream.
	ErrPeerClosed = errors.New("bridge: connection closed by peer")

	// ErrRelayLost reports a relayed stream that lost or reordered a
	// chunk (the bus delivers at most once): the stream cannot continue
	// and is failed instead of being silently corrupted.
	ErrRelayLost = errors.New("bridge: relay lost data")

	// ErrProtocol reports a malformed or unexpected message from the other
	// side: a bad frame, a credit violation, a failed authentication.
	ErrProtocol = errors.New("bridge: protocol error")

	// ErrBadTarget reports a service target that is not tcp://host:port
	// or udp://host:port, or an invalid service name.
	ErrBadTarget = errors.New("bridge: bad target")

	// ErrAlreadyExposed reports a second Expose of the same name on one
	// peer.
	ErrAlreadyExposed = errors.New("bridge: service already exposed")

	// ErrInvalidOption reports an invalid option value (a non-positive
	// timeout, window or size, an unknown strategy).
	ErrInvalidOption = errors.New("bridge: invalid option")

	// ErrWriteClosed is returned by Write after CloseWrite.
	ErrWriteClosed = errors.New("bridge: write side closed")
)

// ctxErr maps a finished context to ErrTimeout for a passed deadline and
// to the context's error otherwise, with the operation that waited.
func ctxErr(ctx context.Context, op string) error {
	return fmt.Errorf("bridge: %s: %w", op, timeout.Cause(ctx, ErrTimeout))
}
