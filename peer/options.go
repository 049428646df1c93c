package peer

import (
	"fmt"
	"log/slog"
	"os"
	"time"
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
)

// Environment variables read by FromEnv.
const (
	EnvGroup    = "PEERBUS_GROUP"     // peer group
	EnvHub      = "PEERBUS_HUB"       // "1"/"true": this peer is a hub
	EnvPeerName = "PEERBUS_PEER_NAME" // friendly name
	EnvPeerID   = "PEERBUS_PEER_ID"   // fixed peer id (uuid)
)

// Options configures a Peer. DefaultOptions gives the defaults.
type Options struct {
	// ID is the peer id. Default: a new random uuid.
	ID string
	// Name is a friendly name. Default: "<hostname>-<pid>".
	Name string
	// Group is the peer's group (one subject token, may be empty).
	Group string
	// Hub marks the peer as a hub of the application.
	Hub bool
	// Codec encodes arguments, results and events. Default: JSON.
	Codec Codec
	// CallTimeout bounds calls whose ctx has no earlier deadline.
	CallTimeout time.Duration
	// Heartbeat is the presence heartbeat interval.
	Heartbeat time.Duration
	// GoneAfter is how long without a heartbeat before a peer is gone.
	GoneAfter time.Duration
	// MaxConcurrent bounds the functions the peer runs at once.
	MaxConcurrent int
	// NoPresence makes a client-only peer: it does not announce itself,
	// and serves no tags to the bus (it can still call, emit, watch and
	// list peers). The CLI's client commands use it.
	NoPresence bool
	// Logger receives the peer's log lines. Default: discard.
	Logger *slog.Logger
	// OnError receives errors that have no caller to return to: event
	// handler errors, failed replies. They are also logged.
	OnError func(error)
	// Log configures the event log stream this peer creates when it does
	// not exist yet (see LogConfig).
	Log LogConfig
}

// Option changes Options.
type Option func(*Options) error

// DefaultOptions returns the documented defaults.
func DefaultOptions() Options {
	return Options{
		Codec:         JSON,
		CallTimeout:   DefaultCallTimeout,
		Heartbeat:     DefaultHeartbeat,
		GoneAfter:     DefaultGoneAfter,
		MaxConcurrent: DefaultMaxConcurrent,
	}
}

// WithID sets the peer id.
func WithID(id string) Option { return func(o *Options) error { o.ID = id; return nil } }

// WithName sets the friendly name.
func WithName(name string) Option { return func(o *Options) error { o.Name = name; return nil } }

// WithGroup sets the group.
func WithGroup(g string) Option { return func(o *Options) error { o.Group = g; return nil } }

// WithHub marks the peer as a hub.
func WithHub(hub bool) Option { return func(o *Options) error { o.Hub = hub; return nil } }

// WithCodec sets the codec.
func WithCodec(c Codec) Option { return func(o *Options) error { o.Codec = c; return nil } }

// WithCallTimeout sets the default call timeout.
func WithCallTimeout(d time.Duration) Option {
	return func(o *Options) error { o.CallTimeout = d; return nil }
}

// WithPresence sets the heartbeat interval and the gone timeout.
func WithPresence(heartbeat, goneAfter time.Duration) Option {
	return func(o *Options) error { o.Heartbeat, o.GoneAfter = heartbeat, goneAfter; return nil }
}

// WithMaxConcurrent bounds the functions run at once.
func WithMaxConcurrent(n int) Option {
	return func(o *Options) error { o.MaxConcurrent = n; return nil }
}

// AsClient makes a client-only peer (see Options.NoPresence).
func AsClient() Option { return func(o *Options) error { o.NoPresence = true; return nil } }

// WithLogger injects the logger.
func WithLogger(l *slog.Logger) Option { return func(o *Options) error { o.Logger = l; return nil } }

// WithErrorHandler sets Options.OnError.
func WithErrorHandler(f func(error)) Option {
	return func(o *Options) error { o.OnError = f; return nil }
}

// WithEventLog sets the event log configuration (see LogConfig).
func WithEventLog(c LogConfig) Option { return func(o *Options) error { o.Log = c; return nil } }

// FromEnv applies PEERBUS_GROUP, PEERBUS_HUB, PEERBUS_PEER_NAME and
// PEERBUS_PEER_ID when set.
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

func (o *Options) validate() error {
	if o.Codec == nil {
		o.Codec = JSON
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.GoneAfter <= o.Heartbeat {
		o.GoneAfter = 3 * o.Heartbeat
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = DefaultMaxConcurrent
	}
	if o.Group != "" {
		if err := validToken(o.Group); err != nil {
			return fmt.Errorf("peer: invalid group %q: %v", o.Group, err)
		}
	}
	if o.ID != "" {
		if err := validToken(o.ID); err != nil {
			return fmt.Errorf("peer: invalid id %q: %v", o.ID, err)
		}
	}
	return nil
}
