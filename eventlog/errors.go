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
	// ErrNoJetStream reports a bus without JetStream (a node started
	// without it, a NATS server or account without JetStream). It wraps
	// ErrNoLog; the other ErrNoLog errors are a JetStream that did not
	// answer in time.
	ErrNoJetStream = fmt.Errorf("%w: JetStream is not enabled on the bus", ErrNoLog)
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
	// ErrNoQuorum reports that the event log's cluster lost its quorum:
	// fewer than a majority of the log's nodes are reachable, so nothing
	// can be stored until enough of them are back. The error is a
	// *QuorumError, with the counts.
	ErrNoQuorum = errors.New("eventlog: the cluster lost its quorum")
	// ErrUnknownOutcome reports an emit whose outcome is unknown: the
	// log did not say whether it stored the event (no answer in time,
	// or "duplicate message id is in process"), and it may store it
	// later, once it recovers. Emitting the event again with the same
	// event id is safe: the log stores it once within its dedupe
	// window. The error is an *OutcomeError, with the id.
	ErrUnknownOutcome = errors.New("eventlog: outcome unknown")
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

// QuorumError reports that the event log's cluster lost its quorum. It
// matches ErrNoQuorum and wraps the error of the failed operation.
type QuorumError struct {
	// Reachable is how many of the log's Nodes answer (its leader
	// included). When no node answered as the log's leader, Reachable
	// counts the servers that answer a ping (0: unknown) and Nodes is
	// the log's replica count as last seen (0: unknown).
	Reachable, Nodes int
	// NoLeader reports that no node answered as the log's leader.
	NoLeader bool
	// Err is the error of the failed operation.
	Err error
}

func (e *QuorumError) Error() string {
	if e.NoLeader {
		var counts string
		switch {
		case e.Reachable > 0 && e.Nodes > 0:
			counts = fmt.Sprintf("; %d of its %d nodes are reachable, %d are needed", e.Reachable, e.Nodes, e.Nodes/2+1)
		case e.Reachable > 0:
			counts = fmt.Sprintf("; %d nodes are reachable", e.Reachable)
		case e.Nodes > 0:
			counts = fmt.Sprintf("; %d of its %d nodes are needed", e.Nodes/2+1, e.Nodes)
		}
		return fmt.Sprintf("%v: no node answers as the event log's leader%s (%v)", ErrNoQuorum, counts, e.Err)
	}
	return fmt.Sprintf("%v: %d of the event log's %d nodes are reachable, %d are needed (%v)",
		ErrNoQuorum, e.Reachable, e.Nodes, e.Nodes/2+1, e.Err)
}

// Is reports whether target is ErrNoQuorum.
func (e *QuorumError) Is(target error) bool { return target == ErrNoQuorum }

// Unwrap returns the error of the failed operation.
func (e *QuorumError) Unwrap() error { return e.Err }

// OutcomeError reports an emit whose outcome is unknown (see
// ErrUnknownOutcome). It matches ErrUnknownOutcome and wraps the error
// of the last attempt.
type OutcomeError struct {
	// ID is the event id: emit the event again with WithEventID(ID).
	ID string
	// Err is the error of the last attempt.
	Err error
}

func (e *OutcomeError) Error() string {
	return fmt.Sprintf("%v: event %s may be stored, now or once the log recovers; emitting it again with the same event id is safe, it is stored once: %v",
		ErrUnknownOutcome, e.ID, e.Err)
}

// Is reports whether target is ErrUnknownOutcome.
func (e *OutcomeError) Is(target error) bool { return target == ErrUnknownOutcome }

// Unwrap returns the error of the last attempt.
func (e *OutcomeError) Unwrap() error { return e.Err }
