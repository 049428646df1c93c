package peer

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
)

const (
	// ProjectionBucket is the JetStream key-value bucket where
	// projections keep their snapshots, one key per projection name.
	ProjectionBucket = "PEERBUS_PROJECTIONS"
	// DefaultSnapshotEvery is how many folded events a running
	// projection waits between two snapshots.
	DefaultSnapshotEvery = 1000
	// snapshotVersion is the version of the snapshot format.
	snapshotVersion = 1
)

// Fold folds event e into state and returns the new state. An error
// stops the projection at the previous event (see Projection.Run).
type Fold[S any] func(state S, e Event) (S, error)

// ProjectionOption configures a projection.
type ProjectionOption func(*projConfig)

type projConfig struct {
	filters   []SubOption
	every     int
	snapshots bool
	bucket    string
}

// ProjectFrom keeps only the events of these peers or groups (FromPeers,
// FromGroups), filtered on the server.
func ProjectFrom(filters ...SubOption) ProjectionOption {
	return func(c *projConfig) { c.filters = append(c.filters, filters...) }
}

// SnapshotEvery makes a running projection store a snapshot every n
// folded events (default DefaultSnapshotEvery); 0 stores one only when
// Run ends and on Snapshot.
func SnapshotEvery(n int) ProjectionOption { return func(c *projConfig) { c.every = n } }

// WithoutSnapshots keeps the projection in memory only: it folds the
// log from the start every time it runs in a new process.
func WithoutSnapshots() ProjectionOption { return func(c *projConfig) { c.snapshots = false } }

// SnapshotBucket stores the snapshots in bucket instead of
// ProjectionBucket.
func SnapshotBucket(bucket string) ProjectionOption { return func(c *projConfig) { c.bucket = bucket } }

// Projection folds the events of the log that match a pattern into a
// state value of type S, in log order. It starts from its last snapshot
// when it has one (state and sequence, in a JetStream key-value
// bucket), so a restart folds only the events that came after it. Its
// methods are safe for concurrent use; the state it hands out must be
// treated as read-only (fold may return a modified copy, or mutate the
// state it is given: State and Read then see it under a lock).
type Projection[S any] struct {
	p        *Peer
	name     string
	pattern  string
	filters  []SubOption
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
func NewProjection[S any](p *Peer, name, pattern string, initial S, fold Fold[S], opts ...ProjectionOption) (*Projection[S], error) {
	if fold == nil {
		return nil, errors.New("peer: nil fold function")
	}
	if !validKey(name) {
		return nil, fmt.Errorf("%w: projection name %q must be letters, digits and -_=/. (not starting or ending with '.')", ErrInvalidOption, name)
	}
	cfg := projConfig{every: DefaultSnapshotEvery, snapshots: true, bucket: ProjectionBucket}
	for _, o := range opts {
		o(&cfg)
	}
	var sc subConfig
	for _, o := range cfg.filters {
		o(&sc)
	}
	if sc.fromLog() || len(sc.durableOnly) > 0 {
		return nil, fmt.Errorf("%w: ProjectFrom takes FromPeers and FromGroups only", ErrInvalidOption)
	}
	subjects, err := FilterSubjects(pattern, sc.groups, sc.peers)
	if err != nil {
		return nil, err
	}
	if cfg.every < 0 {
		cfg.every = 0
	}
	return &Projection[S]{
		p: p, name: name, pattern: pattern, filters: cfg.filters, subjects: subjects,
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
			return fmt.Errorf("peer: projection %q at seq %d, waiting for %d: %w", pr.name, cur, seq, ctx.Err())
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
			err = panicError(pr.p.id, "projection "+pr.name, r)
		}
		if err != nil {
			pr.err = fmt.Errorf("peer: projection %q: fold of event seq %d (%s): %w", pr.name, e.Seq, e.Name, err)
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
		return fmt.Errorf("%w: projection %q is already running", ErrInvalidOption, pr.name)
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
	if err := pr.Snapshot(pr.p.ctx); err != nil {
		pr.p.reportError(err)
	}
}

// Run loads the last snapshot (the first time), folds the stored events
// after it, then follows the log until ctx ends, storing a snapshot
// every SnapshotEvery events and when it returns. It returns ctx's
// error, ErrClosed when the peer closes, or the fold error that stopped
// it (the state stays at the event before; Run again retries that
// event).
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
	opts := append(slices.Clone(pr.filters), FromSeq(pr.Seq()+1))
	sub, err := pr.p.Subscribe(pr.pattern, h, opts...)
	if err != nil {
		return fmt.Errorf("peer: projection %q: %w", pr.name, err)
	}
	var ret error
	select {
	case <-ctx.Done():
		ret = ctx.Err()
	case <-failed:
	case <-sub.log.ctx.Done():
		ret = ErrClosed
	}
	_ = sub.Unsubscribe()
	pr.mu.RLock()
	if pr.err != nil {
		ret = pr.err
	}
	dirty := pr.seq > pr.snapSeq.Load()
	pr.mu.RUnlock()
	if dirty && pr.cfg.snapshots && !pr.p.isClosed() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pr.p.opts.CallTimeout)
		if err := pr.Snapshot(sctx); err != nil {
			pr.p.reportError(err)
		}
		cancel()
	}
	return ret
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
	opts := append(slices.Clone(pr.filters), FromSeq(pr.Seq()+1))
	for e, err := range pr.p.Replay(ctx, pr.pattern, opts...) {
		if err != nil {
			return fmt.Errorf("peer: projection %q: %w", pr.name, err)
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
		return snapshotDoc{}, fmt.Errorf("peer: malformed snapshot: %w", err)
	}
	switch {
	case d.V != snapshotVersion:
		return snapshotDoc{}, fmt.Errorf("peer: snapshot version %d not supported", d.V)
	case d.Codec == "":
		return snapshotDoc{}, errors.New("peer: malformed snapshot: no codec")
	case len(d.State) == 0 && len(d.Bytes) == 0:
		return snapshotDoc{}, errors.New("peer: malformed snapshot: no state")
	case len(d.State) > 0 && len(d.Bytes) > 0:
		return snapshotDoc{}, errors.New("peer: malformed snapshot: two states")
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
		return fmt.Errorf("%w: projection %q has no snapshots", ErrInvalidOption, pr.name)
	}
	pr.snapMu.Lock()
	defer pr.snapMu.Unlock()
	codec := pr.p.opts.Codec
	pr.mu.Lock()
	doc := snapshotDoc{V: snapshotVersion, Name: pr.name, Seq: pr.seq, Time: time.Now().UTC(),
		Filters: pr.subjects, Codec: codec.Name()}
	st, err := codec.Marshal(pr.state)
	if err == nil {
		pr.since = 0
	}
	pr.mu.Unlock()
	if err != nil {
		return fmt.Errorf("peer: projection %q: encode state: %w", pr.name, err)
	}
	if codec.Name() == JSON.Name() && json.Valid(st) {
		doc.State = st
	} else {
		doc.Bytes = st
	}
	data, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("peer: projection %q: encode snapshot: %w", pr.name, err)
	}
	err = pr.p.kvCall(ctx, pr.cfg.bucket, func(ctx context.Context, kv jetstream.KeyValue) error {
		_, err := kv.Put(ctx, pr.name, data)
		return err
	})
	if err != nil {
		return fmt.Errorf("peer: projection %q: store snapshot: %w", pr.name, err)
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
	err := pr.p.kvCall(ctx, pr.cfg.bucket, func(ctx context.Context, kv jetstream.KeyValue) error {
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
		return fmt.Errorf("peer: projection %q: load snapshot: %w", pr.name, err)
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pr.loaded = true
	if raw == nil {
		return nil
	}
	doc, err := decodeSnapshot(raw)
	codec := pr.p.opts.Codec
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
		pr.p.reportError(fmt.Errorf("peer: projection %q: snapshot ignored, folding from the start: %w", pr.name, err))
		return nil
	}
	pr.state, pr.seq = st, doc.Seq
	pr.snapSeq.Store(doc.Seq)
	pr.snapshot.Store(&SnapshotInfo{Seq: doc.Seq, Time: doc.Time})
	return nil
}

// kvCall runs op on the snapshot bucket (created when missing) with the
// peer's call timeout and retry policy.
func (p *Peer) kvCall(ctx context.Context, bucket string, op func(ctx context.Context, kv jetstream.KeyValue) error) error {
	if p.isClosed() {
		return ErrClosed
	}
	ctx, cancel := p.callContext(ctx, callConfig{})
	defer cancel()
	return p.evlog.retry(ctx, func(ctx context.Context) error {
		kv, err := p.evlog.bucket(ctx, bucket)
		if err != nil {
			return err
		}
		err = op(ctx, kv)
		if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			p.evlog.kvMu.Lock()
			delete(p.evlog.kvs, bucket)
			p.evlog.kvMu.Unlock()
			return jetstream.ErrNoStreamResponse // look it up again
		}
		return err
	})
}

// bucket returns the key-value bucket name, creating it (with the log's
// storage and replicas) when missing.
func (l *eventLog) bucket(ctx context.Context, name string) (jetstream.KeyValue, error) {
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
