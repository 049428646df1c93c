package peer

import (
	"fmt"
	"strings"
)

// Subject layout (see docs/PROTOCOL.md). Every subject starts with
// Prefix.
const (
	// Prefix starts every peerbus subject.
	Prefix = "peerbus"

	subjCall     = Prefix + ".call."     // peerbus.call.<peer>.<tag>
	subjAny      = Prefix + ".any."      // peerbus.any.<tag> (queue group)
	subjAll      = Prefix + ".all."      // peerbus.all.<tag> (fan-out)
	subjEvt      = Prefix + ".evt."      // peerbus.evt.<group>.<peer>.<name>
	subjPresence = Prefix + ".presence." // peerbus.presence.<kind>.<peer>
	// PresenceQuerySubject is answered by every peer with its Info.
	PresenceQuerySubject = Prefix + ".presence.query"
	// EventSubjects matches every event subject (the event log captures it).
	EventSubjects = Prefix + ".evt.>"
	// queueGroup is the queue group of the any subjects.
	queueGroup = "peerbus"
	// noGroup stands for the empty group in event subjects.
	noGroup = "_"
)

// Header names used on calls, replies and events.
const (
	HeaderCaller   = "Peerbus-Caller"   // caller peer id (requests; may be empty)
	HeaderCodec    = "Peerbus-Codec"    // codec name of the payload
	HeaderDeadline = "Peerbus-Deadline" // caller deadline, Unix nanoseconds
	HeaderGroup    = "Peerbus-Group"    // group filter for fan-out calls
	HeaderPeer     = "Peerbus-Peer"     // responder / emitter peer id
	HeaderStatus   = "Peerbus-Status"   // "ok" or "error" on replies
	HeaderEventID  = "Peerbus-Event-Id" // event uuid
	HeaderTime     = "Peerbus-Time"     // event time, RFC 3339 with nanoseconds
	HeaderMsgID    = "Nats-Msg-Id"      // JetStream dedupe id (= event id)
)

// CallSubject returns the subject on which peer id serves tag.
func CallSubject(id, tag string) string { return subjCall + id + "." + tag }

// AnySubject returns the queue subject of tag (one peer answers).
func AnySubject(tag string) string { return subjAny + tag }

// AllSubject returns the fan-out subject of tag (every peer answers).
func AllSubject(tag string) string { return subjAll + tag }

// EventSubject returns the subject of event name emitted by peer id in
// group (empty group is "_").
func EventSubject(group, id, name string) string {
	if group == "" {
		group = noGroup
	}
	return subjEvt + group + "." + id + "." + name
}

// ValidateTag checks that tag can be used as a subject suffix: one or
// more dot-separated non-empty tokens with no whitespace, '*' or '>'.
func ValidateTag(tag string) error {
	if err := validTokens(tag, false); err != nil {
		return fmt.Errorf("%w: %q: %v", ErrInvalidTag, tag, err)
	}
	return nil
}

// ValidateEventName checks an event name (pattern false) or a
// subscription pattern (pattern true, where '*' matches one token and a
// final '>' matches one or more).
func ValidateEventName(name string, pattern bool) error {
	if err := validTokens(name, pattern); err != nil {
		return fmt.Errorf("%w: %q: %v", ErrInvalidName, name, err)
	}
	return nil
}

// validToken checks a single token (group names, peer ids).
func validToken(s string) error {
	if s == "" {
		return fmt.Errorf("empty")
	}
	if strings.ContainsAny(s, ".*> \t\r\n") {
		return fmt.Errorf("must not contain '.', '*', '>' or whitespace")
	}
	return nil
}

func validTokens(s string, wildcards bool) error {
	if s == "" {
		return fmt.Errorf("empty")
	}
	if len(s) > 1024 {
		return fmt.Errorf("longer than 1024 bytes")
	}
	toks := strings.Split(s, ".")
	for i, t := range toks {
		if t == "" {
			return fmt.Errorf("empty token")
		}
		if strings.ContainsAny(t, " \t\r\n\x00") {
			return fmt.Errorf("whitespace in token %q", t)
		}
		if wildcards && (t == "*" || (t == ">" && i == len(toks)-1)) {
			continue
		}
		if strings.ContainsAny(t, "*>") {
			return fmt.Errorf("wildcard in token %q", t)
		}
	}
	return nil
}
