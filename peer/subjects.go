package peer

import (
	"fmt"

	"github.com/peerbus/peerbus/internal/names"
)

// Subject layout (see docs/PROTOCOL.md). Every subject starts with
// Prefix.
const (
	// Prefix starts every peerbus subject.
	Prefix = "peerbus"

	subjCall     = Prefix + ".call."     // peerbus.call.<peer>.<tag>
	subjAny      = Prefix + ".any."      // peerbus.any.<tag> (queue group)
	subjGroupAny = Prefix + ".gany."     // peerbus.gany.<group>.<tag> (queue group)
	subjAll      = Prefix + ".all."      // peerbus.all.<tag> (fan-out)
	subjPresence = Prefix + ".presence." // peerbus.presence.<kind>.<peer>
	// PresenceQuerySubject is answered by every peer with its Info.
	PresenceQuerySubject = Prefix + ".presence.query"
	// queueGroup is the queue group of the any subjects.
	queueGroup = "peerbus"
)

// Header names used on calls and replies (package eventlog adds those
// of events).
const (
	HeaderCaller   = "Peerbus-Caller"   // caller peer id (requests; may be empty)
	HeaderCodec    = "Peerbus-Codec"    // codec name of the payload (requests and events)
	HeaderDeadline = "Peerbus-Deadline" // caller deadline, Unix nanoseconds
	HeaderGroup    = "Peerbus-Group"    // group filter for fan-out calls
	HeaderPeer     = "Peerbus-Peer"     // responder peer id
	HeaderStatus   = "Peerbus-Status"   // "ok" or "error" on replies
)

// CallSubject returns the subject on which peer id serves tag.
func CallSubject(id, tag string) string { return subjCall + id + "." + tag }

// AnySubject returns the queue subject of tag (one peer answers).
func AnySubject(tag string) string { return subjAny + tag }

// GroupAnySubject returns the queue subject of tag in group (one peer of
// the group answers). The group is one token and the subject's second
// token is "gany", so it never matches an any subject.
func GroupAnySubject(group, tag string) string { return subjGroupAny + group + "." + tag }

// AllSubject returns the fan-out subject of tag (every peer answers).
func AllSubject(tag string) string { return subjAll + tag }

// ValidateTag checks that tag can be used as a subject suffix: one or
// more dot-separated non-empty tokens with no whitespace, '*' or '>'.
func ValidateTag(tag string) error {
	if err := names.Tokens(tag, false); err != nil {
		return fmt.Errorf("%w: %q: %v", ErrInvalidTag, tag, err)
	}
	return nil
}
