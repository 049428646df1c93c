package eventlog

import (
	"errors"
	"fmt"
	"net"

	"github.com/peerbus/peerbus/peer"
)

// Sentinel errors of the event log. Match them with errors.Is. The log
// also returns peer's sentinels where they mean the same thing:
// peer.ErrPayloadTooLarge for an event larger than the bus accepts,
// peer.ErrTimeout for a log that did not answer in time.
var (
	// ErrNoLog reports that the event log is not available: the bus has
	// no JetStream (a node started without it, or a NATS server without
	// JetStream), or JetStream did not become available in time. Use
	// EmitTransient for events that need no log.
	ErrNoLog = errors.New("eventlog: event log unavailable")
	// ErrLogFull reports an event refused because the log reached a
	// limit and discards new events (Config.DiscardNew), or the
	// account's storage is exhausted.
	ErrLogFull = errors.New("eventlog: event log full")
	// ErrUnknownDurable reports a durable subscription that does not
	// exist (MustExist, DurableInfo, DeleteDurable).
	ErrUnknownDurable = errors.New("eventlog: unknown durable subscription")
	// ErrInvalidOption reports an option value that cannot be used: a
	// bad event id, durable name, projection name, delivery setting or
	// log configuration.
	ErrInvalidOption = errors.New("eventlog: invalid option")
	// ErrInvalidName reports an event name or pattern that is not valid.
	ErrInvalidName = errors.New("eventlog: invalid event name")
	// ErrClosed reports use of a closed Log or Subscription. It wraps
	// net.ErrClosed. A Log closed because its peer closed gives an
	// error that matches both ErrClosed and peer.ErrClosed.
	ErrClosed = fmt.Errorf("eventlog: closed: %w", net.ErrClosed)
)

// errPeerClosed is the error of a Log closed by its peer's Close.
var errPeerClosed error = peerClosedError{}

type peerClosedError struct{}

func (peerClosedError) Error() string        { return "eventlog: closed: the peer closed" }
func (peerClosedError) Is(target error) bool { return target == ErrClosed }
func (peerClosedError) Unwrap() error        { return peer.ErrClosed }

// invalid returns an error wrapping ErrInvalidOption.
func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidOption, fmt.Sprintf(format, a...))
}
