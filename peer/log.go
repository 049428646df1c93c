package peer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The event log is one JetStream stream, LogStream, capturing every
// persisted event subject (EventSubjects, "peerbus.evt.>"). See
// docs/PROTOCOL.md for the names a client in another language uses.
const (
	// LogStream is the name of the JetStream stream that keeps events.
	LogStream = "PEERBUS_EVENTS"
	// TransientSubjects matches every transient event subject
	// (peerbus.tevt.<group>.<peer>.<name>); the log does not capture it.
	TransientSubjects = Prefix + ".tevt.>"
	// DeadLetterPrefix starts the name of the event a durable
	// subscription emits when it gives up on an event (see DeadLetter).
	DeadLetterPrefix = "_dead."

	subjTevt = Prefix + ".tevt." // peerbus.tevt.<group>.<peer>.<name>
)

// Defaults of LogConfig. A zero field of LogConfig means its default.
const (
	// DefaultLogMaxAge is how long the log keeps an event: 7 days.
	DefaultLogMaxAge = 7 * 24 * time.Hour
	// DefaultLogMaxBytes bounds the log's size: 1 GiB. When it is
	// reached the oldest events are dropped (see LogConfig.DiscardNew).
	DefaultLogMaxBytes = 1 << 30
	// DefaultLogDuplicates is the window in which an event id is
	// remembered, so a retried emit is stored once: 2 minutes.
	DefaultLogDuplicates = 2 * time.Minute
	// DefaultLogReplicas is the number of copies of the log (1; a
	// cluster of 3 or more nodes should use 3).
	DefaultLogReplicas = 1
)

// Sentinel errors of the event log. Match them with errors.Is.
var (
	// ErrNoLog reports that the event log is not available: the bus has
	// no JetStream (a node started without it, or a NATS server without
	// JetStream), or JetStream did not become available in time. Use
	// EmitTransient for events that need no log.
	ErrNoLog = errors.New("peer: event log unavailable")
	// ErrLogFull reports an event refused because the log reached a
	// limit and discards new events (LogConfig.DiscardNew), or the
	// account's storage is exhausted.
	ErrLogFull = errors.New("peer: event log full")
	// ErrUnknownDurable reports a durable subscription that does not
	// exist (MustExist, DurableInfo, DeleteDurable).
	ErrUnknownDurable = errors.New("peer: unknown durable subscription")
	// ErrInvalidOption reports an option value or combination that
	// cannot be used (a bad event id, durable name, or a log option on a
	// call that does not take it).
	ErrInvalidOption = errors.New("peer: invalid option")
)

// LogConfig configures the event log stream. A peer creates the stream
// with it when the stream does not exist yet (the first peer that needs
// the log does). An existing stream is used as it is, unless Update is
// set: then the peer applies its configuration (CreateOrUpdateStream).
// Zero fields take the defaults; negative limits mean unlimited.
type LogConfig struct {
	// MaxAge is how long events are kept. Default DefaultLogMaxAge.
	MaxAge time.Duration
	// MaxBytes bounds the stored size. Default DefaultLogMaxBytes.
	MaxBytes int64
	// MaxEvents bounds the number of stored events. Default: unlimited.
	MaxEvents int64
	// MaxEventSize bounds one stored event. Default: the server's max
	// payload.
	MaxEventSize int32
	// Duplicates is the dedupe window of event ids. Default
	// DefaultLogDuplicates, shortened to MaxAge when that is shorter.
	Duplicates time.Duration
	// Memory keeps the log in memory instead of files in the node's data
	// directory. A memory log does not survive a node restart.
	Memory bool
	// Replicas is the number of copies kept on different nodes of a
	// cluster. Default DefaultLogReplicas when the peer creates the log;
	// with Update, 0 keeps the existing count (clustered nodes raise it,
	// see bus.Options.LogReplicas).
	Replicas int
	// DiscardNew makes a full log refuse new events (Emit returns
	// ErrLogFull) instead of dropping the oldest ones (the default).
	DiscardNew bool
	// Update applies this configuration to an existing log.
	Update bool
}

// streamConfig returns the stream configuration of c, with defaults.
func (c LogConfig) streamConfig() jetstream.StreamConfig {
	sc := jetstream.StreamConfig{
		Name:              LogStream,
		Description:       "peerbus event log",
		Subjects:          []string{EventSubjects},
		Retention:         jetstream.LimitsPolicy,
		MaxAge:            c.MaxAge,
		MaxBytes:          c.MaxBytes,
		MaxMsgs:           c.MaxEvents,
		MaxMsgSize:        c.MaxEventSize,
		Duplicates:        c.Duplicates,
		Replicas:          c.Replicas,
		Storage:           jetstream.FileStorage,
		Discard:           jetstream.DiscardOld,
		AllowDirect:       true,
		MaxConsumers:      -1,
		MaxMsgsPerSubject: -1,
	}
	switch {
	case sc.MaxAge == 0:
		sc.MaxAge = DefaultLogMaxAge
	case sc.MaxAge < 0:
		sc.MaxAge = 0 // unlimited
	}
	if sc.MaxBytes == 0 {
		sc.MaxBytes = DefaultLogMaxBytes
	} else if sc.MaxBytes < 0 {
		sc.MaxBytes = -1
	}
	if sc.MaxMsgs <= 0 {
		sc.MaxMsgs = -1
	}
	if sc.MaxMsgSize <= 0 {
		sc.MaxMsgSize = -1
	}
	if sc.Duplicates <= 0 {
		sc.Duplicates = DefaultLogDuplicates
	}
	if sc.MaxAge > 0 && sc.Duplicates > sc.MaxAge {
		sc.Duplicates = sc.MaxAge
	}
	if sc.Replicas <= 0 {
		sc.Replicas = DefaultLogReplicas
	}
	if c.Memory {
		sc.Storage = jetstream.MemoryStorage
	}
	if c.DiscardNew {
		sc.Discard = jetstream.DiscardNew
	}
	return sc
}

// Emit retry bounds: while JetStream is not current (after a start or a
// leader change) Emit retries with a backoff from emitRetryMin to
// emitRetryMax, within its context (CallTimeout by default). One
// attempt waits at most emitAttemptTimeout for the stream's ack; a
// retried attempt carries the same event id, so it is stored once.
const (
	emitRetryMin       = 20 * time.Millisecond
	emitRetryMax       = 500 * time.Millisecond
	emitAttemptTimeout = 2 * time.Second
	// asyncStallWait is how long EmitAsync waits for a free slot when
	// asyncMaxPending emits are unacknowledged, before it tries again.
	asyncStallWait  = time.Second
	asyncMaxPending = 4096
)

// eventLog is a peer's access to the log stream.
type eventLog struct {
	p   *Peer
	cfg LogConfig
	js  jetstream.JetStream

	mu     sync.Mutex                    // serialises ensure
	stream atomic.Pointer[streamRef]     // set once the stream is known
	names  sync.Map                      // valid event names: their *eventSubjects
	nnames atomic.Int32                  // entries in names (bounded)
	kvMu   sync.Mutex                    // serialises bucket lookups
	kvs    map[string]jetstream.KeyValue // snapshot buckets by name
}

type streamRef struct{ s jetstream.Stream }

var (
	syncPubOpts  = []jetstream.PublishOpt{jetstream.WithRetryAttempts(0)}
	asyncPubOpts = []jetstream.PublishOpt{jetstream.WithRetryAttempts(0), jetstream.WithStallWait(asyncStallWait)}
)

func newEventLog(p *Peer) *eventLog {
	js, err := jetstream.New(p.nc, jetstream.WithPublishAsyncMaxPending(asyncMaxPending))
	if err != nil { // only for invalid options
		panic(fmt.Sprintf("peer: jetstream: %v", err))
	}
	return &eventLog{p: p, cfg: p.opts.Log, js: js, kvs: make(map[string]jetstream.KeyValue)}
}

// maxNames bounds the cache of valid event names.
const maxNames = 4096

// eventSubjects are the subjects of the peer's events of one name.
type eventSubjects struct{ persisted, transient string }

// subjects checks an event name and returns the subjects of the peer's
// events of that name, remembering those of valid names.
func (l *eventLog) subjects(name string) (*eventSubjects, error) {
	if v, ok := l.names.Load(name); ok {
		return v.(*eventSubjects), nil
	}
	if err := ValidateEventName(name, false); err != nil {
		return nil, err
	}
	es := &eventSubjects{
		persisted: EventSubject(l.p.opts.Group, l.p.id, name),
		transient: TransientSubject(l.p.opts.Group, l.p.id, name),
	}
	if l.nnames.Add(1) <= maxNames {
		l.names.Store(name, es)
	}
	return es, nil
}

// close fails pending async emits and releases the async ack
// subscription.
func (l *eventLog) close() {
	l.js.CleanupPublisher()
}

// ensure makes sure the log stream exists (creating it when needed) and
// returns it.
func (l *eventLog) ensure(ctx context.Context) (jetstream.Stream, error) {
	if r := l.stream.Load(); r != nil {
		return r.s, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if r := l.stream.Load(); r != nil {
		return r.s, nil
	}
	cfg := l.cfg.streamConfig()
	var s jetstream.Stream
	var err error
	if l.cfg.Update {
		if l.cfg.Replicas <= 0 {
			// Keep the copies a clustered node set (bus.Options.LogReplicas).
			if cur, err := l.js.Stream(ctx, LogStream); err == nil {
				cfg.Replicas = cur.CachedInfo().Config.Replicas
			}
		}
		s, err = l.js.CreateOrUpdateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Another peer created it between our update and create.
			s, err = l.js.UpdateStream(ctx, cfg)
		}
	} else {
		s, err = l.js.Stream(ctx, LogStream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			s, err = l.js.CreateStream(ctx, cfg)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				// A concurrent creator won with another configuration.
				s, err = l.js.Stream(ctx, LogStream)
			}
		}
	}
	if err != nil {
		return nil, err
	}
	l.stream.Store(&streamRef{s})
	return s, nil
}

// forget drops the known stream so the next use checks it again (it may
// have been deleted).
func (l *eventLog) forget() { l.stream.Store(nil) }

// errKind classifies a JetStream error for the emit retry loop.
type errKind int

const (
	errFatal     errKind = iota // return it (mapped)
	errRetry                    // JetStream not current: retry
	errNoStream                 // nobody stored it: check the stream, retry
	errAmbiguous                // no answer in time: retry (same id)
)

func classify(err error) (errKind, error) {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled),
		errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount),
		errors.Is(err, nats.ErrNoResponders):
		// The JetStream API has no responder: no JetStream on this bus.
		return errFatal, fmt.Errorf("%w: JetStream is not enabled on the bus (%v)", ErrNoLog, err)
	case errors.Is(err, jetstream.ErrNoStreamResponse):
		return errNoStream, err
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, jetstream.ErrJetStreamPublisherClosed):
		return errFatal, err
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, jetstream.ErrAsyncPublishTimeout), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, jetstream.ErrTooManyStalledMsgs):
		return errAmbiguous, err
	case errors.As(err, &apiErr):
		switch apiErr.ErrorCode {
		case 10008, // JetStream system temporarily unavailable
			10118, // stream is offline
			10005: // no suitable peers (a cluster still forming)
			return errRetry, err
		case jetstream.JSErrCodeStreamMessageExceedsMaximum:
			return errFatal, fmt.Errorf("%w: %v", ErrPayloadTooLarge, err)
		case jetstream.JSErrCodeStreamNotFound:
			return errNoStream, err
		case 10077: // storing failed
			d := strings.ToLower(apiErr.Description)
			if strings.Contains(d, "too large") {
				return errFatal, fmt.Errorf("%w: %s", ErrPayloadTooLarge, apiErr.Description)
			}
			if strings.Contains(d, "maximum") || strings.Contains(d, "resource") || strings.Contains(d, "limit") {
				return errFatal, fmt.Errorf("%w: %s", ErrLogFull, apiErr.Description)
			}
			return errFatal, err
		case 10002, 10023, 10047: // account or server resources exceeded
			return errFatal, fmt.Errorf("%w: %s", ErrLogFull, apiErr.Description)
		case jetstream.JSErrCodeJetStreamNotEnabled, jetstream.JSErrCodeJetStreamNotEnabledForAccount:
			return errFatal, fmt.Errorf("%w: %v", ErrNoLog, err)
		}
		if apiErr.Code == 503 {
			return errRetry, err
		}
	}
	return errFatal, err
}

// retry runs op until it succeeds, fails for good, or ctx ends, with a
// backoff while JetStream is not current. op gets a context bounded by
// emitAttemptTimeout.
func (l *eventLog) retry(ctx context.Context, op func(ctx context.Context) error) error {
	wait := emitRetryMin
	for {
		actx, cancel := context.WithTimeout(ctx, emitAttemptTimeout)
		err := op(actx)
		cancel()
		if err == nil {
			return nil
		}
		kind, mapped := classify(err)
		if ctx.Err() != nil {
			kind = errFatal
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, nats.ErrTimeout) {
				return fmt.Errorf("%w: no answer from the event log: %w", ErrTimeout, ctx.Err())
			}
			if !errors.Is(mapped, ErrNoLog) && (errors.Is(err, jetstream.ErrNoStreamResponse) || kind == errRetry) {
				return fmt.Errorf("%w: JetStream did not become available: %v (%w)", ErrNoLog, err, ctx.Err())
			}
		}
		switch kind {
		case errFatal:
			return mapped
		case errNoStream:
			l.forget()
		}
		l.p.log.Debug("event log not ready, retrying", "err", err, "wait", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			if kind == errAmbiguous {
				return fmt.Errorf("%w: no answer from the event log: %v (%w)", ErrTimeout, err, ctx.Err())
			}
			return fmt.Errorf("%w: JetStream did not become available: %v (%w)", ErrNoLog, err, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, emitRetryMax)
	}
}

// publish stores m in the log and returns the stream's ack. Once the
// stream is known, the first attempt goes straight to it; the retry
// loop (bounded by ctx and CallTimeout) only runs when it fails.
func (l *eventLog) publish(ctx context.Context, m *nats.Msg) (*jetstream.PubAck, error) {
	start := time.Now()
	if l.stream.Load() != nil {
		actx, cancel := attemptContext(ctx)
		pa, err := l.js.PublishMsg(actx, m)
		cancel()
		if err == nil {
			return pa, nil
		}
		if kind, mapped := classify(err); kind == errFatal && ctx.Err() == nil {
			return nil, mapped
		} else if kind == errNoStream {
			l.forget()
		}
	}
	ctx, cancel := context.WithDeadline(ctx, start.Add(l.p.opts.CallTimeout))
	defer cancel()
	var pa *jetstream.PubAck
	err := l.retry(ctx, func(ctx context.Context) error {
		if _, err := l.ensure(ctx); err != nil {
			return err
		}
		var err error
		pa, err = l.js.PublishMsg(ctx, m, syncPubOpts...)
		return err
	})
	return pa, err
}

// attemptContext bounds one attempt by emitAttemptTimeout, reusing ctx
// when its deadline is nearer.
func attemptContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= emitAttemptTimeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, emitAttemptTimeout)
}

// storedTime returns the time header of the stored event seq (used for
// a duplicate emit, whose ack names the first copy).
func (l *eventLog) storedTime(ctx context.Context, seq uint64) (time.Time, bool) {
	s, err := l.ensure(ctx)
	if err != nil {
		return time.Time{}, false
	}
	raw, err := s.GetMsg(ctx, seq)
	if err != nil || raw.Header == nil {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, raw.Header.Get(HeaderTime))
	return t, err == nil
}

// EmitFuture is the pending result of EmitAsync.
type EmitFuture struct {
	p    *Peer
	id   string
	name string
	m    *nats.Msg
	paf  jetstream.PubAckFuture

	mu   sync.Mutex
	ack  EventAck
	err  error
	done bool
}

// ID returns the event id.
func (f *EmitFuture) ID() string { return f.id }

// Wait returns once the event is stored, like Emit. An emit the bus did
// not store (JetStream not current) is retried synchronously with the
// same id, within ctx (bounded by the peer's CallTimeout). Wait may be
// called more than once; later calls return the first result.
func (f *EmitFuture) Wait(ctx context.Context) (EventAck, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return f.ack, f.err
	}
	var pa *jetstream.PubAck
	var err error
	ok := f.paf.Ok()
	select {
	case pa = <-ok: // the usual case once acks came back: no more work
	default:
		errc := f.paf.Err()
		select {
		case pa = <-ok:
		case err = <-errc:
		default:
			// Not acknowledged yet: wait, within ctx and CallTimeout.
			var cancel context.CancelFunc
			ctx, cancel = f.p.callContext(ctx, callConfig{})
			defer cancel()
			select {
			case pa = <-ok:
			case err = <-errc:
			case <-ctx.Done():
				return EventAck{}, fmt.Errorf("peer: emit %q: %w: no ack from the event log: %w", f.name, ErrTimeout, ctx.Err())
			}
		}
	}
	if err != nil {
		if kind, mapped := classify(err); kind == errFatal {
			err = mapped
		} else {
			if kind == errNoStream {
				f.p.evlog.forget()
			}
			pa, err = f.p.evlog.publish(ctx, f.m)
		}
	}
	f.done = true
	if err != nil {
		f.err = fmt.Errorf("peer: emit %q: %w", f.name, err)
		return EventAck{}, f.err
	}
	f.ack = f.p.finishAck(ctx, f.ack, pa)
	return f.ack, nil
}

// finishAck completes an event ack with the stream's ack.
func (p *Peer) finishAck(ctx context.Context, ack EventAck, pa *jetstream.PubAck) EventAck {
	ack.Seq = pa.Sequence
	ack.Duplicate = pa.Duplicate
	if pa.Duplicate {
		if t, ok := p.evlog.storedTime(ctx, pa.Sequence); ok {
			ack.Time = t
		}
	}
	return ack
}

// EmitAsync sends a persisted event without waiting for the log's ack;
// the returned future's Wait gives the ack (or the error). Use it to
// emit many events quickly, then wait for all of them. Events emitted
// asynchronously by one peer are stored in the order they were sent,
// except an event that had to be retried. At most 4096 events wait for
// an ack at a time; further calls wait for room, within ctx.
func (p *Peer) EmitAsync(ctx context.Context, name string, v any, opts ...EmitOption) (*EmitFuture, error) {
	m, ack, err := p.eventMsg(nil, true, name, v, opts) // kept until acked
	if err != nil {
		return nil, err
	}
	f := &EmitFuture{p: p, id: ack.ID, name: name, m: m, ack: ack}
	if p.evlog.stream.Load() != nil {
		// Fast path: the stream is known; room is left for this emit.
		if f.paf, err = p.evlog.js.PublishMsgAsync(m); err == nil {
			return f, nil
		}
		if kind, mapped := classify(err); kind == errFatal {
			return nil, fmt.Errorf("peer: emit %q: %w", name, mapped)
		}
	}
	ctx, cancel := p.callContext(ctx, callConfig{})
	defer cancel()
	err = p.evlog.retry(ctx, func(ctx context.Context) error {
		if _, err := p.evlog.ensure(ctx); err != nil {
			return err
		}
		var err error
		f.paf, err = p.evlog.js.PublishMsgAsync(m, asyncPubOpts...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("peer: emit %q: %w", name, err)
	}
	return f, nil
}

// LogInfo describes the event log: its content and limits.
type LogInfo struct {
	// Stream is the JetStream stream name (LogStream).
	Stream string `json:"stream"`
	// Subjects are the subjects the stream captures.
	Subjects []string `json:"subjects"`
	// Events is the number of stored events.
	Events uint64 `json:"events"`
	// Bytes is the stored size.
	Bytes uint64 `json:"bytes"`
	// FirstSeq and LastSeq are the sequences of the oldest and newest
	// stored events (FirstSeq > LastSeq when the log is empty).
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	// FirstTime and LastTime are when those events were stored.
	FirstTime time.Time `json:"first_time"`
	LastTime  time.Time `json:"last_time"`
	// Deleted counts events removed from the middle of the log.
	Deleted int `json:"deleted,omitempty"`
	// Consumers counts all consumers of the log (durable subscriptions,
	// replays and projections running now).
	Consumers int `json:"consumers"`
	// Durables describes the durable subscriptions.
	Durables []DurableInfo `json:"durables"`
	// MaxAge, MaxBytes and MaxEvents are the limits (0 or -1: none).
	MaxAge    time.Duration `json:"max_age"`
	MaxBytes  int64         `json:"max_bytes"`
	MaxEvents int64         `json:"max_events"`
	// Duplicates is the dedupe window of event ids.
	Duplicates time.Duration `json:"duplicates"`
	// Storage is "file" or "memory".
	Storage string `json:"storage"`
	// Discard is "old" (drop the oldest events when full) or "new"
	// (refuse new events when full).
	Discard string `json:"discard"`
	// Replicas is the number of copies.
	Replicas int `json:"replicas"`
	// Leader is the node that leads the stream in a cluster.
	Leader string `json:"leader,omitempty"`
	// Created is when the log was created.
	Created time.Time `json:"created"`
}

// DurableInfo describes a durable subscription (a durable JetStream
// consumer of the log).
type DurableInfo struct {
	// Name is the durable name.
	Name string `json:"name"`
	// Pattern is the event name pattern it was created with.
	Pattern string `json:"pattern,omitempty"`
	// Filters are its server-side subject filters.
	Filters []string `json:"filters"`
	// Pending counts matching events not delivered yet.
	Pending uint64 `json:"pending"`
	// AckPending counts events delivered and not acknowledged yet.
	AckPending int `json:"ack_pending"`
	// Redelivered counts events delivered more than once and not
	// acknowledged yet.
	Redelivered int `json:"redelivered"`
	// Delivered is the stream sequence of the last delivered event.
	Delivered uint64 `json:"delivered_seq"`
	// AckFloor is the stream sequence up to which every event is
	// acknowledged (or terminated).
	AckFloor uint64 `json:"ack_floor_seq"`
	// MaxDeliver, AckWait and MaxAckPending are its delivery settings.
	MaxDeliver    int           `json:"max_deliver"`
	AckWait       time.Duration `json:"ack_wait"`
	MaxAckPending int           `json:"max_ack_pending"`
	// Active reports whether a subscriber is waiting for events now.
	Active bool `json:"active"`
	// LastActive is when an event was last delivered.
	LastActive time.Time `json:"last_active,omitzero"`
	// Created is when the durable was created.
	Created time.Time `json:"created"`
}

// metaPattern is the consumer metadata key holding the pattern.
const metaPattern = "peerbus_pattern"

func durableInfo(ci *jetstream.ConsumerInfo) DurableInfo {
	d := DurableInfo{
		Name:          ci.Name,
		Pattern:       ci.Config.Metadata[metaPattern],
		Filters:       ci.Config.FilterSubjects,
		Pending:       ci.NumPending,
		AckPending:    ci.NumAckPending,
		Redelivered:   ci.NumRedelivered,
		Delivered:     ci.Delivered.Stream,
		AckFloor:      ci.AckFloor.Stream,
		MaxDeliver:    ci.Config.MaxDeliver,
		AckWait:       ci.Config.AckWait,
		MaxAckPending: ci.Config.MaxAckPending,
		Active:        ci.NumWaiting > 0,
		Created:       ci.Created,
	}
	if ci.Config.FilterSubject != "" {
		d.Filters = []string{ci.Config.FilterSubject}
	}
	if ci.Delivered.Last != nil {
		d.LastActive = *ci.Delivered.Last
	}
	return d
}

// logCall runs op on the log stream with the peer's call timeout and
// the emit retry policy.
func (p *Peer) logCall(ctx context.Context, op func(ctx context.Context, s jetstream.Stream) error) error {
	if p.isClosed() {
		return ErrClosed
	}
	ctx, cancel := p.callContext(ctx, callConfig{})
	defer cancel()
	return p.evlog.retry(ctx, func(ctx context.Context) error {
		s, err := p.evlog.ensure(ctx)
		if err != nil {
			return err
		}
		err = op(ctx, s)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return jetstream.ErrNoStreamResponse // recreate and retry
		}
		return err
	})
}

// LogInfo returns the state of the event log (creating the log when it
// does not exist yet).
func (p *Peer) LogInfo(ctx context.Context) (LogInfo, error) {
	var out LogInfo
	err := p.logCall(ctx, func(ctx context.Context, s jetstream.Stream) error {
		si, err := s.Info(ctx)
		if err != nil {
			return err
		}
		c := si.Config
		out = LogInfo{
			Stream: c.Name, Subjects: c.Subjects,
			Events: si.State.Msgs, Bytes: si.State.Bytes,
			FirstSeq: si.State.FirstSeq, LastSeq: si.State.LastSeq,
			FirstTime: si.State.FirstTime, LastTime: si.State.LastTime,
			Deleted: si.State.NumDeleted, Consumers: si.State.Consumers,
			MaxAge: c.MaxAge, MaxBytes: c.MaxBytes, MaxEvents: c.MaxMsgs,
			Duplicates: c.Duplicates, Storage: "file", Replicas: c.Replicas,
			Discard: "old", Created: si.Created, Durables: []DurableInfo{},
		}
		if c.Storage == jetstream.MemoryStorage {
			out.Storage = "memory"
		}
		if c.Discard == jetstream.DiscardNew {
			out.Discard = "new"
		}
		if si.Cluster != nil {
			out.Leader = si.Cluster.Leader
		}
		lister := s.ListConsumers(ctx)
		for ci := range lister.Info() {
			if ci.Config.Durable != "" {
				out.Durables = append(out.Durables, durableInfo(ci))
			}
		}
		return lister.Err()
	})
	if err != nil {
		return LogInfo{}, fmt.Errorf("peer: log info: %w", err)
	}
	return out, nil
}

// DurableInfo describes the durable subscription name, or returns
// ErrUnknownDurable.
func (p *Peer) DurableInfo(ctx context.Context, name string) (DurableInfo, error) {
	if err := validDurable(name); err != nil {
		return DurableInfo{}, err
	}
	var out DurableInfo
	err := p.logCall(ctx, func(ctx context.Context, s jetstream.Stream) error {
		c, err := s.Consumer(ctx, name)
		if err != nil {
			return err
		}
		ci, err := c.Info(ctx)
		if err != nil {
			return err
		}
		out = durableInfo(ci)
		return nil
	})
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return DurableInfo{}, fmt.Errorf("%w: %q", ErrUnknownDurable, name)
	}
	if err != nil {
		return DurableInfo{}, fmt.Errorf("peer: durable %q: %w", name, err)
	}
	return out, nil
}

// DeleteDurable deletes the durable subscription name and its position
// in the log; a subscriber still using it stops receiving events.
func (p *Peer) DeleteDurable(ctx context.Context, name string) error {
	if err := validDurable(name); err != nil {
		return err
	}
	err := p.logCall(ctx, func(ctx context.Context, s jetstream.Stream) error {
		return s.DeleteConsumer(ctx, name)
	})
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("%w: %q", ErrUnknownDurable, name)
	}
	if err != nil {
		return fmt.Errorf("peer: delete durable %q: %w", name, err)
	}
	return nil
}

// validDurable checks a durable name: one subject token, no path
// separators, at most 128 bytes.
func validDurable(name string) error {
	if err := validToken(name); err != nil || strings.ContainsAny(name, `/\`) || len(name) > 128 {
		return fmt.Errorf("%w: durable name %q must be one token of at most 128 bytes without '.', '*', '>', '/', '\\' or whitespace", ErrInvalidOption, name)
	}
	return nil
}
