package peer

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
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

	codec Codec
}

// Decode decodes the payload into v with the subscriber's codec.
func (e Event) Decode(v any) error {
	c := e.codec
	if c == nil {
		c = JSON
	}
	return c.Unmarshal(e.Data, v)
}

// EventAck tells what happened to an emitted event.
type EventAck struct {
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

// EmitOption changes one emit.
type EmitOption func(*emitConfig)

type emitConfig struct{ id string }

// WithEventID sets the event id instead of a new uuid. Emitting again
// with the same id within the log's Duplicates window stores the event
// once and returns the first copy's sequence: use it to retry an emit
// whose outcome is unknown. The id must be 1 to 256 bytes with no
// whitespace.
func WithEventID(id string) EmitOption { return func(c *emitConfig) { c.id = id } }

// Emit stores event name with payload v (encoded with the peer's codec;
// a json.RawMessage passes through) in the event log, which also
// delivers it to live subscribers. It returns once the log has the
// event, with its sequence. While JetStream is not current (after a
// start or a leader change) it retries with a backoff, within ctx
// (bounded by CallTimeout). Without JetStream on the bus it returns
// ErrNoLog; a full log that discards new events gives ErrLogFull.
func (p *Peer) Emit(ctx context.Context, name string, v any, opts ...EmitOption) (EventAck, error) {
	buf := getEventBuf()
	defer eventBufs.Put(buf) // the message is not used after publish
	m, ack, err := p.eventMsg(buf, true, name, v, opts)
	if err != nil {
		return EventAck{}, err
	}
	pa, err := p.evlog.publish(ctx, m)
	if err != nil {
		return EventAck{}, fmt.Errorf("peer: emit %q: %w", name, err)
	}
	return p.finishAck(ctx, ack, pa), nil
}

// EmitTransient publishes event name without storing it: fire and
// forget, for events nobody needs to read again (progress, metrics). It
// goes to the transient subject space (peerbus.tevt.<group>.<peer>.<name>)
// that the log does not capture; live subscriptions receive it, log
// subscriptions, replays and projections do not. With the JSON codec
// the message has no headers: its payload is a small JSON envelope with
// the id, the time and the value (see docs/PROTOCOL.md). It returns
// once the event is queued on the connection (Conn().Flush waits until
// the bus has it); the ack's Seq is 0.
func (p *Peer) EmitTransient(ctx context.Context, name string, v any, opts ...EmitOption) (EventAck, error) {
	if err := ctx.Err(); err != nil {
		return EventAck{}, err
	}
	buf := getEventBuf()
	defer eventBufs.Put(buf) // PublishMsg copies the message
	m, ack, err := p.eventMsg(buf, false, name, v, opts)
	if err != nil {
		return EventAck{}, err
	}
	err = p.nc.PublishMsg(m)
	if cap(buf.env) > maxEnvelope {
		buf.env = nil
	}
	if err != nil {
		return EventAck{}, fmt.Errorf("peer: emit %q: %w", name, err)
	}
	return ack, nil
}

// TransientSubject returns the subject of a transient event.
func TransientSubject(group, id, name string) string {
	if group == "" {
		group = noGroup
	}
	return subjTevt + group + "." + id + "." + name
}

// eventBuf holds an event message, its header values and the payload
// of a transient event, reused (see eventBufs) by the emits that are
// done with the message when they return.
type eventBuf struct {
	m    nats.Msg
	hdr  nats.Header
	vals [3]string
	env  []byte
}

var eventBufs = sync.Pool{New: func() any { return &eventBuf{hdr: make(nats.Header, 4)} }}

func getEventBuf() *eventBuf { return eventBufs.Get().(*eventBuf) }

// eventMsg builds the message of an event, persisted (log subject, with
// the dedupe id) or transient, in buf (nil: a new one).
func (p *Peer) eventMsg(buf *eventBuf, persist bool, name string, v any, opts []EmitOption) (*nats.Msg, EventAck, error) {
	if p.isClosed() {
		return nil, EventAck{}, ErrClosed
	}
	subj, err := p.evlog.subjects(name)
	if err != nil {
		return nil, EventAck{}, err
	}
	var ec emitConfig
	for _, o := range opts {
		o(&ec)
	}
	if ec.id != "" && (len(ec.id) > 256 || strings.ContainsAny(ec.id, " \t\r\n\x00")) {
		return nil, EventAck{}, fmt.Errorf("%w: event id %q", ErrInvalidOption, ec.id)
	}
	data, err := p.opts.Codec.Marshal(v)
	if err != nil {
		return nil, EventAck{}, fmt.Errorf("peer: encode event %q: %w", name, err)
	}
	if ec.id == "" {
		ec.id = newEventID()
	}
	ack := EventAck{ID: ec.id, Time: time.Now().UTC()}
	if buf == nil {
		buf = &eventBuf{hdr: make(nats.Header, 4)}
	}
	if !persist && p.codecVal == nil && utf8.ValidString(ack.ID) {
		// A JSON transient event: no headers, the envelope carries the
		// id and the time (see docs/PROTOCOL.md). An id that is not
		// UTF-8 cannot be a JSON string: it goes in the headers.
		buf.env = appendEnvelope(buf.env[:0], ack.ID, ack.Time, data)
		buf.m = nats.Msg{Subject: subj.transient, Data: buf.env}
		if len(buf.env) > int(p.nc.MaxPayload())-len(buf.m.Subject)-16 {
			return nil, EventAck{}, fmt.Errorf("%w: event of %d bytes exceeds the bus max payload of %d bytes",
				ErrPayloadTooLarge, len(data), p.nc.MaxPayload())
		}
		return &buf.m, ack, nil
	}
	// One backing array for the header values; the id slice is shared
	// by the two id headers (nothing writes to them).
	vals := &buf.vals
	*vals = [3]string{ack.ID, formatTime(ack.Time), p.opts.Codec.Name()}
	h := buf.hdr
	clear(h)
	buf.m = nats.Msg{Data: data, Header: h}
	m := &buf.m
	if persist {
		m.Subject = subj.persisted
		m.Header[HeaderMsgID] = vals[0:1:1]
	} else {
		m.Subject = subj.transient
	}
	m.Header[HeaderEventID] = vals[0:1:1]
	m.Header[HeaderTime] = vals[1:2:2]
	m.Header[HeaderCodec] = vals[2:3:3]
	hdr := 16 + 3*4 + len(HeaderEventID) + len(HeaderTime) + len(HeaderCodec) + len(vals[0]) + len(vals[1]) + len(vals[2])
	if persist {
		hdr += 4 + len(HeaderMsgID) + len(vals[0])
	}
	if len(data) > int(p.nc.MaxPayload())-hdr-len(m.Subject) {
		return nil, EventAck{}, fmt.Errorf("%w: event of %d bytes exceeds the bus max payload of %d bytes",
			ErrPayloadTooLarge, len(data), p.nc.MaxPayload())
	}
	return m, ack, nil
}

// maxEnvelope bounds the envelope buffer a pooled eventBuf keeps.
const maxEnvelope = 64 << 10

// appendEnvelope appends the envelope of a JSON transient event:
// {"id":<id>,"time":<time>,"data":<data>}, data being JSON already.
func appendEnvelope(b []byte, id string, t time.Time, data []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, id)
	b = append(b, `,"time":"`...)
	b = appendTime(b, t)
	b = append(b, `","data":`...)
	b = append(b, data...)
	return append(b, '}')
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	for i := range len(s) {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7f {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// parseEnvelope splits the envelope of a JSON transient event. The
// layout peerbus writes is read without a JSON decoder; any other
// layout of the same object is decoded.
func parseEnvelope(p []byte) (id string, t time.Time, data []byte, err error) {
	if rest, ok := bytes.CutPrefix(p, []byte(`{"id":"`)); ok {
		if i := bytes.IndexByte(rest, '"'); i >= 0 && plainJSONString(rest[:i]) {
			idb := rest[:i]
			if rest, ok := bytes.CutPrefix(rest[i+1:], []byte(`,"time":"`)); ok {
				if j := bytes.IndexByte(rest, '"'); j >= 0 {
					ts := rest[:j]
					if d, ok := bytes.CutPrefix(rest[j+1:], []byte(`,"data":`)); ok && len(d) > 1 && d[len(d)-1] == '}' {
						if t, ok := parseTime(ts); ok {
							return string(idb), t, d[:len(d)-1], nil
						}
					}
				}
			}
		}
	}
	var env struct {
		ID   string          `json:"id"`
		Time time.Time       `json:"time"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(p, &env); err != nil {
		return "", time.Time{}, nil, fmt.Errorf("peer: transient event envelope: %w", err)
	}
	if env.Data == nil {
		return "", time.Time{}, nil, errors.New("peer: transient event envelope without data")
	}
	return env.ID, env.Time, env.Data, nil
}

// plainJSONString reports whether b is the content of a JSON string as
// it is, with nothing escaped: UTF-8 without '\\' and control
// characters.
func plainJSONString(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == '\\' {
			return false
		}
	}
	return utf8.Valid(b)
}

// parseTime parses the RFC 3339 time formatTime writes
// ("2006-01-02T15:04:05.999999999Z"), quickly, and any other RFC 3339
// time with time.Parse.
func parseTime(b []byte) (time.Time, bool) {
	num := func(s []byte) (int, bool) {
		n := 0
		for _, c := range s {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	if len(b) >= 20 && b[4] == '-' && b[7] == '-' && b[10] == 'T' && b[13] == ':' && b[16] == ':' && b[len(b)-1] == 'Z' {
		y, ok1 := num(b[0:4])
		mo, ok2 := num(b[5:7])
		d, ok3 := num(b[8:10])
		h, ok4 := num(b[11:13])
		mi, ok5 := num(b[14:16])
		sec, ok6 := num(b[17:19])
		frac := b[19 : len(b)-1]
		ns, ok7 := 0, true
		if len(frac) > 0 {
			ok7 = frac[0] == '.' && len(frac) >= 2 && len(frac) <= 10
			if ok7 {
				ns, ok7 = num(frac[1:])
				for range 10 - len(frac) {
					ns *= 10
				}
			}
		}
		if ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && ok7 && mo >= 1 && mo <= 12 && d >= 1 && d <= 31 && h < 24 && mi < 60 && sec < 60 {
			t := time.Date(y, time.Month(mo), d, h, mi, sec, ns, time.UTC)
			if t.Day() == d { // not a 31st of a shorter month
				return t, true
			}
		}
	}
	t, err := time.Parse(time.RFC3339Nano, string(b))
	return t, err == nil
}

// formatTime formats t in UTC as RFC 3339 with nanoseconds, trailing
// zeros of the fraction removed (time.RFC3339Nano), without the cost of
// the general formatter.
func formatTime(t time.Time) string {
	var b [32]byte
	return string(appendTime(b[:0], t))
}

// appendTime appends formatTime(t) to b.
func appendTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	y, mo, d := t.Date()
	if y < 0 || y > 9999 {
		return t.AppendFormat(b, time.RFC3339Nano)
	}
	h, mi, s := t.Clock()
	ns := t.Nanosecond()
	two := func(v int) (byte, byte) { return byte('0' + v/10), byte('0' + v%10) }
	var a [30]byte
	a[0], a[1] = two(y / 100)
	a[2], a[3] = two(y % 100)
	a[4] = '-'
	a[5], a[6] = two(int(mo))
	a[7] = '-'
	a[8], a[9] = two(d)
	a[10] = 'T'
	a[11], a[12] = two(h)
	a[13] = ':'
	a[14], a[15] = two(mi)
	a[16] = ':'
	a[17], a[18] = two(s)
	n := 19
	if ns != 0 {
		a[19] = '.'
		for i := 28; i >= 20; i-- {
			a[i] = byte('0' + ns%10)
			ns /= 10
		}
		n = 29
		for a[n-1] == '0' {
			n--
		}
	}
	a[n] = 'Z'
	return append(b, a[:n+1]...)
}

// newEventID returns a random (version 4) uuid. Its bits come from the
// runtime's ChaCha8 generator, seeded by the system: ids are unique and
// unpredictable, and much cheaper than reading the system's generator
// for every event.
func newEventID() string {
	var u uuid.UUID
	binary.LittleEndian.PutUint64(u[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(u[8:], rand.Uint64())
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return u.String()
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
		return Event{}, fmt.Errorf("peer: %q is not an event subject", subject)
	}
	group, rest, ok1 := strings.Cut(rest, ".")
	id, name, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || group == "" || id == "" || name == "" {
		return Event{}, fmt.Errorf("peer: %q is not an event subject", subject)
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

// EventHandler handles one event. A returned error is reported to the
// peer's OnError and counted on the subscription; it does not stop it.
// On a durable subscription the error also means "not done": the event
// is delivered again later (see Durable).
type EventHandler func(ctx context.Context, e Event) error

// SubOption filters a subscription, or selects where in the event log
// it starts (see FromStart, FromSeq, FromTime, Durable).
type SubOption func(*subConfig)

type subConfig struct {
	peers  []string
	groups []string
	logConfig
}

// FromPeers keeps only events emitted by these peers.
func FromPeers(ids ...string) SubOption {
	return func(c *subConfig) { c.peers = append(c.peers, ids...) }
}

// FromGroups keeps only events emitted by peers of these groups.
func FromGroups(groups ...string) SubOption {
	return func(c *subConfig) { c.groups = append(c.groups, groups...) }
}

// Subscription is an event subscription: live, or reading the log.
type Subscription struct {
	p      *Peer
	subs   []*nats.Subscription
	errs   atomic.Uint64
	closed atomic.Bool
	wg     sync.WaitGroup
	log    *logSub // nil for a live subscription
}

// Errors returns how many handler errors (and panics) the subscription
// has reported.
func (s *Subscription) Errors() uint64 { return s.errs.Load() }

// Unsubscribe stops delivery. For a log subscription it waits for a
// running handler to return (unless called from that handler).
func (s *Subscription) Unsubscribe() error {
	err := s.stop()
	s.wait()
	return err
}

// stop stops delivery without waiting for a running handler.
func (s *Subscription) stop() error {
	if s.closed.Swap(true) {
		return nil
	}
	if s.log != nil {
		s.log.stop()
	}
	var errs []error
	for _, ns := range s.subs {
		if err := ns.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
			errs = append(errs, err)
		}
	}
	s.p.mu.Lock()
	delete(s.p.events, s)
	s.p.mu.Unlock()
	return errors.Join(errs...)
}

// FilterSubjects returns the event subjects that select pattern from the
// given groups and peers (any when empty). The event log uses the same
// subjects as server-side consumer filters.
func FilterSubjects(pattern string, groups, peers []string) ([]string, error) {
	if err := ValidateEventName(pattern, true); err != nil {
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
			if err := validToken(g); err != nil {
				return nil, fmt.Errorf("peer: invalid group %q: %v", g, err)
			}
		}
		for _, id := range peers {
			if id != "*" {
				if err := validToken(id); err != nil {
					return nil, fmt.Errorf("peer: invalid peer id %q: %v", id, err)
				}
			}
			out = append(out, subjEvt+g+"."+id+"."+pattern)
		}
	}
	return out, nil
}

// Subscribe delivers events whose name matches pattern ('*' matches
// one dot-separated token, a final '>' one or more) to h, one at a time
// per subscription, in order. Filters run on the server (subject
// filters).
//
// By default the subscription is live: it receives the events emitted
// from now on, persisted and transient, as the bus delivers them (Seq
// is 0). FromStart, FromSeq or FromTime make it read the event log
// first and then follow it (persisted events only, with Seq); a handler
// error is reported and the subscription goes on. Durable makes it a
// durable subscription: acknowledged delivery that resumes where it
// left off, with redelivery of failed events (see Durable).
func (p *Peer) Subscribe(pattern string, h EventHandler, opts ...SubOption) (*Subscription, error) {
	if h == nil {
		return nil, errors.New("peer: nil event handler")
	}
	var cfg subConfig
	for _, o := range opts {
		o(&cfg)
	}
	subjects, err := FilterSubjects(pattern, cfg.groups, cfg.peers)
	if err != nil {
		return nil, err
	}
	if cfg.fromLog() {
		return p.subscribeLog(pattern, subjects, h, cfg)
	}
	if err := cfg.checkLive(); err != nil {
		return nil, err
	}
	// Transient events come on the same subjects in their own space.
	for _, subj := range subjects[:len(subjects):len(subjects)] {
		subjects = append(subjects, subjTevt+strings.TrimPrefix(subj, subjEvt))
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	s := &Subscription{p: p}
	p.events[s] = struct{}{}
	p.mu.Unlock()
	// One delivery goroutine for all subjects keeps handler calls serial.
	var mu sync.Mutex
	for _, subj := range subjects {
		ns, err := p.nc.Subscribe(subj, func(m *nats.Msg) {
			mu.Lock()
			defer mu.Unlock()
			p.deliver(s, h, m)
		})
		if err != nil {
			_ = s.Unsubscribe()
			return nil, fmt.Errorf("peer: subscribe %q: %w", subj, err)
		}
		s.subs = append(s.subs, ns)
	}
	if err := p.nc.Flush(); err != nil {
		_ = s.Unsubscribe()
		return nil, fmt.Errorf("peer: subscribe: %w", err)
	}
	return s, nil
}

func (p *Peer) deliver(s *Subscription, h EventHandler, m *nats.Msg) {
	if s.closed.Load() {
		return
	}
	e, err := parseEvent(m.Subject, m.Header, m.Data, true)
	if err != nil {
		s.errs.Add(1)
		p.reportError(err)
		return
	}
	e.codec = p.opts.Codec
	if err := p.runEventHandler(p.ctx, h, e); err != nil {
		s.errs.Add(1)
		p.handlerErrors.Add(1)
		p.reportError(fmt.Errorf("peer: event handler for %q (event %s from %s): %w", e.Name, e.ID, e.Peer, err))
	}
}

func (p *Peer) runEventHandler(ctx context.Context, h EventHandler, e Event) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = panicError(p.id, e.Name, r)
		}
	}()
	return h(ctx, e)
}

// On subscribes with a typed handler: each payload is decoded into T
// first; a payload that does not decode is a reported handler error.
func On[T any](p *Peer, pattern string, h func(ctx context.Context, e Event, v T) error, opts ...SubOption) (*Subscription, error) {
	return p.Subscribe(pattern, func(ctx context.Context, e Event) error {
		var v T
		if err := e.Decode(&v); err != nil {
			return fmt.Errorf("decode payload: %w", err)
		}
		return h(ctx, e, v)
	}, opts...)
}

// HandlerErrors returns how many event handler errors the peer reported.
func (p *Peer) HandlerErrors() uint64 { return p.handlerErrors.Load() }
