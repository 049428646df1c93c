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

	"github.com/nats-io/nkeys"

	"github.com/peerbus/peerbus/identity"
	"github.com/peerbus/peerbus/policy"
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
	// DefaultDiscoveryGroup is the UDP multicast group and port of LAN
	// discovery beacons (an administratively scoped IPv4 group, so
	// beacons stay on the site).
	DefaultDiscoveryGroup = "239.255.80.66:6230"
	// DefaultDiscoveryWindow is how long a discovering node listens for
	// beacons before it starts its server with the routes it found.
	DefaultDiscoveryWindow = 2 * time.Second
	// DefaultDiscoveryInterval is the interval of discovery beacons.
	DefaultDiscoveryInterval = time.Second
	// DefaultLogReplicas is the replica count the node keeps the event
	// log at once its JetStream cluster has at least that many servers.
	DefaultLogReplicas = 3
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
	// The server's notices are logged at debug level, its warnings and
	// errors at theirs. Default: a logger that discards everything.
	Logger *slog.Logger
	// Debug enables the embedded server's debug log lines.
	Debug bool

	// Discover turns on zero-config LAN discovery: the node announces
	// its cluster name and route URL with UDP multicast beacons and
	// routes to the nodes of its cluster it hears (see discovery.go).
	Discover bool
	// DiscoveryGroup is the multicast group:port of the beacons.
	// Default: DefaultDiscoveryGroup.
	DiscoveryGroup string
	// DiscoveryInterface names the interface beacons are sent and
	// received on. Default: the interface of a specific cluster listen
	// address, else the first up, multicast-capable, non-loopback
	// interface with an IPv4 address.
	DiscoveryInterface string
	// DiscoveryWindow is how long the node listens for beacons before it
	// starts its server with the routes it heard. Default:
	// DefaultDiscoveryWindow.
	DiscoveryWindow time.Duration
	// DiscoveryInterval is the interval between beacons. Default:
	// DefaultDiscoveryInterval.
	DiscoveryInterval time.Duration

	// LeafURLs make the embedded server a leafnode of an existing NATS
	// deployment (nats-leaf://, nats://, tls:// URLs with optional
	// user:password@). Without JetStreamDomain the node runs no
	// JetStream of its own and its peers use the hub's.
	LeafURLs []string
	// JetStreamDomain is the JetStream domain of the embedded server.
	// A leafnode with its own JetStream needs one, distinct from the
	// hub's. Default: none.
	JetStreamDomain string

	// LogReplicas is the replica count the node keeps the event log
	// (and the projection snapshots) at: 0 means automatic
	// (DefaultLogReplicas once the JetStream cluster has that many
	// servers, else 1; never lowered), a positive value is used as is
	// (capped at the cluster size), -1 leaves the streams alone.
	LogReplicas int
	// LogSync is how often the JetStream store of the embedded server
	// is synced to disk: 0 (the default, LogSyncAlways) syncs every
	// write before it is acknowledged, so that an acknowledged event
	// survives an OS crash or a power loss of the node; a positive
	// interval syncs that often (nats-server's own default is 2 minutes)
	// and acknowledges before the sync: an OS crash or a power loss can
	// lose the events of the last interval on that node. See the
	// README's "What an acknowledgement guarantees".
	LogSync time.Duration

	// Monitor is the address (host:port) of the embedded server's HTTP
	// monitoring endpoints (/varz, /connz, /routez, /jsz, /healthz...),
	// as nats-server's -m serves them. A port alone (":8222" or "8222")
	// listens on 127.0.0.1; port -1 picks a free one (Node.MonitorURL).
	// Default "": no monitoring.
	Monitor string

	// Token is the token clients must present on the client port. It
	// excludes User and NKeys.
	Token string
	// User and Password are the credentials clients must present.
	User, Password string
	// NKeys are public user nkeys ("U...") allowed on the client port.
	NKeys []string
	// NKeysFile names a file of more allowed public user nkeys, one per
	// line; blank lines and lines starting with # are skipped.
	NKeysFile string
	// NKeySeed is the nkey seed ("SU...", or a file holding it) the node
	// connects with in external mode and on its leafnode connection.
	NKeySeed string
	// Policy, when set, admits the identities it lists on the client
	// port, each with the permissions it grants (see package policy).
	// The node's in-process connections have all permissions. It
	// excludes Token; users and keys given by User, NKeys and NKeysFile
	// keep all permissions.
	Policy *policy.Policy
	// Identity is the identity of the node's peer. In external mode the
	// node connects with it, on an embedded server its connections take
	// their reply inboxes under the identity's inbox prefix (see package
	// identity), and a leafnode connects with its key. It excludes
	// NKeySeed and CredsFile.
	Identity *identity.Identity
	// CredsFile is a JWT credentials file the node connects with in
	// external mode and on its leafnode connection.
	CredsFile string
	// TLSCert and TLSKey are PEM files of the client port's certificate
	// (and, in external mode, the node's client certificate).
	TLSCert, TLSKey string
	// TLSCA is a PEM file of the CA that signs client certificates (with
	// TLSVerify) and the certificates of remote servers (external mode,
	// leafnode).
	TLSCA string
	// TLSVerify makes the client port require a client certificate
	// signed by TLSCA (mutual TLS).
	TLSVerify bool
	// ClusterUser and ClusterPassword are the credentials routes must
	// present; the node presents them on the routes it opens.
	ClusterUser, ClusterPassword string
	// ClusterTLSCert, ClusterTLSKey and ClusterTLSCA turn on mutual TLS
	// on routes: each side presents its certificate and verifies the
	// other's against the CA.
	ClusterTLSCert, ClusterTLSKey, ClusterTLSCA string
}

// Option changes Options; see the With* functions. Each checks its
// values and returns an error wrapping ErrInvalidOption for one it
// cannot use; New returns that error. Checks that need several options
// together (a token excludes users, for one) are made by New once every
// option is applied.
type Option func(*Options) error

// DefaultOptions returns the documented defaults: a node on
// DefaultListen (loopback, port 4222) with JetStream, in cluster
// DefaultClusterName, without a cluster listener, discovery, leafnode or
// security; its name and data directory are worked out at Start (see
// Options.Name and Options.DataDir). New starts from these.
func DefaultOptions() Options {
	return Options{
		Listen:       DefaultListen,
		ClusterName:  DefaultClusterName,
		ReadyTimeout: DefaultReadyTimeout,
		// Discovery defaults are filled in even with discovery off, so
		// that turning it on needs no other option.
		DiscoveryGroup:    DefaultDiscoveryGroup,
		DiscoveryWindow:   DefaultDiscoveryWindow,
		DiscoveryInterval: DefaultDiscoveryInterval,
	}
}

// WithName sets the node name ("" keeps the default). A name must not
// contain spaces, '.', '*' or '>'.
func WithName(name string) Option {
	return func(o *Options) error {
		if err := checkName(name); err != nil {
			return err
		}
		o.Name = name
		return nil
	}
}

// WithListen sets the client listen address (host:port, port -1 = any;
// "" keeps DefaultListen).
func WithListen(addr string) Option {
	return func(o *Options) error {
		if addr != "" {
			if _, _, err := hostPort(addr, "listen"); err != nil {
				return err
			}
		}
		o.Listen = addr
		return nil
	}
}

// WithCluster sets the cluster listen address (host:port, port -1 = any;
// "" for none).
func WithCluster(addr string) Option {
	return func(o *Options) error {
		if addr != "" {
			if _, _, err := hostPort(addr, "cluster"); err != nil {
				return err
			}
		}
		o.ClusterListen = addr
		return nil
	}
}

// WithClusterName sets the cluster name ("" keeps DefaultClusterName). A
// cluster name must not contain spaces, '.', '*' or '>'.
func WithClusterName(name string) Option {
	return func(o *Options) error {
		if err := checkClusterName(name); err != nil {
			return err
		}
		o.ClusterName = name
		return nil
	}
}

// WithRoutes adds seed route URLs (nats-route://host:port or host:port).
func WithRoutes(routes ...string) Option {
	return func(o *Options) error {
		if _, err := routeURLs(routes); err != nil {
			return err
		}
		o.Routes = append(o.Routes, routes...)
		return nil
	}
}

// WithDataDir sets the JetStream data directory ("" keeps the default,
// see Options.DataDir).
func WithDataDir(dir string) Option {
	return func(o *Options) error { o.DataDir = dir; return nil }
}

// WithExternalURL makes the node a client of an existing NATS deployment
// at url (a NATS URL, or a comma separated list of them; "" embeds a
// server).
func WithExternalURL(url string) Option {
	return func(o *Options) error {
		if err := checkExternalURL(url); err != nil {
			return err
		}
		o.ExternalURL = url
		return nil
	}
}

// WithLogger injects the logger (nil discards the log).
func WithLogger(l *slog.Logger) Option {
	return func(o *Options) error { o.Logger = l; return nil }
}

// WithoutJetStream disables JetStream on the embedded server.
func WithoutJetStream() Option {
	return func(o *Options) error { o.NoJetStream = true; return nil }
}

// WithMaxPayload sets the embedded server's max payload in bytes (0
// keeps the server's default, 1 MiB).
func WithMaxPayload(n int32) Option {
	return func(o *Options) error {
		if n < 0 {
			return fmt.Errorf("%w: max payload %d", ErrInvalidOption, n)
		}
		o.MaxPayload = n
		return nil
	}
}

// WithReadyTimeout bounds how long Start waits for readiness (0 keeps
// DefaultReadyTimeout).
func WithReadyTimeout(d time.Duration) Option {
	return func(o *Options) error {
		if d < 0 {
			return fmt.Errorf("%w: ready timeout %v is negative", ErrInvalidOption, d)
		}
		o.ReadyTimeout = d
		return nil
	}
}

// WithDiscovery turns on LAN discovery by multicast beacons (see
// Options.Discover).
func WithDiscovery() Option {
	return func(o *Options) error { o.Discover = true; return nil }
}

// WithDiscoveryGroup sets the multicast group:port of discovery beacons
// ("" keeps DefaultDiscoveryGroup) and the interface they use ("" picks
// one).
func WithDiscoveryGroup(group, iface string) Option {
	return func(o *Options) error {
		if group != "" {
			if _, err := parseGroup(group); err != nil {
				return err
			}
		}
		o.DiscoveryGroup, o.DiscoveryInterface = group, iface
		return nil
	}
}

// WithDiscoveryWindow sets how long a discovering node listens before it
// starts, and the beacon interval (zero keeps a default; a negative
// duration is an error).
func WithDiscoveryWindow(window, interval time.Duration) Option {
	return func(o *Options) error {
		if window < 0 || interval < 0 {
			return fmt.Errorf("%w: discovery window %v, interval %v: negative", ErrInvalidOption, window, interval)
		}
		if window > 0 {
			o.DiscoveryWindow = window
		}
		if interval > 0 {
			o.DiscoveryInterval = interval
		}
		return nil
	}
}

// WithLeaf makes the embedded server a leafnode of the NATS deployment at
// urls (see Options.LeafURLs).
func WithLeaf(urls ...string) Option {
	return func(o *Options) error {
		if _, err := leafURLs(urls); err != nil {
			return err
		}
		o.LeafURLs = append(o.LeafURLs, urls...)
		return nil
	}
}

// WithJetStreamDomain sets the embedded server's JetStream domain ("" for
// none, or the node name on a leafnode). A domain must not contain
// spaces, '.', '*' or '>'.
func WithJetStreamDomain(domain string) Option {
	return func(o *Options) error {
		if err := checkDomain(domain); err != nil {
			return err
		}
		o.JetStreamDomain = domain
		return nil
	}
}

// WithLogReplicas sets Options.LogReplicas: 0 automatic, 1 to 5 that
// many, -1 unmanaged.
func WithLogReplicas(n int) Option {
	return func(o *Options) error {
		if err := checkLogReplicas(n); err != nil {
			return err
		}
		o.LogReplicas = n
		return nil
	}
}

// WithMonitor serves the embedded server's HTTP monitoring on addr (see
// Options.Monitor; "" for none).
func WithMonitor(addr string) Option {
	return func(o *Options) error {
		if _, _, err := monitorHostPort(addr); err != nil {
			return err
		}
		o.Monitor = addr
		return nil
	}
}

// LogSyncAlways is the LogSync value that syncs every write.
const LogSyncAlways time.Duration = 0

// WithLogSync sets Options.LogSync: LogSyncAlways (0) syncs every write
// to disk before it is acknowledged, a positive interval syncs that
// often.
func WithLogSync(d time.Duration) Option {
	return func(o *Options) error {
		if err := checkLogSync(d); err != nil {
			return err
		}
		o.LogSync = d
		return nil
	}
}

// monitorHostPort splits a monitoring address: a port alone or an empty
// host is loopback. It returns port 0 for "".
func monitorHostPort(addr string) (string, int, error) {
	if addr == "" {
		return "", 0, nil
	}
	if !strings.Contains(addr, ":") {
		addr = ":" + addr
	}
	host, port, err := hostPort(addr, "monitor")
	if err != nil {
		return "", 0, err
	}
	if h, _, _ := net.SplitHostPort(addr); h == "" {
		host = "127.0.0.1"
	}
	if port == 0 {
		return "", 0, fmt.Errorf("%w: monitor address %q: port 0 (use -1 for a free port)", ErrInvalidOption, addr)
	}
	return host, port, nil
}

// checkLogSync checks Options.LogSync.
func checkLogSync(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("%w: log sync interval %v (want 0 for always, or a positive interval)", ErrInvalidOption, d)
	}
	return nil
}

// WithToken requires clients to present token ("" for none).
func WithToken(token string) Option {
	return func(o *Options) error { o.Token = token; return nil }
}

// WithUser requires clients to present user and password; both are
// given, or neither.
func WithUser(user, password string) Option {
	return func(o *Options) error {
		if (user == "") != (password == "") {
			return fmt.Errorf("%w: user and password go together", ErrInvalidOption)
		}
		o.User, o.Password = user, password
		return nil
	}
}

// WithNKeys allows clients with these public user nkeys ("U...").
func WithNKeys(keys ...string) Option {
	return func(o *Options) error {
		if err := checkNKeys(keys); err != nil {
			return err
		}
		o.NKeys = append(o.NKeys, keys...)
		return nil
	}
}

// WithTLS serves the client port with TLS using the PEM files cert and
// key (given together). A non-empty ca verifies client certificates
// when verify is set (which needs ca and cert), and remote servers in
// external and leafnode mode.
func WithTLS(cert, key, ca string, verify bool) Option {
	return func(o *Options) error {
		if (cert == "") != (key == "") {
			return fmt.Errorf("%w: TLS certificate and key go together", ErrInvalidOption)
		}
		if verify && (ca == "" || cert == "") {
			return fmt.Errorf("%w: verifying client certificates needs a TLS certificate, key and CA", ErrInvalidOption)
		}
		o.TLSCert, o.TLSKey, o.TLSCA, o.TLSVerify = cert, key, ca, verify
		return nil
	}
}

// WithPolicy sets Options.Policy (nil for none).
func WithPolicy(p *policy.Policy) Option {
	return func(o *Options) error { o.Policy = p; return nil }
}

// WithIdentity sets Options.Identity (nil for none).
func WithIdentity(id *identity.Identity) Option {
	return func(o *Options) error { o.Identity = id; return nil }
}

// WithClusterAuth requires routes to present user and password, and
// presents them on the node's own routes; both are given, or neither.
func WithClusterAuth(user, password string) Option {
	return func(o *Options) error {
		if (user == "") != (password == "") {
			return fmt.Errorf("%w: cluster user and cluster password go together", ErrInvalidOption)
		}
		o.ClusterUser, o.ClusterPassword = user, password
		return nil
	}
}

// WithClusterTLS turns on mutual TLS on routes with the PEM files cert,
// key and ca: all three, or none.
func WithClusterTLS(cert, key, ca string) Option {
	return func(o *Options) error {
		if n := countSet(cert, key, ca); n != 0 && n != 3 {
			return fmt.Errorf("%w: route TLS needs a certificate, a key and a CA", ErrInvalidOption)
		}
		o.ClusterTLSCert, o.ClusterTLSKey, o.ClusterTLSCA = cert, key, ca
		return nil
	}
}

// WithOptions replaces all options with opts. New checks them once
// every option is applied.
func WithOptions(opts Options) Option {
	return func(o *Options) error { *o = opts; return nil }
}

// FromEnv applies the PEERBUS_* environment variables that are set (see
// ApplyEnv).
func FromEnv() Option {
	return func(o *Options) error { return o.ApplyEnv(os.LookupEnv) }
}

// checkName checks a node name.
func checkName(name string) error {
	if strings.ContainsAny(name, " \t.*>") {
		return fmt.Errorf("%w: node name %q must not contain spaces, '.', '*' or '>'", ErrInvalidOption, name)
	}
	return nil
}

// checkClusterName checks a cluster name.
func checkClusterName(name string) error {
	if strings.ContainsAny(name, " \t.*>") {
		return fmt.Errorf("%w: cluster name %q", ErrInvalidOption, name)
	}
	return nil
}

// checkDomain checks a JetStream domain.
func checkDomain(domain string) error {
	if strings.ContainsAny(domain, " \t.*>") {
		return fmt.Errorf("%w: JetStream domain %q", ErrInvalidOption, domain)
	}
	return nil
}

// checkLogReplicas checks Options.LogReplicas.
func checkLogReplicas(n int) error {
	if n < -1 || n > 5 {
		return fmt.Errorf("%w: log replicas %d (want -1 to 5)", ErrInvalidOption, n)
	}
	return nil
}

// checkNKeys checks public user nkeys.
func checkNKeys(keys []string) error {
	for _, k := range keys {
		if !nkeys.IsValidPublicUserKey(k) {
			return fmt.Errorf("%w: %q is not a public user nkey", ErrInvalidOption, k)
		}
	}
	return nil
}

// checkExternalURL checks an external NATS URL list the way nats.go
// reads it: comma separated, each URL with a host, a URL without a
// scheme taken as nats://.
func checkExternalURL(list string) error {
	if list == "" {
		return nil
	}
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if !strings.Contains(s, "://") {
			s = "nats://" + s
		}
		if u, err := url.Parse(s); err != nil || u.Host == "" {
			return fmt.Errorf("%w: NATS URL %q", ErrInvalidOption, redactURLs([]string{s}))
		}
	}
	return nil
}

// countSet counts the non-empty strings.
func countSet(s ...string) int {
	n := 0
	for _, x := range s {
		if x != "" {
			n++
		}
	}
	return n
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
	if _, _, err := monitorHostPort(o.Monitor); err != nil {
		return err
	}
	if o.ExternalURL != "" {
		if o.Monitor != "" {
			return fmt.Errorf("%w: monitoring needs an embedded server, not an external NATS URL", ErrInvalidOption)
		}
		if o.Discover || len(o.LeafURLs) > 0 {
			return fmt.Errorf("%w: discovery and leafnode need an embedded server, not an external NATS URL", ErrInvalidOption)
		}
		if err := checkExternalURL(o.ExternalURL); err != nil {
			return err
		}
		return o.validateClientCreds()
	}
	if o.Listen == "" {
		o.Listen = DefaultListen
	}
	if o.ClusterName == "" {
		o.ClusterName = DefaultClusterName
	}
	if err := checkClusterName(o.ClusterName); err != nil {
		return err
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
	if err := checkName(o.Name); err != nil {
		return err
	}
	if o.DiscoveryWindow <= 0 {
		o.DiscoveryWindow = DefaultDiscoveryWindow
	}
	if o.DiscoveryInterval <= 0 {
		o.DiscoveryInterval = DefaultDiscoveryInterval
	}
	if o.DiscoveryGroup == "" {
		o.DiscoveryGroup = DefaultDiscoveryGroup
	}
	if o.Discover {
		if _, err := parseGroup(o.DiscoveryGroup); err != nil {
			return err
		}
	}
	if _, err := leafURLs(o.LeafURLs); err != nil {
		return err
	}
	if err := checkDomain(o.JetStreamDomain); err != nil {
		return err
	}
	if err := checkLogSync(o.LogSync); err != nil {
		return err
	}
	if err := checkLogReplicas(o.LogReplicas); err != nil {
		return err
	}
	return o.validateSecurity()
}
