package peer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
	// Seq is the event's sequence in the event log (0 when not logged).
	Seq uint64 `json:"seq,omitempty"`
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
	// Time is the event time.
	Time time.Time `json:"time"`
}

// Emit publishes event name with payload v (encoded with the peer's
// codec; a json.RawMessage passes through). It returns once the bus has
// the event.
func (p *Peer) Emit(ctx context.Context, name string, v any) (EventAck, error) {
	m, ack, err := p.eventMsg(name, v)
	if err != nil {
		return EventAck{}, err
	}
	if err := p.nc.PublishMsg(m); err != nil {
		return EventAck{}, fmt.Errorf("peer: emit %q: %w", name, err)
	}
	ctx, cancel := p.callContext(ctx, callConfig{})
	defer cancel()
	if err := p.nc.FlushWithContext(ctx); err != nil {
		return EventAck{}, fmt.Errorf("peer: emit %q: %w", name, err)
	}
	return ack, nil
}

// eventMsg builds the message of an event.
func (p *Peer) eventMsg(name string, v any) (*nats.Msg, EventAck, error) {
	if p.isClosed() {
		return nil, EventAck{}, ErrClosed
	}
	if err := ValidateEventName(name, false); err != nil {
		return nil, EventAck{}, err
	}
	data, err := p.opts.Codec.Marshal(v)
	if err != nil {
		return nil, EventAck{}, fmt.Errorf("peer: encode event %q: %w", name, err)
	}
	ack := EventAck{ID: uuid.NewString(), Time: time.Now().UTC()}
	m := nats.NewMsg(EventSubject(p.opts.Group, p.id, name))
	m.Header.Set(HeaderEventID, ack.ID)
	m.Header.Set(HeaderMsgID, ack.ID)
	m.Header.Set(HeaderTime, ack.Time.Format(time.RFC3339Nano))
	m.Header.Set(HeaderCodec, p.opts.Codec.Name())
	if len(data) > p.maxData(m.Header)-len(m.Subject) {
		return nil, EventAck{}, fmt.Errorf("%w: event of %d bytes exceeds the bus max payload of %d bytes",
			ErrPayloadTooLarge, len(data), p.nc.MaxPayload())
	}
	m.Data = data
	return m, ack, nil
}

// ParseEvent decodes an event message (subject, headers, data). It never
// panics; it returns an error for a subject that is not an event subject.
func ParseEvent(m *nats.Msg) (Event, error) {
	rest, ok := strings.CutPrefix(m.Subject, subjEvt)
	if !ok {
		return Event{}, fmt.Errorf("peer: %q is not an event subject", m.Subject)
	}
	parts := strings.SplitN(rest, ".", 3)
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return Event{}, fmt.Errorf("peer: %q is not an event subject", m.Subject)
	}
	e := Event{Group: parts[0], Peer: parts[1], Name: parts[2], Data: m.Data}
	if e.Group == noGroup {
		e.Group = ""
	}
	if m.Header != nil {
		e.ID = m.Header.Get(HeaderEventID)
		if t, err := time.Parse(time.RFC3339Nano, m.Header.Get(HeaderTime)); err == nil {
			e.Time = t
		}
	}
	return e, nil
}

// EventHandler handles one event. A returned error is reported to the
// peer's OnError and counted on the subscription; it does not stop it.
type EventHandler func(ctx context.Context, e Event) error

// SubOption filters a subscription.
type SubOption func(*subConfig)

type subConfig struct {
	peers  []string
	groups []string
}

// FromPeers keeps only events emitted by these peers.
func FromPeers(ids ...string) SubOption {
	return func(c *subConfig) { c.peers = append(c.peers, ids...) }
}

// FromGroups keeps only events emitted by peers of these groups.
func FromGroups(groups ...string) SubOption {
	return func(c *subConfig) { c.groups = append(c.groups, groups...) }
}

// Subscription is a live event subscription.
type Subscription struct {
	p      *Peer
	subs   []*nats.Subscription
	errs   atomic.Uint64
	closed atomic.Bool
	wg     sync.WaitGroup
}

// Errors returns how many handler errors (and panics) the subscription
// has reported.
func (s *Subscription) Errors() uint64 { return s.errs.Load() }

// Unsubscribe stops delivery and waits for a running handler to return.
func (s *Subscription) Unsubscribe() error {
	if s.closed.Swap(true) {
		return nil
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

// Subscribe delivers live events whose name matches pattern ('*' matches
// one dot-separated token, a final '>' one or more) to h, one at a time
// per subscription, in the order the bus delivers them. Filters run on
// the server (subject filters).
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
	e, err := ParseEvent(m)
	if err != nil {
		s.errs.Add(1)
		p.reportError(err)
		return
	}
	e.codec = p.opts.Codec
	if err := p.runEventHandler(h, e); err != nil {
		s.errs.Add(1)
		p.handlerErrors.Add(1)
		p.reportError(fmt.Errorf("peer: event handler for %q (event %s from %s): %w", e.Name, e.ID, e.Peer, err))
	}
}

func (p *Peer) runEventHandler(h EventHandler, e Event) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = panicError(p.id, e.Name, r)
		}
	}()
	return h(p.ctx, e)
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
