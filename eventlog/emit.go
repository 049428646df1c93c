package eventlog

import (
	"context"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/peerbus/peerbus/peer"
)

// Emit stores event name with payload v (encoded with the peer's codec;
// a json.RawMessage passes through) in the event log, which also
// delivers it to live subscribers. It returns once the log has the
// event, with its sequence. While JetStream is not current (after a
// start or a leader change) it retries with a backoff, within ctx
// (bounded by the peer's CallTimeout). Without JetStream on the bus it
// returns ErrNoLog; a full log that discards new events gives
// ErrLogFull.
func (l *Log) Emit(ctx context.Context, name string, v any, opts ...EmitOption) (Ack, error) {
	buf := getEventBuf()
	defer putEventBuf(buf) // the message is not used after publish
	m, ack, err := l.eventMsg(buf, true, name, v, opts)
	if err != nil {
		return Ack{}, err
	}
	pa, err := l.publish(ctx, m)
	if err != nil {
		return Ack{}, fmt.Errorf("eventlog: emit %q: %w", name, err)
	}
	return l.finishAck(ctx, ack, pa), nil
}

// EmitTransient publishes event name without storing it: fire and
// forget, for events nobody needs to read again (progress, metrics). It
// goes to the transient subject space (peerbus.tevt.<group>.<peer>.<name>)
// that the log does not capture; live subscriptions receive it, log
// subscriptions, replays and projections do not. With the JSON codec
// the message has no headers: its payload is a small JSON envelope with
// the id, the time and the value (see docs/PROTOCOL.md). It returns
// once the event is queued on the connection (the peer's Conn().Flush
// waits until the bus has it); the ack's Seq is 0.
func (l *Log) EmitTransient(ctx context.Context, name string, v any, opts ...EmitOption) (Ack, error) {
	if err := ctx.Err(); err != nil {
		return Ack{}, err
	}
	buf := getEventBuf()
	defer putEventBuf(buf) // PublishMsg copies the message
	m, ack, err := l.eventMsg(buf, false, name, v, opts)
	if err != nil {
		return Ack{}, err
	}
	if es := buf.es; es.cached {
		err = l.publishTransient(ctx, es, m)
	} else {
		err = l.nc.PublishMsg(m) // a name beyond the cache: unchecked
	}
	if cap(buf.env) > maxEnvelope {
		buf.env = nil
	}
	if err != nil {
		return Ack{}, fmt.Errorf("eventlog: emit %q: %w", name, err)
	}
	return ack, nil
}

// eventBuf holds an event message, its header values and the payload
// of a transient event, reused (see eventBufs) by the emits that are
// done with the message when they return.
type eventBuf struct {
	es   *eventSubjects // the subjects of the event's name
	m    nats.Msg
	hdr  nats.Header
	vals [3]string
	env  []byte
}

var eventBufs = sync.Pool{New: func() any { return &eventBuf{hdr: make(nats.Header, 4)} }}

func getEventBuf() *eventBuf { return eventBufs.Get().(*eventBuf) }

// putEventBuf returns b to the pool, keeping no name's subjects.
func putEventBuf(b *eventBuf) {
	b.es = nil
	eventBufs.Put(b)
}

// maxNames bounds the cache of valid event names.
const maxNames = 4096

// eventSubjects are the subjects of the peer's events of one name.
type eventSubjects struct {
	persisted, transient string
	cached               bool           // remembered in Log.names
	tcheck               transientCheck // whether the server takes transient events of the name
}

// subjects checks an event name and returns the subjects of the peer's
// events of that name, remembering those of valid names.
func (l *Log) subjects(name string) (*eventSubjects, error) {
	if v, ok := l.names.Load(name); ok {
		return v.(*eventSubjects), nil
	}
	if err := ValidateName(name, false); err != nil {
		return nil, err
	}
	es := &eventSubjects{
		persisted: Subject(l.group, l.id, name),
		transient: TransientSubject(l.group, l.id, name),
	}
	if l.nnames.Add(1) <= maxNames {
		es.cached = true
		l.names.Store(name, es)
	}
	return es, nil
}

// eventMsg builds the message of an event, persisted (log subject, with
// the dedupe id) or transient, in buf (nil: a new one).
func (l *Log) eventMsg(buf *eventBuf, persist bool, name string, v any, opts []EmitOption) (*nats.Msg, Ack, error) {
	if err := l.closedErr(); err != nil {
		return nil, Ack{}, err
	}
	subj, err := l.subjects(name)
	if err != nil {
		return nil, Ack{}, err
	}
	var ec emitConfig
	if len(opts) > 0 {
		oc := new(emitConfig) // the options see it: on the heap only with options
		for _, o := range opts {
			if err := o(oc); err != nil {
				return nil, Ack{}, err
			}
		}
		ec = *oc
	}
	data, err := l.codec.Marshal(v)
	if err != nil {
		return nil, Ack{}, fmt.Errorf("eventlog: encode event %q: %w", name, err)
	}
	validID := true // a new id is
	if ec.id == "" {
		ec.id = newEventID()
	} else {
		validID = utf8.ValidString(ec.id)
	}
	ack := Ack{ID: ec.id, Time: time.Now().UTC()}
	if buf == nil {
		buf = &eventBuf{hdr: make(nats.Header, 4)}
	}
	buf.es = subj
	if !persist && validID && l.jsonCodec {
		return l.envelopeMsg(buf, subj.transient, ack, data)
	}
	// One backing array for the header values; the id slice is shared
	// by the two id headers (nothing writes to them).
	vals := &buf.vals
	*vals = [3]string{ack.ID, formatTime(ack.Time), l.codec.Name()}
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
	m.Header[peer.HeaderCodec] = vals[2:3:3]
	hdr := headerSize(h)
	if size := len(data) + hdr; size > int(l.nc.MaxPayload()) {
		return nil, Ack{}, tooLarge(size, hdr, len(data), l.nc.MaxPayload())
	}
	return m, ack, nil
}

// headerSize is the size of h as NATS sends it ("NATS/1.0\r\n", a
// "key: value\r\n" line per value, "\r\n"), 0 without headers. The bus's
// max payload bounds the headers and the payload together.
func headerSize(h nats.Header) int {
	if len(h) == 0 {
		return 0
	}
	n := len("NATS/1.0\r\n") + len("\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return n
}

// tooLarge is the error of an event whose message (headers or envelope
// and payload) exceeds the bus's max payload.
func tooLarge(size, overhead, payload int, max int64) error {
	return fmt.Errorf("%w: event message of %d bytes (payload %d, headers or envelope %d) exceeds the bus max payload of %d bytes; the payload may be at most %d bytes",
		peer.ErrPayloadTooLarge, size, payload, overhead, max, max-int64(overhead))
}

// envelopeMsg builds the message of a JSON transient event: no headers,
// the envelope carries the id and the time (see docs/PROTOCOL.md). An
// id that is not UTF-8 cannot be a JSON string: such an event goes in
// the header form.
func (l *Log) envelopeMsg(buf *eventBuf, subject string, ack Ack, data []byte) (*nats.Msg, Ack, error) {
	buf.env = appendEnvelope(buf.env[:0], ack.ID, ack.Time, data)
	buf.m = nats.Msg{Subject: subject, Data: buf.env}
	if len(buf.env) > int(l.nc.MaxPayload()) {
		return nil, Ack{}, tooLarge(len(buf.env), len(buf.env)-len(data), len(data), l.nc.MaxPayload())
	}
	return &buf.m, ack, nil
}

// finishAck completes an event ack with the stream's ack.
func (l *Log) finishAck(ctx context.Context, ack Ack, pa *jetstream.PubAck) Ack {
	ack.Seq = pa.Sequence
	ack.Duplicate = pa.Duplicate
	if pa.Duplicate {
		if t, ok := l.storedTime(ctx, pa.Sequence); ok {
			ack.Time = t
		}
	}
	return ack
}

// EmitAsync sends a persisted event without waiting for the log's ack;
// the returned future's Wait gives the ack (or the error). Use it to
// emit many events quickly, then wait for all of them. Events emitted
// asynchronously by one Log are stored in the order they were sent,
// except an event that had to be retried. At most 4096 events wait for
// an ack at a time; further calls wait for room, within ctx.
func (l *Log) EmitAsync(ctx context.Context, name string, v any, opts ...EmitOption) (*EmitFuture, error) {
	m, ack, err := l.eventMsg(nil, true, name, v, opts) // kept until acked
	if err != nil {
		return nil, err
	}
	f := &EmitFuture{l: l, id: ack.ID, name: name, m: m, ack: ack}
	if l.stream.Load() != nil {
		// Fast path: the stream is known; room is left for this emit.
		if f.paf, err = l.js.PublishMsgAsync(m); err == nil {
			return f, nil
		}
		if kind, mapped := classify(err); kind == errFatal {
			return nil, fmt.Errorf("eventlog: emit %q: %w", name, mapped)
		}
	}
	ctx, cancel := l.callContext(ctx)
	defer cancel()
	err = l.retry(ctx, func(ctx context.Context) error {
		if _, err := l.ensure(ctx); err != nil {
			return err
		}
		var err error
		f.paf, err = l.js.PublishMsgAsync(m, asyncPubOpts...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("eventlog: emit %q: %w", name, err)
	}
	return f, nil
}

// EmitFuture is the pending result of EmitAsync.
type EmitFuture struct {
	l    *Log
	id   string
	name string
	m    *nats.Msg
	paf  jetstream.PubAckFuture

	mu   sync.Mutex
	ack  Ack
	err  error
	done bool
}

// ID returns the event id.
func (f *EmitFuture) ID() string { return f.id }

// Wait returns once the event is stored, like Emit. An emit the bus did
// not store (JetStream not current) is retried synchronously with the
// same id, within ctx (bounded by the peer's CallTimeout). Wait may be
// called more than once; later calls return the first result.
func (f *EmitFuture) Wait(ctx context.Context) (Ack, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return f.ack, f.err
	}
	pa, late, err := f.result(ctx)
	if late {
		// No ack in time: a later Wait may still get it.
		return Ack{}, &OutcomeError{ID: f.id, Err: err}
	}
	if err != nil {
		if kind, mapped := classify(err); kind == errFatal {
			err = mapped
		} else {
			if kind == errNoStream {
				f.l.forget()
			}
			pa, err = f.l.publishAfter(ctx, f.m, kind == errAmbiguous)
		}
	}
	f.done = true
	if err != nil {
		f.err = fmt.Errorf("eventlog: emit %q: %w", f.name, err)
		return Ack{}, f.err
	}
	f.ack = f.l.finishAck(ctx, f.ack, pa)
	return f.ack, nil
}

// result returns the ack of the async publish, or its error, waiting
// within ctx (and the peer's CallTimeout) while neither came; late
// reports that neither came in time.
func (f *EmitFuture) result(ctx context.Context) (pa *jetstream.PubAck, late bool, err error) {
	ok := f.paf.Ok()
	select {
	case pa := <-ok: // the usual case once acks came back: no more work
		return pa, false, nil
	default:
	}
	errc := f.paf.Err()
	select {
	case pa := <-ok:
		return pa, false, nil
	case err := <-errc:
		return nil, false, err
	default:
	}
	// Not acknowledged yet: wait, within ctx and CallTimeout.
	ctx, cancel := f.l.callContext(ctx)
	defer cancel()
	select {
	case pa := <-ok:
		return pa, false, nil
	case err := <-errc:
		return nil, false, err
	case <-ctx.Done():
		return nil, true, fmt.Errorf("eventlog: emit %q: %w: no ack from the event log: %w", f.name, peer.ErrTimeout, ctx.Err())
	}
}
