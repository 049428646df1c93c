package peer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors returned by this package. Match them with errors.Is.
var (
	// ErrNoSuchTag reports a call of a tag the target peer does not
	// offer. The concrete error is a *NoSuchTagError listing the tags the
	// peer does offer.
	ErrNoSuchTag = errors.New("peer: no such tag")
	// ErrNoResponders reports that no peer offering the tag (or no peer
	// with the given id) is reachable on the bus.
	ErrNoResponders = errors.New("peer: no responders")
	// ErrTimeout reports a call that got no reply within its deadline.
	// It also matches context.DeadlineExceeded.
	ErrTimeout = errors.New("peer: timeout")
	// ErrPayloadTooLarge reports arguments or a result larger than the
	// bus accepts; nothing was sent.
	ErrPayloadTooLarge = errors.New("peer: payload too large")
	// ErrBadRequest reports a call whose arguments the remote peer could
	// not decode.
	ErrBadRequest = errors.New("peer: bad request")
	// ErrInvalidTag reports a tag that is not a valid subject suffix.
	ErrInvalidTag = errors.New("peer: invalid tag")
	// ErrInvalidOption reports an option value or combination that
	// cannot be used: an invalid peer option (New), or call option
	// (Call, CallAll).
	ErrInvalidOption = errors.New("peer: invalid option")
	// ErrDuplicateTag reports a second registration of a tag on a peer.
	ErrDuplicateTag = errors.New("peer: tag already registered")
	// ErrClosed reports use of a closed peer. It wraps net.ErrClosed.
	ErrClosed = errClosed
	// ErrBusy is matched (errors.Is) by the reply of a peer that runs
	// as many calls of the tag as its limit allows (see
	// Options.TagConcurrency): the call was refused at once, without
	// running; it may be retried later or elsewhere.
	ErrBusy = errors.New("peer: busy")
	// ErrPanic is matched (errors.Is) by a RemoteError caused by a panic
	// in the remote function.
	ErrPanic = errors.New("peer: remote panic")
	// ErrInfoTooLarge reports a peer description (Info) whose JSON would
	// exceed MaxInfoBytes: a name too long, or too many long tags.
	ErrInfoTooLarge = errors.New("peer: info too large")
	// ErrTooManyTags reports a registration beyond MaxTags tags.
	ErrTooManyTags = errors.New("peer: too many tags")
	// ErrTooManyPeers reports a presence query or view that reached
	// MaxPeers peers: the list returned with it is incomplete.
	ErrTooManyPeers = errors.New("peer: too many peers")
)

// Error codes carried in error replies (see docs/PROTOCOL.md).
const (
	CodeError       = "error"       // the function returned an error
	CodePanic       = "panic"       // the function panicked
	CodeNoSuchTag   = "no_such_tag" // the peer does not offer the tag
	CodeBadRequest  = "bad_request" // arguments could not be decoded
	CodeTooLarge    = "too_large"   // the result exceeds the max payload
	CodeTimeout     = "timeout"     // the function exceeded the caller's deadline
	CodeCanceled    = "canceled"    // the function was canceled (peer closing)
	CodeUnavailable = "unavailable" // the peer is shutting down or overloaded
	CodeBusy        = "busy"        // the tag runs as many calls as its limit allows
)

// RemoteError is the error of a call that ran and failed: the function
// returned an error or panicked, on a remote peer or locally (a local
// pass-through call gives the same error a remote call would).
type RemoteError struct {
	// Peer is the id of the peer that ran the function.
	Peer string `json:"peer"`
	// Tag is the tag that was called.
	Tag string `json:"tag"`
	// Code classifies the failure: one of the Code* constants.
	Code string `json:"code"`
	// Type is the Go type name of the error (e.g. "*fs.PathError"), or of
	// the panic value. For bad_request it is the type of the decoding
	// error (e.g. "*json.SyntaxError"); for the refusals a peer answers
	// without running a function, the name of the matching sentinel
	// ("peer.ErrNoSuchTag", "peer.ErrBadRequest" for an unknown codec,
	// "peer.ErrPayloadTooLarge" for a result too large).
	Type string `json:"type"`
	// Message is the error's text.
	Message string `json:"message"`
	// Stack is the remote stack: the goroutine stack at the panic, or the
	// handler's location for a returned error.
	Stack string `json:"stack,omitempty"`
	// Tags lists the tags the peer offers (code no_such_tag only).
	Tags []string `json:"tags,omitempty"`

	cause error // the original error, for local calls only
}

// Error implements error.
func (e *RemoteError) Error() string {
	who := e.Peer
	if len(who) > 8 {
		who = who[:8]
	}
	switch e.Code {
	case CodePanic:
		return fmt.Sprintf("peer %s: %s panicked: %s", who, e.Tag, e.Message)
	case CodeError:
		return fmt.Sprintf("peer %s: %s: %s (%s)", who, e.Tag, e.Message, e.Type)
	default:
		return fmt.Sprintf("peer %s: %s: %s", who, e.Tag, e.Message)
	}
}

// Unwrap returns the original error for local calls.
func (e *RemoteError) Unwrap() error { return e.cause }

// Is matches the sentinel that corresponds to the error's code.
func (e *RemoteError) Is(target error) bool {
	switch e.Code {
	case CodePanic:
		return target == ErrPanic
	case CodeNoSuchTag:
		return target == ErrNoSuchTag
	case CodeBadRequest:
		return target == ErrBadRequest
	case CodeTooLarge:
		return target == ErrPayloadTooLarge
	case CodeTimeout:
		return target == ErrTimeout || target == context.DeadlineExceeded
	case CodeCanceled:
		return target == context.Canceled
	case CodeUnavailable:
		return target == ErrNoResponders
	case CodeBusy:
		return target == ErrBusy
	}
	return false
}

// NoSuchTagError is returned when the target peer does not offer the
// tag. It matches ErrNoSuchTag and lists the tags the peer has.
type NoSuchTagError = RemoteError

// decodeError parses an error reply body. It never panics and rejects
// bodies that are not an error object.
func decodeError(data []byte) (*RemoteError, error) {
	var e RemoteError
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("peer: malformed error reply: %w", err)
	}
	if e.Code == "" {
		return nil, errors.New("peer: malformed error reply: no code")
	}
	return &e, nil
}

// typeName returns a readable Go type name for v.
func typeName(v any) string {
	s := fmt.Sprintf("%T", v)
	return strings.TrimSpace(s)
}
