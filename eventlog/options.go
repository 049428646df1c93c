package eventlog

import (
	"strings"
	"time"
)

// Options configures a Log. DefaultOptions gives the defaults.
type Options struct {
	// Config configures the log stream: the Log creates the stream with
	// it when it does not exist yet (or applies it to the existing one
	// with Config.Update). Zero fields mean the documented defaults.
	Config Config
}

// DefaultOptions returns the defaults: a zero Config, which stands for
// the documented defaults of each of its fields (DefaultMaxAge,
// DefaultMaxBytes, DefaultDuplicates, DefaultReplicas, file storage,
// the oldest events dropped when full).
func DefaultOptions() Options { return Options{} }

// Option changes Options. The options of this package check their value
// and return an error wrapping ErrInvalidOption for an invalid one.
type Option func(*Options) error

// WithConfig sets the configuration of the log stream (see Config).
func WithConfig(c Config) Option {
	return func(o *Options) error {
		if err := c.validate(); err != nil {
			return err
		}
		o.Config = c
		return nil
	}
}

// EmitOption changes one emit (Emit, EmitAsync, EmitTransient).
type EmitOption func(*emitConfig) error

type emitConfig struct{ id string }

// maxEventID bounds an event id given with WithEventID.
const maxEventID = 256

// WithEventID sets the event id instead of a new uuid. Emitting again
// with the same id within the log's Duplicates window stores the event
// once and returns the first copy's sequence: use it to retry an emit
// whose outcome is unknown. The id must be 1 to 256 bytes with no
// whitespace.
func WithEventID(id string) EmitOption {
	return func(c *emitConfig) error {
		if !validEventID(id) {
			return invalid("event id %q: want 1 to %d bytes without whitespace", id, maxEventID)
		}
		c.id = id
		return nil
	}
}

func validEventID(id string) bool {
	return id != "" && len(id) <= maxEventID && !strings.ContainsAny(id, " \t\r\n\x00")
}

// readConfig holds the options of a read of the log: a subscription, a
// durable subscription, a replay or a count.
type readConfig struct {
	peers  []string
	groups []string
	start  Start

	// Durable subscriptions only.
	mustExist     bool
	maxDeliver    int
	ackWait       time.Duration
	backoff       []time.Duration
	maxAckPending int
}

// SubscribeOption changes a subscription (Subscribe, On): a Filter or a
// Start.
type SubscribeOption interface{ applySubscribe(*readConfig) error }

// ReplayOption changes a replay or a count (Replay, Count): a Filter or
// a Start.
type ReplayOption interface{ applyReplay(*readConfig) error }

// DurableOption changes a durable subscription (SubscribeDurable): a
// Filter, a Start (where a new durable begins), or one of the delivery
// settings MustExist, MaxDeliver, AckWait, RetryBackoff, MaxAckPending.
type DurableOption interface{ applyDurable(*readConfig) error }

// Filter keeps the events of some peers or groups, filtered on the
// server (subject filters). FromPeers and FromGroups make one. It is a
// SubscribeOption, a ReplayOption and a DurableOption, and what
// ProjectFrom takes.
type Filter struct {
	peers  []string
	groups []string
}

// FromPeers keeps only events emitted by these peers.
func FromPeers(ids ...string) Filter { return Filter{peers: ids} }

// FromGroups keeps only events emitted by peers of these groups ("" is
// the peers without a group).
func FromGroups(groups ...string) Filter { return Filter{groups: groups} }

func (f Filter) apply(c *readConfig) error {
	c.peers = append(c.peers, f.peers...)
	c.groups = append(c.groups, f.groups...)
	return nil
}

func (f Filter) applySubscribe(c *readConfig) error { return f.apply(c) }
func (f Filter) applyReplay(c *readConfig) error    { return f.apply(c) }
func (f Filter) applyDurable(c *readConfig) error   { return f.apply(c) }

type startKind int

const (
	startLive startKind = iota // live only (no log)
	startAll                   // the whole log
	startSeq                   // from a sequence
	startTime                  // from a time
)

// Start is where a read of the log begins: FromStart, FromSeq or
// FromTime make one. A subscription given a Start reads the log from
// there, then follows it; a replay reads from there; a new durable
// subscription begins there (a resumed one ignores it). It is a
// SubscribeOption, a ReplayOption and a DurableOption; the last Start
// given wins.
type Start struct {
	kind startKind
	seq  uint64
	time time.Time
}

// FromStart starts at the first event of the log.
func FromStart() Start { return Start{kind: startAll} }

// FromSeq starts at log sequence seq (included); 0 is the start of the
// log.
func FromSeq(seq uint64) Start {
	if seq == 0 {
		return FromStart()
	}
	return Start{kind: startSeq, seq: seq}
}

// FromTime starts at the first event stored at or after t.
func FromTime(t time.Time) Start { return Start{kind: startTime, time: t} }

func (s Start) applySubscribe(c *readConfig) error { c.start = s; return nil }
func (s Start) applyReplay(c *readConfig) error    { c.start = s; return nil }
func (s Start) applyDurable(c *readConfig) error   { c.start = s; return nil }

// durableOption is a DurableOption only.
type durableOption func(*readConfig) error

func (o durableOption) applyDurable(c *readConfig) error { return o(c) }

// MustExist makes SubscribeDurable fail with ErrUnknownDurable when the
// durable does not exist, instead of creating it.
func MustExist() DurableOption {
	return durableOption(func(c *readConfig) error { c.mustExist = true; return nil })
}

// MaxDeliver sets how many times a durable subscription delivers an
// event whose handler fails before it gives up on it (default
// DefaultMaxDeliver); -1 retries for ever (no dead letters). 0 and
// values below -1 are invalid.
func MaxDeliver(n int) DurableOption {
	return durableOption(func(c *readConfig) error {
		if n == 0 || n < -1 {
			return invalid("MaxDeliver(%d): want a positive count or -1", n)
		}
		c.maxDeliver = n
		return nil
	})
}

// AckWait sets how long a durable subscription's handler may run before
// the event is delivered again (default DefaultAckWait); it must be
// positive.
func AckWait(d time.Duration) DurableOption {
	return durableOption(func(c *readConfig) error {
		if d <= 0 {
			return invalid("AckWait(%v): want a positive duration", d)
		}
		c.ackWait = d
		return nil
	})
}

// RetryBackoff sets the delays before a failed event is delivered again
// to a durable subscription: the i-th retry waits d[i], the last value
// repeats. Default: 1s, 5s, 15s, 30s. It takes at least one delay, none
// negative.
func RetryBackoff(d ...time.Duration) DurableOption {
	return durableOption(func(c *readConfig) error {
		if len(d) == 0 {
			return invalid("RetryBackoff needs at least one delay")
		}
		for _, x := range d {
			if x < 0 {
				return invalid("RetryBackoff: negative delay %v", x)
			}
		}
		c.backoff = append([]time.Duration(nil), d...)
		return nil
	})
}

// MaxAckPending sets how many events of a durable subscription may be
// handled at once (default DefaultMaxAckPending, 1); it must be
// positive. More than 1 gives up the ordering: a failed event is
// retried after later ones.
func MaxAckPending(n int) DurableOption {
	return durableOption(func(c *readConfig) error {
		if n <= 0 {
			return invalid("MaxAckPending(%d): want a positive count", n)
		}
		c.maxAckPending = n
		return nil
	})
}
