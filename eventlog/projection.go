package eventlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/peerbus/peerbus/internal/names"
	"github.com/peerbus/peerbus/peer"
)

const (
	// ProjectionBucket is the JetStream key-value bucket where
	// projections keep their snapshots, one key per projection name:
	// "PEERBUS_PROJECTIONS".
	ProjectionBucket = names.ProjectionBucket
	// DefaultSnapshotEvery is how many folded events a running
	// projection waits between two snapshots.
	DefaultSnapshotEvery = 1000
	// snapshotVersion is the version of the snapshot format.
	snapshotVersion = 1
)

// Fold folds event e into state and returns the new state. An error
// stops the projection at the previous event (see Projection.Run).
type Fold[S any] func(state S, e Event) (S, error)

// ProjectionOption configures a projection. The options check their
// value and return an error wrapping ErrInvalidOption for an invalid
// one.
type ProjectionOption func(*projConfig) error

type projConfig struct {
	filters   []Filter
	every     int
	snapshots bool
	bucket    string
}

// ProjectFrom keeps only the events of these peers or groups (FromPeers,
// FromGroups), filtered on the server.
func ProjectFrom(filters ...Filter) ProjectionOption {
	return func(c *projConfig) error { c.filters = append(c.filters, filters...); return nil }
}

// SnapshotEvery makes a running projection store a snapshot every n
// folded events (default DefaultSnapshotEvery); 0 stores one only when
// Run ends and on Snapshot. A negative n is invalid.
func SnapshotEvery(n int) ProjectionOption {
	return func(c *projConfig) error {
		if n < 0 {
			return invalid("SnapshotEvery(%d): want 0 or more events", n)
		}
		c.every = n
		return nil
	}
}

// WithoutSnapshots keeps the projection in memory only: it folds the
// log from the start every time it runs in a new process.
func WithoutSnapshots() ProjectionOption {
	return func(c *projConfig) error { c.snapshots = false; return nil }
}

// SnapshotBucket stores the snapshots in bucket instead of
// ProjectionBucket. A bucket name is letters, digits, '-' and '_'.
func SnapshotBucket(bucket string) ProjectionOption {
	return func(c *projConfig) error {
		if !validBucket(bucket) {
			return invalid("snapshot bucket %q: want letters, digits, '-' and '_'", bucket)
		}
		c.bucket = bucket
		return nil
	}
}

// validBucket checks a key-value bucket name.
func validBucket(b string) bool {
	if b == "" {
		return false
	}
	for _, r := range b {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
		default:
			return false
		}
	}
	return true
}

// Projection folds the events of the log that match a pattern into a
// state value of type S, in log order. It starts from its last snapshot
// when it has one (state and sequence, in a JetStream key-value
// bucket), so a restart folds only the events that came after it. Its
// methods are safe for concurrent use; the state it hands out must be
// treated as read-only (fold may return a modified copy, or mutate the
// state it is given: State and Read then see it under a lock).
type Projection[S any] struct {
	l        *Log
	name     string
	pattern  string
	filters  []Filter
	subjects []string
	fold     Fold[S]
	cfg      projConfig

	mu       sync.RWMutex
	state    S
	seq      uint64
	err      error         // the fold error that stopped the projection
	advanced chan struct{} // closed and replaced when seq moves
	loaded   bool          // the snapshot was looked for
	since    int           // events folded since the last snapshot

	running  atomic.Bool
	snapSeq  atomic.Uint64
	snapMu   sync.Mutex // serialises snapshot writes
	snapshot atomic.Pointer[SnapshotInfo]
}

// SnapshotInfo describes a stored snapshot.
type SnapshotInfo struct {
	// Seq is the log sequence of the last event folded into the state.
	Seq uint64 `json:"seq"`
	// Time is when the snapshot was taken.
	Time time.Time `json:"time"`
}

// NewProjection returns a projection named name (the key of its
// snapshot: letters, digits and "-_=/." ) of the events matching
// pattern, starting from initial. It does not read anything until Run
// or CatchUp.
func NewProjection[S any](l *Log, name, pattern string, initial S, fold Fold[S], opts ...ProjectionOption) (*Projection[S], error) {
	if fold == nil {
		return nil, errors.New("eventlog: nil fold function")
	}
	if !validKey(name) {
		return nil, invalid("projection name %q must be letters, digits and -_=/. (not starting or ending with '.')", name)
	}
	cfg := projConfig{every: DefaultSnapshotEvery, snapshots: true, bucket: ProjectionBucket}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	var rc readConfig
	for _, f := range cfg.filters {
		_ = f.apply(&rc)
	}
	subjects, err := FilterSubjects(pattern, rc.groups, rc.peers)
	if err != nil {
		return nil, err
	}
	return &Projection[S]{
		l: l, name: name, pattern: pattern, filters: cfg.filters, subjects: subjects,
		fold: fold, cfg: cfg, state: initial, advanced: make(chan struct{}),
	}, nil
}

// validKey checks a key-value key.
func validKey(k string) bool {
	if k == "" || len(k) > 256 || k[0] == '.' || k[len(k)-1] == '.' {
		return false
	}
	for _, r := range k {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '=', r == '/', r == '.':
		default:
			return false
		}
	}
	return true
}

// Name returns the projection name.
func (pr *Projection[S]) Name() string { return pr.name }

// State returns the current state.
func (pr *Projection[S]) State() S {
	pr.mu.RLock()
	defer pr.mu.RUnlock()
	return pr.state
}

// Read calls f with the current state and its sequence, with no fold
// running meanwhile.
func (pr *Projection[S]) Read(f func(state S, seq uint64)) {
	pr.mu.RLock()
	defer pr.mu.RUnlock()
	f(pr.state, pr.seq)
}

// Seq returns the log sequence of the last event folded into the state
// (0 before the first).
func (pr *Projection[S]) Seq() uint64 {
	pr.mu.RLock()
	defer pr.mu.RUnlock()
	return pr.seq
}

// LastSnapshot describes the last snapshot stored or loaded by this
// projection (nil when none).
func (pr *Projection[S]) LastSnapshot() *SnapshotInfo { return pr.snapshot.Load() }

// WaitSeq waits until the state includes the event at log sequence seq
// (an event the projection folds: it matches its pattern and filters),
// or ctx ends, or the projection stopped on a fold error.
func (pr *Projection[S]) WaitSeq(ctx context.Context, seq uint64) error {
	for {
		pr.mu.RLock()
		cur, ch, err := pr.seq, pr.advanced, pr.err
		pr.mu.RUnlock()
		if cur >= seq {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("eventlog: projection %q at seq %d, waiting for %d: %w", pr.name, cur, seq, ctx.Err())
		}
	}
}

// apply folds e. Events at or below the current sequence are skipped.
func (pr *Projection[S]) apply(e Event) (err error) {
	pr.mu.Lock()
	if pr.err != nil {
		pr.mu.Unlock()
		return pr.err
	}
	if e.Seq <= pr.seq {
		pr.mu.Unlock()
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = peer.PanicError(pr.l.id, "projection "+pr.name, r)
		}
		if err != nil {
			pr.err = fmt.Errorf("eventlog: projection %q: fold of event seq %d (%s): %w", pr.name, e.Seq, e.Name, err)
			err = pr.err
			ch := pr.advanced
			pr.advanced = make(chan struct{})
			pr.mu.Unlock()
			close(ch) // wake WaitSeq so it sees the error
			return
		}
		pr.mu.Unlock()
	}()
	st, err := pr.fold(pr.state, e)
	if err != nil {
		return err
	}
	pr.state, pr.seq = st, e.Seq
	pr.since++
	ch := pr.advanced
	pr.advanced = make(chan struct{})
	close(ch)
	return nil
}

// begin marks the projection running, clears a previous fold error and
// loads the snapshot the first time.
func (pr *Projection[S]) begin(ctx context.Context) error {
	if !pr.running.CompareAndSwap(false, true) {
		return invalid("projection %q is already running", pr.name)
	}
	pr.mu.Lock()
	pr.err = nil
	loaded := pr.loaded
	pr.mu.Unlock()
	if loaded || !pr.cfg.snapshots {
		return nil
	}
	if err := pr.load(ctx); err != nil {
		pr.running.Store(false)
		return err
	}
	return nil
}

// maybeSnapshot stores a snapshot when SnapshotEvery events were folded.
func (pr *Projection[S]) maybeSnapshot() {
	if !pr.cfg.snapshots || pr.cfg.every == 0 {
		return
	}
	pr.mu.RLock()
	due := pr.since >= pr.cfg.every
	pr.mu.RUnlock()
	if !due {
		return
	}
	if err := pr.Snapshot(pr.l.ctx); err != nil {
		pr.l.p.ReportError(err)
	}
}

// Run loads the last snapshot (the first time), folds the stored events
// after it, then follows the log until ctx ends, storing a snapshot
// every SnapshotEvery events and when it returns. It returns ctx's
// error, ErrClosed when the Log closes (or its peer: the error matches
// peer.ErrClosed then), or the fold error that stopped it (the state
// stays at the event before; Run again retries that event).
func (pr *Projection[S]) Run(ctx context.Context) error {
	if err := pr.begin(ctx); err != nil {
		return err
	}
	defer pr.running.Store(false)
	failed := make(chan struct{})
	var once sync.Once
	h := func(_ context.Context, e Event) error {
		if err := pr.apply(e); err != nil {
			once.Do(func() { close(failed) })
			return nil // reported by Run's return
		}
		pr.maybeSnapshot()
		return nil
	}
	sub, err := pr.l.Subscribe(pr.pattern, h, pr.readOptions()...)
	if err != nil {
		return fmt.Errorf("eventlog: projection %q: %w", pr.name, err)
	}
	var ret error
	select {
	case <-ctx.Done():
		ret = ctx.Err()
	case <-failed:
	case <-sub.log.ctx.Done():
		ret = pr.l.closedErrOr(ErrClosed)
	}
	_ = sub.Close()
	pr.mu.RLock()
	if pr.err != nil {
		ret = pr.err
	}
	dirty := pr.seq > pr.snapSeq.Load()
	pr.mu.RUnlock()
	if dirty && pr.cfg.snapshots && pr.l.closedErr() == nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pr.l.timeout)
		if err := pr.Snapshot(sctx); err != nil {
			pr.l.p.ReportError(err)
		}
		cancel()
	}
	return ret
}

// readOptions are the options of the projection's reads: its filters,
// from the event after its state.
func (pr *Projection[S]) readOptions() []SubscribeOption {
	opts := make([]SubscribeOption, 0, len(pr.filters)+1)
	for _, f := range pr.filters {
		opts = append(opts, f)
	}
	return append(opts, FromSeq(pr.Seq()+1))
}

// CatchUp loads the last snapshot (the first time) and folds the events
// stored now, then returns (it does not follow the log). It stores a
// snapshot every SnapshotEvery events; call Snapshot to store one at
// the end.
func (pr *Projection[S]) CatchUp(ctx context.Context) error {
	if err := pr.begin(ctx); err != nil {
		return err
	}
	defer pr.running.Store(false)
	opts := make([]ReplayOption, 0, len(pr.filters)+1)
	for _, f := range pr.filters {
		opts = append(opts, f)
	}
	opts = append(opts, FromSeq(pr.Seq()+1))
	for e, err := range pr.l.Replay(ctx, pr.pattern, opts...) {
		if err != nil {
			return fmt.Errorf("eventlog: projection %q: %w", pr.name, err)
		}
		if err := pr.apply(e); err != nil {
			return err
		}
		pr.maybeSnapshot()
	}
	return nil
}

// snapshotDoc is a stored snapshot (JSON), the value of the projection's
// key in the snapshot bucket.
type snapshotDoc struct {
	V       int             `json:"v"`
	Name    string          `json:"name"`
	Seq     uint64          `json:"seq"`
	Time    time.Time       `json:"time"`
	Filters []string        `json:"filters"`
	Codec   string          `json:"codec"`
	State   json.RawMessage `json:"state,omitempty"`       // JSON codec
	Bytes   []byte          `json:"state_bytes,omitempty"` // other codecs
}

// decodeSnapshot parses a stored snapshot. It never panics.
func decodeSnapshot(data []byte) (snapshotDoc, error) {
	var d snapshotDoc
	if err := json.Unmarshal(data, &d); err != nil {
		return snapshotDoc{}, fmt.Errorf("eventlog: malformed snapshot: %w", err)
	}
	switch {
	case d.V != snapshotVersion:
		return snapshotDoc{}, fmt.Errorf("eventlog: snapshot version %d not supported", d.V)
	case d.Codec == "":
		return snapshotDoc{}, errors.New("eventlog: malformed snapshot: no codec")
	case len(d.State) == 0 && len(d.Bytes) == 0:
		return snapshotDoc{}, errors.New("eventlog: malformed snapshot: no state")
	case len(d.State) > 0 && len(d.Bytes) > 0:
		return snapshotDoc{}, errors.New("eventlog: malformed snapshot: two states")
	}
	return d, nil
}

// stateBytes returns the encoded state of a snapshot.
func (d snapshotDoc) stateBytes() []byte {
	if len(d.State) > 0 {
		return d.State
	}
	return d.Bytes
}

// Snapshot stores the current state and sequence now.
func (pr *Projection[S]) Snapshot(ctx context.Context) error {
	if !pr.cfg.snapshots {
		return invalid("projection %q has no snapshots", pr.name)
	}
	pr.snapMu.Lock()
	defer pr.snapMu.Unlock()
	codec := pr.l.codec
	pr.mu.Lock()
	doc := snapshotDoc{V: snapshotVersion, Name: pr.name, Seq: pr.seq, Time: time.Now().UTC(),
		Filters: pr.subjects, Codec: codec.Name()}
	st, err := codec.Marshal(pr.state)
	if err == nil {
		pr.since = 0
	}
	pr.mu.Unlock()
	if err != nil {
		return fmt.Errorf("eventlog: projection %q: encode state: %w", pr.name, err)
	}
	if codec.Name() == peer.JSON.Name() && json.Valid(st) {
		doc.State = st
	} else {
		doc.Bytes = st
	}
	data, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("eventlog: projection %q: encode snapshot: %w", pr.name, err)
	}
	err = pr.l.kvCall(ctx, pr.cfg.bucket, func(ctx context.Context, kv jetstream.KeyValue) error {
		_, err := kv.Put(ctx, pr.name, data)
		return err
	})
	if err != nil {
		return fmt.Errorf("eventlog: projection %q: store snapshot: %w", pr.name, err)
	}
	if doc.Seq > pr.snapSeq.Load() {
		pr.snapSeq.Store(doc.Seq)
	}
	pr.snapshot.Store(&SnapshotInfo{Seq: doc.Seq, Time: doc.Time})
	return nil
}

// load reads the stored snapshot, if any. A snapshot of other filters
// or another codec, or one that does not decode, is reported and
// ignored (the projection starts from its initial state).
func (pr *Projection[S]) load(ctx context.Context) error {
	var raw []byte
	err := pr.l.kvCall(ctx, pr.cfg.bucket, func(ctx context.Context, kv jetstream.KeyValue) error {
		e, err := kv.Get(ctx, pr.name)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		raw = e.Value()
		return nil
	})
	if err != nil {
		return fmt.Errorf("eventlog: projection %q: load snapshot: %w", pr.name, err)
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pr.loaded = true
	if raw == nil {
		return nil
	}
	doc, err := decodeSnapshot(raw)
	codec := pr.l.codec
	switch {
	case err != nil:
	case doc.Codec != codec.Name():
		err = fmt.Errorf("snapshot codec %q, the peer's is %q", doc.Codec, codec.Name())
	case !slices.Equal(doc.Filters, pr.subjects):
		err = fmt.Errorf("snapshot of filters %v, the projection's are %v", doc.Filters, pr.subjects)
	}
	var st S
	if err == nil {
		if uerr := codec.Unmarshal(doc.stateBytes(), &st); uerr != nil {
			err = fmt.Errorf("decode snapshot state: %w", uerr)
		}
	}
	if err != nil {
		pr.l.p.ReportError(fmt.Errorf("eventlog: projection %q: snapshot ignored, folding from the start: %w", pr.name, err))
		return nil
	}
	pr.state, pr.seq = st, doc.Seq
	pr.snapSeq.Store(doc.Seq)
	pr.snapshot.Store(&SnapshotInfo{Seq: doc.Seq, Time: doc.Time})
	return nil
}

// kvCall runs op on the snapshot bucket (created when missing) with the
// peer's call timeout and retry policy.
func (l *Log) kvCall(ctx context.Context, bucket string, op func(ctx context.Context, kv jetstream.KeyValue) error) error {
	if err := l.closedErr(); err != nil {
		return err
	}
	ctx, cancel := l.callContext(ctx)
	defer cancel()
	return l.retry(ctx, func(ctx context.Context) error {
		kv, err := l.bucket(ctx, bucket)
		if err != nil {
			return err
		}
		err = op(ctx, kv)
		if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			l.kvMu.Lock()
			delete(l.kvs, bucket)
			l.kvMu.Unlock()
			return jetstream.ErrNoStreamResponse // look it up again
		}
		return err
	})
}

// bucket returns the key-value bucket name, creating it (with the log's
// storage and replicas) when missing.
func (l *Log) bucket(ctx context.Context, name string) (jetstream.KeyValue, error) {
	l.kvMu.Lock()
	defer l.kvMu.Unlock()
	if kv := l.kvs[name]; kv != nil {
		return kv, nil
	}
	kv, err := l.js.KeyValue(ctx, name)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		sc := l.cfg.streamConfig()
		kv, err = l.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: name, Description: "peerbus projection snapshots", History: 1,
			Storage: sc.Storage, Replicas: sc.Replicas,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = l.js.KeyValue(ctx, name)
		}
	}
	if err != nil {
		return nil, err
	}
	l.kvs[name] = kv
	return kv, nil
}
