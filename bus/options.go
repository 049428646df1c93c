package bus

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Default values used by DefaultOptions.
const (
	// DefaultListen is the client listen address of an embedded node. It
	// is on loopback so that only local programs (the CLI, other NATS
	// clients) reach a node unless the user asks for more.
	DefaultListen = "127.0.0.1:4222"
	// DefaultClusterName is the NATS cluster name nodes use when none is
	// given. Only nodes with the same cluster name form one bus.
	DefaultClusterName = "peerbus"
	// DefaultClusterPort is the port used for the cluster listener when
	// routes are given but no cluster listen address is.
	DefaultClusterPort = 6222
	// DefaultReadyTimeout bounds how long Start waits for the embedded
	// server and its JetStream to become ready.
	DefaultReadyTimeout = 30 * time.Second
)

// Environment variables read by FromEnv. Flags of the CLI override them,
// and they override the defaults.
const (
	EnvName        = "PEERBUS_NAME"         // node name
	EnvListen      = "PEERBUS_LISTEN"       // client listen address host:port
	EnvCluster     = "PEERBUS_CLUSTER"      // cluster listen address host:port
	EnvClusterName = "PEERBUS_CLUSTER_NAME" // cluster name
	EnvRoutes      = "PEERBUS_ROUTES"       // comma separated route URLs (seeds)
	EnvDataDir     = "PEERBUS_DATA_DIR"     // JetStream data directory
	EnvNATSURL     = "PEERBUS_NATS_URL"     // external NATS URL (no embedded server)
	EnvNoJetStream = "PEERBUS_NO_JETSTREAM" // "1"/"true" disables JetStream
)

// Options configures a Node. Obtain a populated value with
// DefaultOptions; the zero value is not meant to be used directly.
type Options struct {
	// Name is the node (server) name. It must be unique in a cluster.
	// Default: "<hostname>-<client port>", or "<hostname>-<random>" when
	// the client port is chosen by the system.
	Name string
	// Listen is the client listen address, host:port. A port of -1 picks
	// a free port. Default: DefaultListen ("127.0.0.1:4222").
	Listen string
	// ClusterListen is the cluster (route) listen address, host:port.
	// Empty means no cluster listener, unless Routes are given, in which
	// case the listener defaults to the host of Listen with port
	// DefaultClusterPort (6222). A port of -1 picks a free port.
	ClusterListen string
	// ClusterName is the NATS cluster name. Default: "peerbus".
	ClusterName string
	// Routes are the seed route URLs (nats-route://host:port or
	// host:port) of other nodes. Two nodes with routes to each other (or
	// one to the other) form one bus.
	Routes []string
	// DataDir is the directory where JetStream stores its data.
	// Default: $XDG_DATA_HOME/peerbus/<Name>, or
	// ~/.local/share/peerbus/<Name> when XDG_DATA_HOME is unset.
	DataDir string
	// NoJetStream disables JetStream on the embedded server.
	NoJetStream bool
	// ExternalURL, when set, makes the node connect to an existing NATS
	// deployment at this URL instead of embedding a server. Listen,
	// cluster and data options are then ignored.
	ExternalURL string
	// MaxPayload is the largest message the embedded server accepts, in
	// bytes. Zero keeps the server default (1 MiB).
	MaxPayload int32
	// ReadyTimeout bounds Start. Default: DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// Logger receives the node's and the embedded server's log lines.
	// Default: a logger that discards everything.
	Logger *slog.Logger
	// Debug enables the embedded server's debug log lines.
	Debug bool
}

// Option changes Options; see the With* functions.
type Option func(*Options) error

// DefaultOptions returns the documented defaults.
func DefaultOptions() Options {
	return Options{
		Listen:       DefaultListen,
		ClusterName:  DefaultClusterName,
		ReadyTimeout: DefaultReadyTimeout,
	}
}

// WithName sets the node name.
func WithName(name string) Option {
	return func(o *Options) error { o.Name = name; return nil }
}

// WithListen sets the client listen address (host:port, port -1 = any).
func WithListen(addr string) Option {
	return func(o *Options) error { o.Listen = addr; return nil }
}

// WithCluster sets the cluster listen address (host:port, port -1 = any).
func WithCluster(addr string) Option {
	return func(o *Options) error { o.ClusterListen = addr; return nil }
}

// WithClusterName sets the cluster name.
func WithClusterName(name string) Option {
	return func(o *Options) error { o.ClusterName = name; return nil }
}

// WithRoutes adds seed route URLs.
func WithRoutes(routes ...string) Option {
	return func(o *Options) error { o.Routes = append(o.Routes, routes...); return nil }
}

// WithDataDir sets the JetStream data directory.
func WithDataDir(dir string) Option {
	return func(o *Options) error { o.DataDir = dir; return nil }
}

// WithExternalURL makes the node a client of an existing NATS deployment.
func WithExternalURL(url string) Option {
	return func(o *Options) error { o.ExternalURL = url; return nil }
}

// WithLogger injects the logger.
func WithLogger(l *slog.Logger) Option {
	return func(o *Options) error { o.Logger = l; return nil }
}

// WithoutJetStream disables JetStream on the embedded server.
func WithoutJetStream() Option {
	return func(o *Options) error { o.NoJetStream = true; return nil }
}

// WithMaxPayload sets the embedded server's max payload.
func WithMaxPayload(n int32) Option {
	return func(o *Options) error {
		if n < 0 {
			return fmt.Errorf("%w: max payload %d", ErrInvalidOption, n)
		}
		o.MaxPayload = n
		return nil
	}
}

// WithReadyTimeout bounds how long Start waits for readiness.
func WithReadyTimeout(d time.Duration) Option {
	return func(o *Options) error { o.ReadyTimeout = d; return nil }
}

// WithOptions replaces all options with opts.
func WithOptions(opts Options) Option {
	return func(o *Options) error { *o = opts; return nil }
}

// FromEnv applies the PEERBUS_* environment variables that are set.
func FromEnv() Option {
	return func(o *Options) error { return o.ApplyEnv(os.LookupEnv) }
}

// ApplyEnv applies the PEERBUS_* variables found by lookup (os.LookupEnv
// in normal use) to o.
func (o *Options) ApplyEnv(lookup func(string) (string, bool)) error {
	if v, ok := lookup(EnvName); ok && v != "" {
		o.Name = v
	}
	if v, ok := lookup(EnvListen); ok && v != "" {
		o.Listen = v
	}
	if v, ok := lookup(EnvCluster); ok && v != "" {
		o.ClusterListen = v
	}
	if v, ok := lookup(EnvClusterName); ok && v != "" {
		o.ClusterName = v
	}
	if v, ok := lookup(EnvRoutes); ok && v != "" {
		o.Routes = SplitList(v)
	}
	if v, ok := lookup(EnvDataDir); ok && v != "" {
		o.DataDir = v
	}
	if v, ok := lookup(EnvNATSURL); ok && v != "" {
		o.ExternalURL = v
	}
	if v, ok := lookup(EnvNoJetStream); ok && v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%w: %s=%q is not a boolean", ErrInvalidOption, EnvNoJetStream, v)
		}
		o.NoJetStream = b
	}
	return nil
}

// SplitList splits a comma or space separated list, dropping empty items.
func SplitList(s string) []string {
	f := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' })
	return f
}

// hostPort parses host:port where port may be -1 (any free port).
func hostPort(addr, what string) (string, int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %s address %q: %v", ErrInvalidOption, what, addr, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("%w: %s address %q: bad port", ErrInvalidOption, what, addr)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

// routeURLs parses seed routes, accepting bare host:port.
func routeURLs(routes []string) ([]*url.URL, error) {
	var out []*url.URL
	for _, r := range routes {
		if !strings.Contains(r, "://") {
			r = "nats-route://" + r
		}
		u, err := url.Parse(r)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("%w: route %q", ErrInvalidOption, r)
		}
		out = append(out, u)
	}
	return out, nil
}

// defaultDataDir returns the documented default data directory for name.
func defaultDataDir(name string) string {
	base := os.Getenv("XDG_DATA_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil || home == "" {
			home = os.TempDir()
		}
		base = filepath.Join(home, ".local", "share")
	}
	return filepath.Join(base, "peerbus", name)
}

// validate checks o and fills derived defaults.
func (o *Options) validate() error {
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = DefaultReadyTimeout
	}
	if o.ExternalURL != "" {
		return nil
	}
	if o.Listen == "" {
		o.Listen = DefaultListen
	}
	if o.ClusterName == "" {
		o.ClusterName = DefaultClusterName
	}
	if strings.ContainsAny(o.ClusterName, " \t.*>") {
		return fmt.Errorf("%w: cluster name %q", ErrInvalidOption, o.ClusterName)
	}
	if _, _, err := hostPort(o.Listen, "listen"); err != nil {
		return err
	}
	if o.ClusterListen != "" {
		if _, _, err := hostPort(o.ClusterListen, "cluster"); err != nil {
			return err
		}
	}
	if _, err := routeURLs(o.Routes); err != nil {
		return err
	}
	if o.Name != "" && strings.ContainsAny(o.Name, " \t.*>") {
		return fmt.Errorf("%w: node name %q must not contain spaces, '.', '*' or '>'", ErrInvalidOption, o.Name)
	}
	return nil
}
