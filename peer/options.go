package peer

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/peerbus/peerbus/identity"
	"github.com/peerbus/peerbus/internal/names"
)

// Defaults used by DefaultOptions.
const (
	// DefaultCallTimeout bounds a call whose ctx has no earlier deadline.
	DefaultCallTimeout = 10 * time.Second
	// DefaultHeartbeat is the presence heartbeat interval.
	DefaultHeartbeat = time.Second
	// DefaultGoneAfter is how long a peer may miss heartbeats before it
	// is reported gone.
	DefaultGoneAfter = 3 * time.Second
	// DefaultMaxConcurrent bounds the functions a peer runs at once;
	// further requests wait (and the bus applies back-pressure).
	DefaultMaxConcurrent = 256
	// DefaultTagConcurrency bounds the calls of one tag a peer runs at
	// once; further calls of the tag are answered busy (ErrBusy).
	DefaultTagConcurrency = 64
)

// Environment variables read by FromEnv.
const (
	EnvGroup    = "PEERBUS_GROUP"     // peer group
	EnvHub      = "PEERBUS_HUB"       // "1"/"true": this peer is a hub
	EnvPeerName = "PEERBUS_PEER_NAME" // friendly name
	EnvPeerID   = "PEERBUS_PEER_ID"   // fixed peer id (uuid)
	EnvIdentity = "PEERBUS_IDENTITY"  // nkey seed file of the peer's identity
	// EnvTagConcurrency bounds the calls of each tag run at once.
	EnvTagConcurrency = "PEERBUS_TAG_CONCURRENCY"
)

// Options configures a Peer. DefaultOptions gives the defaults; a zero
// field means its default too. New refuses invalid values with an error
// wrapping ErrInvalidOption.
type Options struct {
	// ID is the peer id, one subject token. Default: a new random uuid,
	// or the id of Identity.
	ID string
	// Identity is the peer's key pair. The peer's id is then the
	// identity's (an ID that differs is refused), and the connection must
	// have been made with the identity's ConnectOptions (its reply
	// inboxes under the identity's inbox prefix), as a node enforcing a
	// policy requires. Default: none.
	Identity *identity.Identity
	// Name is a friendly name. Default: "<hostname>-<pid>".
	Name string
	// Group is the peer's group (one subject token, may be empty).
	Group string
	// Hub marks the peer as a hub of the application.
	Hub bool
	// Codec encodes arguments, results and events. Default: JSON.
	Codec Codec
	// CallTimeout bounds calls whose ctx has no earlier deadline.
	// Default DefaultCallTimeout.
	CallTimeout time.Duration
	// Heartbeat is the presence heartbeat interval. Default
	// DefaultHeartbeat.
	Heartbeat time.Duration
	// GoneAfter is how long without a heartbeat before a peer is gone;
	// it must be longer than Heartbeat. Default: 3 × Heartbeat.
	GoneAfter time.Duration
	// MaxConcurrent bounds the functions the peer runs at once. Default
	// DefaultMaxConcurrent.
	MaxConcurrent int
	// TagConcurrency bounds the calls of each tag the peer runs at once
	// (the built-in tags info and ping have no bound): a call beyond it
	// is answered at once with code busy (ErrBusy), never queued.
	// Peer.SetTagConcurrency changes it for one tag. Default
	// DefaultTagConcurrency.
	TagConcurrency int
	// NoPresence makes a client-only peer: it does not announce itself,
	// and serves no tags to the bus (it can still call, emit, watch and
	// list peers). The CLI's client commands use it.
	NoPresence bool
	// Logger receives the peer's log lines. Default: discard.
	Logger *slog.Logger
	// OnError receives errors that have no caller to return to: event
	// handler errors, failed replies. They are also logged.
	OnError func(error)
}

// Option changes Options. The options of this package check their value
// and return an error wrapping ErrInvalidOption for an invalid one.
type Option func(*Options) error

// DefaultOptions returns the documented defaults.
func DefaultOptions() Options {
	return Options{
		Codec:          JSON,
		CallTimeout:    DefaultCallTimeout,
		Heartbeat:      DefaultHeartbeat,
		GoneAfter:      DefaultGoneAfter,
		MaxConcurrent:  DefaultMaxConcurrent,
		TagConcurrency: DefaultTagConcurrency,
	}
}

// invalid returns an error wrapping ErrInvalidOption.
func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidOption, fmt.Sprintf(format, a...))
}

// WithID sets the peer id: one subject token (a uuid is usual).
func WithID(id string) Option {
	return func(o *Options) error {
		if err := names.Token(id); err != nil {
			return invalid("peer id %q: %v", id, err)
		}
		o.ID = id
		return nil
	}
}

// WithIdentity makes id the peer's identity (see Options.Identity; nil
// for none).
func WithIdentity(id *identity.Identity) Option {
	return func(o *Options) error { o.Identity = id; return nil }
}

// WithName sets the friendly name ("" is the default name).
func WithName(name string) Option { return func(o *Options) error { o.Name = name; return nil } }

// WithGroup sets the group: one subject token, or "" for none.
func WithGroup(g string) Option {
	return func(o *Options) error {
		if err := validGroup(g); err != nil {
			return err
		}
		o.Group = g
		return nil
	}
}

// WithHub marks the peer as a hub.
func WithHub(hub bool) Option { return func(o *Options) error { o.Hub = hub; return nil } }

// WithCodec sets the codec (not nil).
func WithCodec(c Codec) Option {
	return func(o *Options) error {
		if c == nil {
			return invalid("nil codec")
		}
		o.Codec = c
		return nil
	}
}

// WithCallTimeout sets the default call timeout (positive).
func WithCallTimeout(d time.Duration) Option {
	return func(o *Options) error {
		if d <= 0 {
			return invalid("call timeout %v must be positive", d)
		}
		o.CallTimeout = d
		return nil
	}
}

// WithPresence sets the heartbeat interval (positive) and the gone
// timeout (longer than the heartbeat).
func WithPresence(heartbeat, goneAfter time.Duration) Option {
	return func(o *Options) error {
		if heartbeat <= 0 || goneAfter <= heartbeat {
			return invalid("presence heartbeat %v and gone timeout %v: want 0 < heartbeat < gone", heartbeat, goneAfter)
		}
		o.Heartbeat, o.GoneAfter = heartbeat, goneAfter
		return nil
	}
}

// WithMaxConcurrent bounds the functions run at once (positive).
func WithMaxConcurrent(n int) Option {
	return func(o *Options) error {
		if n <= 0 {
			return invalid("max concurrent %d must be positive", n)
		}
		o.MaxConcurrent = n
		return nil
	}
}

// WithTagConcurrency sets Options.TagConcurrency (positive).
func WithTagConcurrency(n int) Option {
	return func(o *Options) error {
		if n <= 0 {
			return invalid("tag concurrency %d must be positive", n)
		}
		o.TagConcurrency = n
		return nil
	}
}

// AsClient makes a client-only peer (see Options.NoPresence).
func AsClient() Option { return func(o *Options) error { o.NoPresence = true; return nil } }

// WithLogger injects the logger (nil: discard).
func WithLogger(l *slog.Logger) Option { return func(o *Options) error { o.Logger = l; return nil } }

// WithErrorHandler sets Options.OnError.
func WithErrorHandler(f func(error)) Option {
	return func(o *Options) error { o.OnError = f; return nil }
}

// FromEnv applies PEERBUS_GROUP, PEERBUS_HUB, PEERBUS_PEER_NAME,
// PEERBUS_IDENTITY and PEERBUS_PEER_ID when set (see Settings).
func FromEnv() Option { return func(o *Options) error { return o.ApplyEnv(os.LookupEnv) } }

// ApplyEnv applies the variables found by lookup to o.
func (o *Options) ApplyEnv(lookup func(string) (string, bool)) error {
	for _, s := range Settings() {
		if v, ok := lookup(s.Env); ok && (v != "" || s.ApplyEmpty) {
			if err := s.Set(o, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// validGroup checks a group: one token, or empty.
func validGroup(g string) error {
	if g == "" {
		return nil
	}
	if err := names.Token(g); err != nil {
		return invalid("group %q: %v", g, err)
	}
	return nil
}

// validate checks o and gives its zero fields their defaults.
func (o *Options) validate() error {
	if o.Codec == nil {
		o.Codec = JSON
	}
	switch {
	case o.CallTimeout < 0:
		return invalid("call timeout %v is negative", o.CallTimeout)
	case o.CallTimeout == 0:
		o.CallTimeout = DefaultCallTimeout
	}
	switch {
	case o.Heartbeat < 0:
		return invalid("presence heartbeat %v is negative", o.Heartbeat)
	case o.Heartbeat == 0:
		o.Heartbeat = DefaultHeartbeat
	}
	switch {
	case o.GoneAfter < 0:
		return invalid("presence gone timeout %v is negative", o.GoneAfter)
	case o.GoneAfter == 0:
		o.GoneAfter = 3 * o.Heartbeat
	case o.GoneAfter <= o.Heartbeat:
		return invalid("presence gone timeout %v must be longer than the heartbeat %v", o.GoneAfter, o.Heartbeat)
	}
	switch {
	case o.MaxConcurrent < 0:
		return invalid("max concurrent %d is negative", o.MaxConcurrent)
	case o.MaxConcurrent == 0:
		o.MaxConcurrent = DefaultMaxConcurrent
	}
	switch {
	case o.TagConcurrency < 0:
		return invalid("tag concurrency %d is negative", o.TagConcurrency)
	case o.TagConcurrency == 0:
		o.TagConcurrency = DefaultTagConcurrency
	}
	if err := validGroup(o.Group); err != nil {
		return err
	}
	if o.Identity != nil {
		switch o.ID {
		case "":
			o.ID = o.Identity.PeerID()
		case o.Identity.PeerID():
		default:
			return invalid("peer id %q: the identity %s gives id %s", o.ID, o.Identity.PublicKey(), o.Identity.PeerID())
		}
	}
	if o.ID != "" {
		if err := names.Token(o.ID); err != nil {
			return invalid("peer id %q: %v", o.ID, err)
		}
	}
	return nil
}
