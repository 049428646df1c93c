package eventlog

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/internal/names"
	"github.com/peerbus/peerbus/peer"
)

// Subjects and headers of events (see docs/PROTOCOL.md).
const (
	subjEvt  = peer.Prefix + ".evt."  // peerbus.evt.<group>.<peer>.<name>
	subjTevt = peer.Prefix + ".tevt." // peerbus.tevt.<group>.<peer>.<name>
	// noGroup stands for the empty group in event subjects.
	noGroup = "_"

	// HeaderEventID carries the event's uuid.
	HeaderEventID = "Peerbus-Event-Id"
	// HeaderTime carries the event time, RFC 3339 with nanoseconds.
	HeaderTime = "Peerbus-Time"
	// HeaderMsgID is the JetStream dedupe id of a persisted event (its
	// event id).
	HeaderMsgID = "Nats-Msg-Id"
	// The codec of the payload is in peer.HeaderCodec (none: JSON).
)

// Event is one event as delivered to a subscriber.
type Event struct {
	// ID is the event's uuid (also its JetStream message id).
	ID string `json:"id"`
	// Name is the event name, e.g. "order.created".
	Name string `json:"name"`
	// Peer is the id of the emitting peer.
	Peer string `json:"peer"`
	// Group is the emitting peer's group ("" for none).
	Group string `json:"group,omitempty"`
	// Time is when the event was emitted.
	Time time.Time `json:"time"`
	// Seq is the event's sequence in the event log. It is set on events
	// read from the log (replays, log and durable subscriptions); it is 0
	// on live deliveries and transient events.
	Seq uint64 `json:"seq,omitempty"`
	// Transient marks an event sent with EmitTransient (not logged).
	Transient bool `json:"transient,omitempty"`
	// Deliveries counts the deliveries of the event to a durable
	// subscription, this one included (1 the first time; 0 elsewhere).
	Deliveries int `json:"deliveries,omitempty"`
	// Data is the encoded payload.
	Data []byte `json:"data"`

	codec peer.Codec
}

// Decode decodes the payload into v with the subscriber's codec.
func (e Event) Decode(v any) error {
	c := e.codec
	if c == nil {
		c = peer.JSON
	}
	return c.Unmarshal(e.Data, v)
}

// Ack tells what happened to an emitted event.
type Ack struct {
	// ID is the event's uuid.
	ID string `json:"id"`
	// Seq is the sequence in the event log (0 when not logged).
	Seq uint64 `json:"seq,omitempty"`
	// Time is the event time (for a duplicate, the stored event's time).
	Time time.Time `json:"time"`
	// Duplicate reports an event id the log already had (a retried
	// emit): the event was not stored again, Seq is the stored one's.
	Duplicate bool `json:"duplicate,omitempty"`
}

// Subject returns the subject of event name emitted by peer id in group
// (the empty group is "_").
func Subject(group, id, name string) string {
	if group == "" {
		group = noGroup
	}
	return subjEvt + group + "." + id + "." + name
}

// TransientSubject returns the subject of a transient event.
func TransientSubject(group, id, name string) string {
	if group == "" {
		group = noGroup
	}
	return subjTevt + group + "." + id + "." + name
}

// ValidateName checks an event name (pattern false) or a subscription
// pattern (pattern true, where '*' matches one token and a final '>'
// matches one or more). The error wraps ErrInvalidName.
func ValidateName(name string, pattern bool) error {
	if err := names.Tokens(name, pattern); err != nil {
		return fmt.Errorf("%w: %q: %v", ErrInvalidName, name, err)
	}
	return nil
}

// FilterSubjects returns the event subjects that select pattern from the
// given groups and peers (any when empty). The event log uses the same
// subjects as server-side consumer filters.
func FilterSubjects(pattern string, groups, peers []string) ([]string, error) {
	if err := ValidateName(pattern, true); err != nil {
		return nil, err
	}
	if len(groups) == 0 {
		groups = []string{"*"}
	}
	if len(peers) == 0 {
		peers = []string{"*"}
	}
	var out []string
	for _, g := range groups {
		if g == "" {
			g = noGroup
		} else if g != "*" {
			if err := names.Token(g); err != nil {
				return nil, invalid("group %q: %v", g, err)
			}
		}
		for _, id := range peers {
			if id != "*" {
				if err := names.Token(id); err != nil {
					return nil, invalid("peer id %q: %v", id, err)
				}
			}
			out = append(out, subjEvt+g+"."+id+"."+pattern)
		}
	}
	return out, nil
}

// ParseEvent decodes a persisted event message (subject, headers,
// data). It never panics; it returns an error for a subject that is not
// a persisted event subject (peerbus.evt.…).
func ParseEvent(m *nats.Msg) (Event, error) {
	return parseEvent(m.Subject, m.Header, m.Data, false)
}

// parseEvent decodes an event from its parts; transient allows the
// transient subject space too.
func parseEvent(subject string, h nats.Header, data []byte, transient bool) (Event, error) {
	rest, ok := strings.CutPrefix(subject, subjEvt)
	tr := false
	if !ok && transient {
		rest, ok = strings.CutPrefix(subject, subjTevt)
		tr = ok
	}
	if !ok {
		return Event{}, fmt.Errorf("eventlog: %q is not an event subject", subject)
	}
	group, rest, ok1 := strings.Cut(rest, ".")
	id, name, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || group == "" || id == "" || name == "" {
		return Event{}, fmt.Errorf("eventlog: %q is not an event subject", subject)
	}
	e := Event{Group: group, Peer: id, Name: name, Data: data, Transient: tr}
	if e.Group == noGroup {
		e.Group = ""
	}
	if tr && h.Get(HeaderEventID) == "" {
		// A JSON transient event: the envelope has the id and time.
		id, t, d, err := parseEnvelope(data)
		if err != nil {
			return Event{}, fmt.Errorf("%w (subject %q)", err, subject)
		}
		e.ID, e.Time, e.Data = id, t, d
		return e, nil
	}
	if h != nil {
		e.ID = h.Get(HeaderEventID)
		if t, ok := parseTime([]byte(h.Get(HeaderTime))); ok {
			e.Time = t
		}
	}
	return e, nil
}
