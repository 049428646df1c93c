package eventlog

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/peerbus/peerbus/internal/names"
	"github.com/peerbus/peerbus/peer"
)

// The event log is one JetStream stream, Stream, capturing every
// persisted event subject (Subjects, "peerbus.evt.>"). See
// docs/PROTOCOL.md for the names a client in another language uses.
const (
	// Stream is the name of the JetStream stream that keeps events:
	// "PEERBUS_EVENTS".
	Stream = names.LogStream
	// Subjects matches every persisted event subject
	// (peerbus.evt.<group>.<peer>.<name>); the log captures it.
	Subjects = peer.Prefix + ".evt.>"
	// TransientSubjects matches every transient event subject
	// (peerbus.tevt.<group>.<peer>.<name>); the log does not capture it.
	TransientSubjects = peer.Prefix + ".tevt.>"
	// DeadLetterPrefix starts the name of the event a durable
	// subscription emits when it gives up on an event (see DeadLetter).
	DeadLetterPrefix = "_dead."
)

// Defaults of Config. A zero field of Config means its default.
const (
	// DefaultMaxAge is how long the log keeps an event: 7 days.
	DefaultMaxAge = 7 * 24 * time.Hour
	// DefaultMaxBytes bounds the log's size: 1 GiB. When it is reached
	// the oldest events are dropped (see Config.DiscardNew).
	DefaultMaxBytes = 1 << 30
	// DefaultDuplicates is the window in which an event id is
	// remembered, so a retried emit is stored once: 2 minutes.
	DefaultDuplicates = 2 * time.Minute
	// DefaultReplicas is the number of copies of the log (1; a cluster
	// of 3 or more nodes should use 3).
	DefaultReplicas = 1
	// maxReplicas is the most copies JetStream keeps of a stream.
	maxReplicas = 5
)

// Config configures the event log stream. A Log creates the stream with
// it when the stream does not exist yet (the first Log that needs the
// log does). An existing stream is used as it is, unless Update is set:
// then the Log applies its configuration (CreateOrUpdateStream). Zero
// fields take the defaults; negative limits mean unlimited.
type Config struct {
	// MaxAge is how long events are kept. Default DefaultMaxAge.
	MaxAge time.Duration
	// MaxBytes bounds the stored size. Default DefaultMaxBytes.
	MaxBytes int64
	// MaxEvents bounds the number of stored events. Default: unlimited.
	MaxEvents int64
	// MaxEventSize bounds one stored event. Default: the server's max
	// payload.
	MaxEventSize int32
	// Duplicates is the dedupe window of event ids (not negative).
	// Default DefaultDuplicates; a window longer than MaxAge is
	// shortened to MaxAge.
	Duplicates time.Duration
	// Memory keeps the log in memory instead of files in the node's data
	// directory. A memory log does not survive a node restart.
	Memory bool
	// Replicas is the number of copies kept on different nodes of a
	// cluster, at most 5. Default DefaultReplicas when the Log creates
	// the log; with Update, 0 keeps the existing count (clustered nodes
	// raise it, see bus.Options.LogReplicas).
	Replicas int
	// DiscardNew makes a full log refuse new events (Emit returns
	// ErrLogFull) instead of dropping the oldest ones (the default).
	DiscardNew bool
	// Update applies this configuration to an existing log.
	Update bool
}

// validate checks the fields that have no meaning when negative or too
// large.
func (c Config) validate() error {
	if c.Duplicates < 0 {
		return invalid("log dedupe window %v is negative", c.Duplicates)
	}
	if c.Replicas < 0 || c.Replicas > maxReplicas {
		return invalid("log replicas %d: want 0 (the default) to %d", c.Replicas, maxReplicas)
	}
	return nil
}

// streamConfig returns the stream configuration of c, with defaults.
func (c Config) streamConfig() jetstream.StreamConfig {
	sc := jetstream.StreamConfig{
		Name:              Stream,
		Description:       "peerbus event log",
		Subjects:          []string{Subjects},
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
		sc.MaxAge = DefaultMaxAge
	case sc.MaxAge < 0:
		sc.MaxAge = 0 // unlimited
	}
	if sc.MaxBytes == 0 {
		sc.MaxBytes = DefaultMaxBytes
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
		sc.Duplicates = DefaultDuplicates
	}
	if sc.MaxAge > 0 && sc.Duplicates > sc.MaxAge {
		sc.Duplicates = sc.MaxAge
	}
	if sc.Replicas <= 0 {
		sc.Replicas = DefaultReplicas
	}
	if c.Memory {
		sc.Storage = jetstream.MemoryStorage
	}
	if c.DiscardNew {
		sc.Discard = jetstream.DiscardNew
	}
	return sc
}

// configOf returns the Config that describes a stream configuration
// (the inverse of streamConfig: explicit values, -1 for no limit).
// Replicas stay 0: an update keeps the copies.
func configOf(sc jetstream.StreamConfig) Config {
	c := Config{
		MaxAge: sc.MaxAge, MaxBytes: sc.MaxBytes, MaxEvents: sc.MaxMsgs, MaxEventSize: sc.MaxMsgSize,
		Duplicates: sc.Duplicates, Memory: sc.Storage == jetstream.MemoryStorage,
		DiscardNew: sc.Discard == jetstream.DiscardNew,
	}
	if c.MaxAge <= 0 {
		c.MaxAge = -1
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = -1
	}
	if c.MaxEvents < 0 {
		c.MaxEvents = 0
	}
	if c.MaxEventSize < 0 {
		c.MaxEventSize = 0
	}
	return c
}

// Settings are changes to the configuration of the log (see Configure):
// a nil field keeps the log's current value (the default for a new
// log). The values mean what the fields of Config mean.
type Settings struct {
	MaxAge     *time.Duration // -1: no limit
	MaxBytes   *int64         // -1: no limit
	MaxEvents  *int64         // 0: no limit
	Duplicates *time.Duration
	Memory     *bool
	DiscardNew *bool
}

// IsZero reports whether no setting is given.
func (s Settings) IsZero() bool {
	return s.MaxAge == nil && s.MaxBytes == nil && s.MaxEvents == nil && s.Duplicates == nil && s.Memory == nil && s.DiscardNew == nil
}

// Apply returns base with the given settings replaced.
func (s Settings) Apply(base Config) Config {
	if s.MaxAge != nil {
		base.MaxAge = *s.MaxAge
	}
	if s.MaxBytes != nil {
		base.MaxBytes = *s.MaxBytes
	}
	if s.MaxEvents != nil {
		base.MaxEvents = *s.MaxEvents
	}
	if s.Duplicates != nil {
		base.Duplicates = *s.Duplicates
	}
	if s.Memory != nil {
		base.Memory = *s.Memory
	}
	if s.DiscardNew != nil {
		base.DiscardNew = *s.DiscardNew
	}
	return base
}
