package eventlog

// Administration of the log: its state, its durable subscriptions, and
// its configuration.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/peerbus/peerbus/internal/names"
)

// Info describes the event log: its content and limits.
type Info struct {
	// Stream is the JetStream stream name (Stream).
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

// Consumer metadata keys: the pattern, and the subscriber's MaxDeliver
// (the consumer's own max_deliver is -1: the subscriber gives up).
const (
	metaPattern    = "peerbus_pattern"
	metaMaxDeliver = "peerbus_max_deliver"
)

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
	if n, err := strconv.Atoi(ci.Config.Metadata[metaMaxDeliver]); err == nil {
		d.MaxDeliver = n
	}
	if ci.Config.FilterSubject != "" {
		d.Filters = []string{ci.Config.FilterSubject}
	}
	if ci.Delivered.Last != nil {
		d.LastActive = *ci.Delivered.Last
	}
	return d
}

// Info returns the state of the event log (creating the log when it
// does not exist yet).
func (l *Log) Info(ctx context.Context) (Info, error) {
	var out Info
	err := l.call(ctx, func(ctx context.Context, s jetstream.Stream) error {
		si, err := s.Info(ctx)
		if err != nil {
			return err
		}
		c := si.Config
		out = Info{
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
		return Info{}, fmt.Errorf("eventlog: log info: %w", err)
	}
	return out, nil
}

// DurableInfo describes the durable subscription name, or returns
// ErrUnknownDurable.
func (l *Log) DurableInfo(ctx context.Context, name string) (DurableInfo, error) {
	if err := validDurable(name); err != nil {
		return DurableInfo{}, err
	}
	var out DurableInfo
	err := l.call(ctx, func(ctx context.Context, s jetstream.Stream) error {
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
		return DurableInfo{}, fmt.Errorf("eventlog: durable %q: %w", name, err)
	}
	return out, nil
}

// DeleteDurable deletes the durable subscription name and its position
// in the log; a subscriber still using it stops receiving events.
func (l *Log) DeleteDurable(ctx context.Context, name string) error {
	if err := validDurable(name); err != nil {
		return err
	}
	err := l.call(ctx, func(ctx context.Context, s jetstream.Stream) error {
		return s.DeleteConsumer(ctx, name)
	})
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("%w: %q", ErrUnknownDurable, name)
	}
	if err != nil {
		return fmt.Errorf("eventlog: delete durable %q: %w", name, err)
	}
	return nil
}

// validDurable checks a durable name: one subject token, no path
// separators, at most 128 bytes.
func validDurable(name string) error {
	if err := names.Token(name); err != nil || strings.ContainsAny(name, `/\`) || len(name) > 128 {
		return fmt.Errorf("%w: durable name %q must be one token of at most 128 bytes without '.', '*', '>', '/', '\\' or whitespace", ErrInvalidOption, name)
	}
	return nil
}

// Configured is the outcome of Configure.
type Configured struct {
	// Config is the configuration now in force, with explicit values
	// (-1 for no limit; Replicas 0: the log keeps its copies).
	Config Config
	// Created reports that the log did not exist and was created.
	Created bool
	// Info is the state of the log once configured.
	Info Info
}

// configureWaitMax bounds the pause between two looks for the log
// while JetStream does not answer.
const configureWaitMax = time.Second

// Configure applies s to the event log: only the given settings change,
// the others keep the log's current values (the defaults for a new log,
// which Configure creates). ctx bounds it; while JetStream does not
// answer yet (a starting node electing leaders) Configure tries again.
// Without JetStream on the bus it returns ErrNoLog. The storage of an
// existing log cannot change: a Memory setting that differs from it
// gives an error wrapping ErrInvalidOption.
func (l *Log) Configure(ctx context.Context, s Settings) (Configured, error) {
	if err := l.closedErr(); err != nil {
		return Configured{}, err
	}
	base, exists, err := l.currentConfig(ctx)
	if err != nil {
		return Configured{}, err
	}
	if exists && s.Memory != nil && *s.Memory != base.Memory {
		have, want := "file", "memory"
		if base.Memory {
			have, want = want, have
		}
		return Configured{}, invalid("the event log exists with %s storage, which cannot change to %s "+
			"(storage is chosen when the log is created)", have, want)
	}
	cfg := s.Apply(base)
	if err := cfg.validate(); err != nil {
		return Configured{}, err
	}
	err = l.retry(ctx, func(ctx context.Context) error {
		l.smu.Lock()
		defer l.smu.Unlock()
		st, err := l.update(ctx, cfg)
		if err == nil {
			l.stream.Store(&streamRef{st})
		}
		return err
	})
	if err != nil {
		return Configured{}, fmt.Errorf("eventlog: configure: %w", err)
	}
	info, err := l.Info(ctx)
	if err != nil {
		return Configured{}, err
	}
	return Configured{Config: cfg, Created: !exists, Info: info}, nil
}

// currentConfig returns the configuration of the log (see configOf),
// or reports that it does not exist, trying again within ctx while
// JetStream does not answer.
func (l *Log) currentConfig(ctx context.Context) (Config, bool, error) {
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, configureWaitMax) {
		st, err := l.js.Stream(ctx, Stream)
		switch {
		case err == nil:
			return configOf(st.CachedInfo().Config), true, nil
		case errors.Is(err, jetstream.ErrStreamNotFound):
			return Config{}, false, nil
		case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount),
			errors.Is(err, nats.ErrNoResponders):
			return Config{}, false, fmt.Errorf("%w: JetStream is not enabled on the bus", ErrNoLog)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Config{}, false, fmt.Errorf("eventlog: the log did not answer: %v (%w)", err, ctx.Err())
		case <-t.C:
		}
	}
}
