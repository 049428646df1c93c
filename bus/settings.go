package bus

import (
	"fmt"

	"github.com/peerbus/peerbus/policy"
	"math"
	"strconv"
	"strings"
	"time"
)

// Environment variables read by FromEnv and ApplyEnv (see Settings).
// Flags of the CLI override them, and they override the defaults.
const (
	EnvName        = "PEERBUS_NAME"         // node name
	EnvListen      = "PEERBUS_LISTEN"       // client listen address host:port
	EnvCluster     = "PEERBUS_CLUSTER"      // cluster listen address host:port
	EnvClusterName = "PEERBUS_CLUSTER_NAME" // cluster name
	EnvRoutes      = "PEERBUS_ROUTES"       // comma separated route URLs (seeds)
	EnvDataDir     = "PEERBUS_DATA_DIR"     // JetStream data directory
	EnvNATSURL     = "PEERBUS_NATS_URL"     // external NATS URL (no embedded server)
	EnvNoJetStream = "PEERBUS_NO_JETSTREAM" // "1"/"true" disables JetStream

	EnvDiscover        = "PEERBUS_DISCOVER"         // "1"/"true": LAN discovery by multicast
	EnvDiscoveryGroup  = "PEERBUS_DISCOVERY_GROUP"  // multicast group:port of beacons
	EnvDiscoveryIface  = "PEERBUS_DISCOVERY_IFACE"  // interface of beacons
	EnvDiscoveryWindow = "PEERBUS_DISCOVERY_WINDOW" // listening time before start (duration)
	EnvLeaf            = "PEERBUS_LEAF"             // leafnode remote URL(s)
	EnvJSDomain        = "PEERBUS_JS_DOMAIN"        // JetStream domain
	EnvLogReplicas     = "PEERBUS_LOG_REPLICAS"     // replicas of the event log (0 auto, -1 unmanaged)
	EnvMonitor         = "PEERBUS_MONITOR"          // HTTP monitoring address host:port
	EnvLogSync         = "PEERBUS_LOG_SYNC"         // "always" or a sync interval of the JetStream store

	EnvAuthToken       = "PEERBUS_AUTH_TOKEN"       // client token
	EnvUser            = "PEERBUS_USER"             // client user
	EnvPassword        = "PEERBUS_PASSWORD"         // client password
	EnvNKeysFile       = "PEERBUS_NKEYS_FILE"       // file of allowed user nkeys
	EnvAuthorize       = "PEERBUS_AUTHORIZE"        // policy file: identities and their grants
	EnvNKeySeed        = "PEERBUS_NKEY_SEED"        // nkey seed (or seed file) to connect with
	EnvCreds           = "PEERBUS_CREDS"            // JWT credentials file to connect with
	EnvTLSCert         = "PEERBUS_TLS_CERT"         // client port certificate (PEM file)
	EnvTLSKey          = "PEERBUS_TLS_KEY"          // its key
	EnvTLSCA           = "PEERBUS_TLS_CA"           // CA of client certificates and remote servers
	EnvTLSVerify       = "PEERBUS_TLS_VERIFY"       // "1"/"true": clients need a certificate
	EnvClusterUser     = "PEERBUS_CLUSTER_USER"     // route user
	EnvClusterPassword = "PEERBUS_CLUSTER_PASSWORD" // route password
	EnvClusterTLSCert  = "PEERBUS_CLUSTER_TLS_CERT" // route certificate (PEM file)
	EnvClusterTLSKey   = "PEERBUS_CLUSTER_TLS_KEY"  // its key
	EnvClusterTLSCA    = "PEERBUS_CLUSTER_TLS_CA"   // CA of route certificates (mutual TLS)
)

// Value types of a Setting, as its flag takes them.
const (
	TypeString   = "string"   // any text
	TypeBool     = "bool"     // strconv.ParseBool: 1, t, true, 0, f, false...
	TypeInt      = "int"      // a decimal integer
	TypeDuration = "duration" // time.ParseDuration: 500ms, 2s, 1m30s...
	TypeList     = "list"     // comma or space separated (SplitList); a repeatable flag
)

// Setting is one setting of a node that the environment or a flag of the
// peerbus node command can give. Settings lists them all: it is the one
// table behind ApplyEnv, the flags of the node command and the
// configuration table of the README.
type Setting struct {
	// Env is the environment variable ("" for a setting that only the
	// node command's flag gives). ApplyEnv applies it when it is set and
	// not empty.
	Env string
	// Flag is the name of the node command's flag, without dashes.
	Flag string
	// Type is the type of the value: TypeString, TypeBool, TypeInt,
	// TypeDuration or TypeList.
	Type string
	// Default is the default value as text in the syntax of Type, the
	// one DefaultOptions holds; "" when the default is the zero value or
	// a value worked out at Start (see DefaultDoc).
	Default string
	// DefaultDoc describes a default that Default cannot give (one
	// worked out at Start, or the embedded server's own), in Markdown;
	// "" when Default says it all.
	DefaultDoc string
	// Usage says what the setting does, in one line of Markdown. A word
	// in backquotes names the flag's value in the command's help.
	Usage string
	// Set parses value (in the syntax of Type) and applies it to o. A
	// value that cannot be used gives an error wrapping
	// ErrInvalidOption, and o is left as it was.
	Set func(o *Options, value string) error
}

// Settings returns the settings of a node, in the order of the node
// command's flags. Each call returns a new slice.
func Settings() []Setting {
	return []Setting{
		{Env: EnvName, Flag: "name", Type: TypeString,
			DefaultDoc: "`<host>-<client port>`, or `<host>-<ip>-<client port>` when the cluster listens on a LAN address; " +
				"with port -1 or `--nats-url`: `<host>-<hex>` or `<host>-<hex>-<ip>`, `<hex>` random",
			Usage: "node name, unique in a cluster; give one for a stable identity",
			Set:   func(o *Options, v string) error { return WithName(v)(o) }},
		{Env: EnvListen, Flag: "listen", Type: TypeString, Default: DefaultListen,
			Usage: "client listen address host:port; port -1 picks a free one",
			Set:   func(o *Options, v string) error { return WithListen(v)(o) }},
		{Env: EnvCluster, Flag: "cluster", Type: TypeString,
			DefaultDoc: "none; with `--routes` the listen host, with `--discover` the discovery interface's address, port 6222",
			Usage:      "cluster (route) listen address host:port; port -1 picks a free one",
			Set:        func(o *Options, v string) error { return WithCluster(v)(o) }},
		{Env: EnvClusterName, Flag: "cluster-name", Type: TypeString, Default: DefaultClusterName,
			Usage: "cluster name; only nodes with the same name form one bus",
			Set:   func(o *Options, v string) error { return WithClusterName(v)(o) }},
		{Env: EnvRoutes, Flag: "routes", Type: TypeList,
			Usage: "seed `URLs` of cluster members' routes (host:port or nats-route://host:port; repeatable or comma separated)",
			Set: func(o *Options, v string) error {
				routes := SplitList(v)
				if _, err := routeURLs(routes); err != nil {
					return err
				}
				o.Routes = routes
				return nil
			}},
		{Env: EnvDataDir, Flag: "data-dir", Type: TypeString,
			DefaultDoc: "`$XDG_DATA_HOME/peerbus/<name>`, else `~/.local/share/peerbus/<name>`",
			Usage:      "JetStream data directory",
			Set:        setString(func(o *Options) *string { return &o.DataDir })},
		{Env: EnvNATSURL, Flag: "nats-url", Type: TypeString,
			Usage: "connect to this existing NATS instead of embedding a server",
			Set:   func(o *Options, v string) error { return WithExternalURL(v)(o) }},
		{Env: EnvNoJetStream, Flag: "no-jetstream", Type: TypeBool,
			Usage: "disable JetStream on the embedded server (no event log)",
			Set:   setBool(func(o *Options) *bool { return &o.NoJetStream })},
		{Flag: "max-payload", Type: TypeString, DefaultDoc: "`1M`, the server's",
			Usage: "largest message the server accepts, in bytes or with a K/M/G suffix",
			Set: func(o *Options, v string) error {
				n, err := parseSize(v)
				if err != nil {
					return err
				}
				return WithMaxPayload(n)(o)
			}},
		{Flag: "ready-timeout", Type: TypeDuration, Default: DefaultReadyTimeout.String(),
			Usage: "how long to wait for the node (and the cluster quorum) to be ready",
			Set: func(o *Options, v string) error {
				d, err := parseDuration(v)
				if err != nil {
					return err
				}
				return WithReadyTimeout(d)(o)
			}},

		{Env: EnvMonitor, Flag: "monitor", Type: TypeString, DefaultDoc: "none",
			Usage: "serve nats-server's HTTP monitoring (/varz, /connz, /jsz, /healthz) on host:port; " +
				"a port alone is 127.0.0.1, port -1 picks a free one",
			Set: func(o *Options, v string) error { return WithMonitor(v)(o) }},

		{Env: EnvDiscover, Flag: "discover", Type: TypeBool,
			Usage: "find the cluster's other nodes on the LAN by UDP multicast",
			Set:   setBool(func(o *Options) *bool { return &o.Discover })},
		{Env: EnvDiscoveryGroup, Flag: "discovery-group", Type: TypeString, Default: DefaultDiscoveryGroup,
			Usage: "multicast group:port of discovery beacons",
			Set: func(o *Options, v string) error {
				if _, err := parseGroup(v); err != nil {
					return err
				}
				o.DiscoveryGroup = v
				return nil
			}},
		{Env: EnvDiscoveryIface, Flag: "discovery-iface", Type: TypeString,
			DefaultDoc: "the cluster address's, else the first multicast interface",
			Usage:      "interface of discovery beacons",
			Set:        setString(func(o *Options) *string { return &o.DiscoveryInterface })},
		{Env: EnvDiscoveryWindow, Flag: "discovery-window", Type: TypeDuration, Default: DefaultDiscoveryWindow.String(),
			Usage: "how long a node listens for other nodes before it starts",
			Set: func(o *Options, v string) error {
				d, err := parseDuration(v)
				if err != nil {
					return err
				}
				if d <= 0 {
					return fmt.Errorf("%w: discovery window %v is not positive", ErrInvalidOption, d)
				}
				o.DiscoveryWindow = d
				return nil
			}},
		{Env: EnvLeaf, Flag: "leaf", Type: TypeList,
			Usage: "join the NATS deployment at this `URL` as a leafnode (nats-leaf://[user:password@]host:7422)",
			Set: func(o *Options, v string) error {
				urls := SplitList(v)
				if _, err := leafURLs(urls); err != nil {
					return err
				}
				o.LeafURLs = urls
				return nil
			}},
		{Env: EnvJSDomain, Flag: "js-domain", Type: TypeString, DefaultDoc: "none; with `--leaf` the node name",
			Usage: "JetStream domain",
			Set:   func(o *Options, v string) error { return WithJetStreamDomain(v)(o) }},
		{Env: EnvLogReplicas, Flag: "log-replicas", Type: TypeInt, DefaultDoc: "`0`: 3 once the cluster has 3 nodes, else 1",
			Usage: "copies of the event log (at most 5); -1 leaves them alone",
			Set: func(o *Options, v string) error {
				n, err := strconv.Atoi(v)
				if err != nil {
					return fmt.Errorf("%w: %q is not an integer", ErrInvalidOption, v)
				}
				return WithLogReplicas(n)(o)
			}},
		{Env: EnvLogSync, Flag: "log-sync", Type: TypeString, Default: "always",
			Usage: "`always`: the event log is synced to disk before each acknowledgement; an interval (`1s`, `2m`): synced that often, acknowledged before",
			Set: func(o *Options, v string) error {
				d, err := ParseLogSync(v)
				if err != nil {
					return err
				}
				return WithLogSync(d)(o)
			}},

		{Env: EnvAuthToken, Flag: "auth-token", Type: TypeString,
			Usage: "token clients must present",
			Set:   setString(func(o *Options) *string { return &o.Token })},
		{Env: EnvUser, Flag: "user", Type: TypeString,
			Usage: "user clients must present (with --password)",
			Set:   setString(func(o *Options) *string { return &o.User })},
		{Env: EnvPassword, Flag: "password", Type: TypeString,
			Usage: "password of --user",
			Set:   setString(func(o *Options) *string { return &o.Password })},
		{Env: EnvNKeysFile, Flag: "nkeys-file", Type: TypeString,
			Usage: "`FILE` of public user nkeys allowed to connect, one per line",
			Set:   setString(func(o *Options) *string { return &o.NKeysFile })},
		{Env: EnvAuthorize, Flag: "authorize", Type: TypeString,
			Usage: "policy `FILE` (YAML or JSON): the identities allowed to connect and what each may do (see SECURITY.md)",
			Set: func(o *Options, v string) error {
				p, err := policy.Load(v)
				if err != nil {
					return fmt.Errorf("%w: %v", ErrInvalidOption, err)
				}
				o.Policy = p
				return nil
			}},
		{Env: EnvNKeySeed, Flag: "nkey-seed", Type: TypeString,
			Usage: "nkey seed (SU..., or a FILE holding it) presented in --nats-url and --leaf mode",
			Set:   setString(func(o *Options) *string { return &o.NKeySeed })},
		{Env: EnvCreds, Flag: "creds", Type: TypeString,
			Usage: "JWT credentials `FILE` presented in --nats-url and --leaf mode",
			Set:   setString(func(o *Options) *string { return &o.CredsFile })},
		{Env: EnvTLSCert, Flag: "tls-cert", Type: TypeString,
			Usage: "PEM certificate `FILE` of the client port (TLS)",
			Set:   setString(func(o *Options) *string { return &o.TLSCert })},
		{Env: EnvTLSKey, Flag: "tls-key", Type: TypeString,
			Usage: "PEM key `FILE` of --tls-cert",
			Set:   setString(func(o *Options) *string { return &o.TLSKey })},
		{Env: EnvTLSCA, Flag: "tls-ca", Type: TypeString,
			Usage: "PEM CA `FILE`: verifies client certificates (--tls-verify) and remote servers",
			Set:   setString(func(o *Options) *string { return &o.TLSCA })},
		{Env: EnvTLSVerify, Flag: "tls-verify", Type: TypeBool,
			Usage: "require client certificates signed by --tls-ca",
			Set:   setBool(func(o *Options) *bool { return &o.TLSVerify })},
		{Env: EnvClusterUser, Flag: "cluster-user", Type: TypeString,
			Usage: "user routes must present, and the node presents (with --cluster-password)",
			Set:   setString(func(o *Options) *string { return &o.ClusterUser })},
		{Env: EnvClusterPassword, Flag: "cluster-password", Type: TypeString,
			Usage: "password of --cluster-user",
			Set:   setString(func(o *Options) *string { return &o.ClusterPassword })},
		{Env: EnvClusterTLSCert, Flag: "cluster-tls-cert", Type: TypeString,
			Usage: "PEM certificate `FILE` of the routes (mutual TLS)",
			Set:   setString(func(o *Options) *string { return &o.ClusterTLSCert })},
		{Env: EnvClusterTLSKey, Flag: "cluster-tls-key", Type: TypeString,
			Usage: "PEM key `FILE` of --cluster-tls-cert",
			Set:   setString(func(o *Options) *string { return &o.ClusterTLSKey })},
		{Env: EnvClusterTLSCA, Flag: "cluster-tls-ca", Type: TypeString,
			Usage: "PEM CA `FILE` route certificates must be signed by",
			Set:   setString(func(o *Options) *string { return &o.ClusterTLSCA })},
	}
}

// ApplyEnv applies the PEERBUS_* variables found by lookup (os.LookupEnv
// in normal use) to o: for each setting of Settings with a variable that
// is set and not empty, its Set. The first value that cannot be used
// ends it with an error wrapping ErrInvalidOption that names the
// variable.
func (o *Options) ApplyEnv(lookup func(string) (string, bool)) error {
	for _, s := range Settings() {
		if s.Env == "" {
			continue
		}
		if v, ok := lookup(s.Env); ok && v != "" {
			if err := s.Set(o, v); err != nil {
				return fmt.Errorf("%s: %w", s.Env, err)
			}
		}
	}
	return nil
}

// setString returns the Set of a string setting stored at field(o).
func setString(field func(*Options) *string) func(*Options, string) error {
	return func(o *Options, v string) error { *field(o) = v; return nil }
}

// setBool returns the Set of a boolean setting stored at field(o).
func setBool(field func(*Options) *bool) func(*Options, string) error {
	return func(o *Options, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%w: %q is not a boolean", ErrInvalidOption, v)
		}
		*field(o) = b
		return nil
	}
}

// parseDuration parses a duration setting.
func parseDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%w: %q is not a duration (e.g. 500ms, 2s, 1m)", ErrInvalidOption, v)
	}
	return d, nil
}

// parseSize parses a byte count with an optional K, M or G suffix
// (powers of 1024; "KB", "KiB" and "MB" are accepted alike).
func parseSize(s string) (int32, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	switch {
	case strings.HasSuffix(t, "K"):
		mult, t = 1<<10, strings.TrimSuffix(t, "K")
	case strings.HasSuffix(t, "M"):
		mult, t = 1<<20, strings.TrimSuffix(t, "M")
	case strings.HasSuffix(t, "G"):
		mult, t = 1<<30, strings.TrimSuffix(t, "G")
	}
	n, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%w: %q is not a size (e.g. 1048576, 512K, 8M)", ErrInvalidOption, s)
	}
	if n*mult > math.MaxInt32 {
		return 0, fmt.Errorf("%w: %q is too large", ErrInvalidOption, s)
	}
	return int32(n * mult), nil
}

// ParseLogSync parses a LogSync value: "always" (LogSyncAlways) or a
// positive duration (time.ParseDuration).
func ParseLogSync(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if strings.EqualFold(v, "always") {
		return LogSyncAlways, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%w: log sync %q (want always, or a positive interval such as 1s or 2m)", ErrInvalidOption, v)
	}
	return d, nil
}
