package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/peer"
)

// nodeFlags holds the flags of "peerbus node".
type nodeFlags struct {
	name         string
	listen       string
	cluster      string
	clusterName  string
	routes       []string
	dataDir      string
	natsURL      string
	noJetStream  bool
	maxPayload   string
	readyTimeout time.Duration

	group    string
	hub      bool
	peerName string
	peerID   string

	funcs    []string
	logLevel string

	discover        bool
	discoveryGroup  string
	discoveryIface  string
	discoveryWindow time.Duration
	leaf            []string
	jsDomain        string
	logReplicas     int
	log             logFlags

	authToken       string
	user            string
	password        string
	nkeysFile       string
	nkeySeed        string
	creds           string
	tlsCert         string
	tlsKey          string
	tlsCA           string
	tlsVerify       bool
	clusterUser     string
	clusterPassword string
	clusterTLSCert  string
	clusterTLSKey   string
	clusterTLSCA    string
}

func init() {
	cmd, _ := newNodeCmd()
	rootCmd.AddCommand(cmd)
}

// newNodeCmd builds the "node" command and returns it with its flags.
func newNodeCmd() (*cobra.Command, *nodeFlags) {
	f := &nodeFlags{}
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run a node (embedded NATS server with JetStream) and its peer",
		Long: `Run a peerbus node until SIGINT or SIGTERM: an embedded NATS server (or, with
--nats-url, a connection to an existing NATS deployment) and a peer on it.

Once ready the node prints on stdout, one "key: value" per line:

  peer: <peer id>
  node: <node name>
  client: <client URL>           (what --server of client commands takes)
  cluster: <cluster route URL>   (only with a cluster listener)
  tags: <served tags, comma separated>
  ready

and nothing else. Logs go to stderr (--log-level).

Every option also comes from the environment (the variable is named in each
flag's help, e.g. PEERBUS_LISTEN): flags override the environment, which
overrides the defaults. Prefer the environment for passwords and tokens, which
other users of the machine can read on a command line.

--func TAG=COMMAND serves TAG by running COMMAND with "sh -c": the JSON
arguments on stdin, the JSON result on stdout (empty stdout means null).
A non-zero exit, invalid JSON on stdout, or a run longer than the caller's
deadline fails the call with an error carrying the exit status and stderr.
The command's environment has PEERBUS_TAG and PEERBUS_CALLER (the calling
peer's id) added.

Clustered JetStream needs a quorum. The first node of a cluster (a cluster
listener and no routes to other nodes) is ready alone at once; its event log
starts when a second node joins it with --routes, and nodes joining later grow
the JetStream cluster. A node with routes to other nodes waits (up to
--ready-timeout) until enough of them are up for a quorum.

--discover finds the other nodes of the cluster (same --cluster-name) on the
LAN with UDP multicast beacons (group 239.255.80.66:6230 by default): the node
listens for --discovery-window, then starts with routes to every node it heard,
and adds nodes heard later. Its cluster listener defaults to the discovery
interface's address, port 6222.

With three or more nodes the event log is kept in three copies (--log-replicas).

The other --log-* flags set the event log's limits. A node given any of them
applies them when it starts, creating the log if needed; the settings it was
not given keep the log's current values. A node given none leaves the log as
it is. When nodes disagree, the last one started wins: give every node the
same settings, or give them to one node only. Lowering a limit drops the
oldest events at once. The storage (--log-memory) is chosen when the log is
created: a node whose --log-memory differs from an existing log's storage
refuses to start.

--leaf makes the embedded server a leafnode of an existing NATS deployment;
the node keeps its own JetStream (and event log) in a JetStream domain named
after the node (--js-domain).

Security: --auth-token, or --user/--password and --nkeys-file, protect the
client port (client commands then need --token, --user/--password or --nkey);
--tls-cert/--tls-key serve it with TLS, --tls-verify with --tls-ca requires
client certificates. --cluster-user/--cluster-password and
--cluster-tls-cert/--cluster-tls-key/--cluster-tls-ca (mutual TLS) protect the
routes. In external and leafnode mode --nkey-seed, --creds, --tls-ca and the
user credentials are what the node presents.`,
		Example: `  # A single node on the default address (127.0.0.1:4222)
  peerbus node

  # Serve shell commands as tags
  peerbus node --func upper='tr a-z A-Z' --func now='date +%s'

  # A two-node cluster on one machine (start both)
  peerbus node --name a --listen 127.0.0.1:4222 --cluster 127.0.0.1:6222 \
    --routes 127.0.0.1:6222,127.0.0.1:6223
  peerbus node --name b --listen 127.0.0.1:4223 --cluster 127.0.0.1:6223 \
    --routes 127.0.0.1:6222,127.0.0.1:6223

  # Join an existing NATS deployment instead of embedding a server
  peerbus node --nats-url nats://nats.example.com:4222 --group workers

  # Zero-config cluster on a LAN: run this on three machines
  peerbus node --discover --cluster-name shop

  # A leafnode of an existing deployment, with its own event log
  peerbus node --leaf nats-leaf://hub.example.com:7422

  # A secured node: token on the client port, mutual TLS between nodes
  PEERBUS_AUTH_TOKEN=s3cret peerbus node --listen 0.0.0.0:4222 \
    --cluster 0.0.0.0:6222 --routes n1:6222,n2:6222,n3:6222 \
    --cluster-tls-cert node.pem --cluster-tls-key node-key.pem --cluster-tls-ca ca.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runNode(cmd, f) },
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	fs.StringVar(&f.name, "name", "", "node name, unique in a cluster (default <hostname>-<client port>) [$"+bus.EnvName+"]")
	fs.StringVar(&f.listen, "listen", bus.DefaultListen, "client listen address host:port, port -1 picks a free one [$"+bus.EnvListen+"]")
	fs.StringVar(&f.cluster, "cluster", "", "cluster (route) listen address host:port (default with --routes: listen host, port 6222) [$"+bus.EnvCluster+"]")
	fs.StringVar(&f.clusterName, "cluster-name", bus.DefaultClusterName, "cluster name; only nodes with the same name form one bus [$"+bus.EnvClusterName+"]")
	fs.StringSliceVar(&f.routes, "routes", nil, "seed `URLs` of cluster members' routes (repeatable or comma separated) [$"+bus.EnvRoutes+"]")
	fs.StringVar(&f.dataDir, "data-dir", "", "JetStream data directory (default $XDG_DATA_HOME/peerbus/<name>) [$"+bus.EnvDataDir+"]")
	fs.StringVar(&f.natsURL, "nats-url", "", "connect to this existing NATS instead of embedding a server [$"+bus.EnvNATSURL+"]")
	fs.BoolVar(&f.noJetStream, "no-jetstream", false, "disable JetStream on the embedded server [$"+bus.EnvNoJetStream+"]")
	fs.StringVar(&f.maxPayload, "max-payload", "", "largest message the server accepts, in bytes or with a K/M suffix (default 1M)")
	fs.DurationVar(&f.readyTimeout, "ready-timeout", bus.DefaultReadyTimeout, "how long to wait for the node (and the cluster quorum) to be ready")
	fs.StringVar(&f.group, "group", "", "the peer's group [$"+peer.EnvGroup+"]")
	fs.BoolVar(&f.hub, "hub", false, "mark the peer as a hub [$"+peer.EnvHub+"]")
	fs.StringVar(&f.peerName, "peer-name", "", "the peer's friendly name (default <hostname>-<pid>) [$"+peer.EnvPeerName+"]")
	fs.StringVar(&f.peerID, "peer-id", "", "fixed peer id (default a new uuid) [$"+peer.EnvPeerID+"]")
	fs.StringArrayVar(&f.funcs, "func", nil, "serve a tag by running a shell command (sh -c), given as `TAG=COMMAND` (repeatable)")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level on stderr: debug, info, warn, error")

	fs.BoolVar(&f.discover, "discover", false, "find the cluster's other nodes on the LAN by UDP multicast [$"+bus.EnvDiscover+"]")
	fs.StringVar(&f.discoveryGroup, "discovery-group", bus.DefaultDiscoveryGroup, "multicast group:port of discovery beacons [$"+bus.EnvDiscoveryGroup+"]")
	fs.StringVar(&f.discoveryIface, "discovery-iface", "", "interface of discovery (default: the cluster address's, else the first multicast one) [$"+bus.EnvDiscoveryIface+"]")
	fs.DurationVar(&f.discoveryWindow, "discovery-window", bus.DefaultDiscoveryWindow, "how long to listen for other nodes before starting [$"+bus.EnvDiscoveryWindow+"]")
	fs.StringSliceVar(&f.leaf, "leaf", nil, "join the NATS deployment at this `URL` as a leafnode (nats-leaf://[user:password@]host:7422) [$"+bus.EnvLeaf+"]")
	fs.StringVar(&f.jsDomain, "js-domain", "", "JetStream domain (default with --leaf: the node name) [$"+bus.EnvJSDomain+"]")
	fs.IntVar(&f.logReplicas, "log-replicas", 0, "copies of the event log: 0 = 3 once the cluster has 3 nodes, else 1; -1 = leave alone [$"+bus.EnvLogReplicas+"]")
	addLogFlags(fs, &f.log)

	fs.StringVar(&f.authToken, "auth-token", "", "token clients must present [$"+bus.EnvAuthToken+"]")
	fs.StringVar(&f.user, "user", "", "user clients must present (with --password) [$"+bus.EnvUser+"]")
	fs.StringVar(&f.password, "password", "", "password of --user [$"+bus.EnvPassword+"]")
	fs.StringVar(&f.nkeysFile, "nkeys-file", "", "`FILE` of public user nkeys allowed to connect, one per line [$"+bus.EnvNKeysFile+"]")
	fs.StringVar(&f.nkeySeed, "nkey-seed", "", "nkey seed (SU..., or a FILE holding it) presented in --nats-url and --leaf mode [$"+bus.EnvNKeySeed+"]")
	fs.StringVar(&f.creds, "creds", "", "JWT credentials `FILE` presented in --nats-url and --leaf mode [$"+bus.EnvCreds+"]")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate `FILE` of the client port (TLS) [$"+bus.EnvTLSCert+"]")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM key `FILE` of --tls-cert [$"+bus.EnvTLSKey+"]")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "PEM CA `FILE`: verifies client certificates (--tls-verify) and remote servers [$"+bus.EnvTLSCA+"]")
	fs.BoolVar(&f.tlsVerify, "tls-verify", false, "require client certificates signed by --tls-ca [$"+bus.EnvTLSVerify+"]")
	fs.StringVar(&f.clusterUser, "cluster-user", "", "user routes must present (with --cluster-password) [$"+bus.EnvClusterUser+"]")
	fs.StringVar(&f.clusterPassword, "cluster-password", "", "password of --cluster-user [$"+bus.EnvClusterPassword+"]")
	fs.StringVar(&f.clusterTLSCert, "cluster-tls-cert", "", "PEM certificate `FILE` of the routes (mutual TLS) [$"+bus.EnvClusterTLSCert+"]")
	fs.StringVar(&f.clusterTLSKey, "cluster-tls-key", "", "PEM key `FILE` of --cluster-tls-cert [$"+bus.EnvClusterTLSKey+"]")
	fs.StringVar(&f.clusterTLSCA, "cluster-tls-ca", "", "PEM CA `FILE` route certificates must be signed by [$"+bus.EnvClusterTLSCA+"]")
	return cmd, f
}

// nodeOptions builds the node's and the peer's options: the defaults,
// then the environment (read through lookup), then the flags that were
// set on the command line.
func nodeOptions(fs *pflag.FlagSet, f *nodeFlags, lookup func(string) (string, bool)) (bus.Options, peer.Options, error) {
	bo := bus.DefaultOptions()
	if err := bo.ApplyEnv(lookup); err != nil {
		return bo, peer.Options{}, err
	}
	po := peer.DefaultOptions()
	if err := po.ApplyEnv(lookup); err != nil {
		return bo, po, err
	}
	set := fs.Changed
	if set("name") {
		bo.Name = f.name
	}
	if set("listen") {
		bo.Listen = f.listen
	}
	if set("cluster") {
		bo.ClusterListen = f.cluster
	}
	if set("cluster-name") {
		bo.ClusterName = f.clusterName
	}
	if set("routes") {
		bo.Routes = nil
		for _, r := range f.routes {
			bo.Routes = append(bo.Routes, bus.SplitList(r)...)
		}
	}
	if set("data-dir") {
		bo.DataDir = f.dataDir
	}
	if set("nats-url") {
		bo.ExternalURL = f.natsURL
	}
	if set("no-jetstream") {
		bo.NoJetStream = f.noJetStream
	}
	if set("max-payload") {
		n, err := parseSize(f.maxPayload)
		if err != nil {
			return bo, po, fmt.Errorf("--max-payload: %w", err)
		}
		bo.MaxPayload = n
	}
	if set("ready-timeout") {
		bo.ReadyTimeout = f.readyTimeout
	}
	if set("discover") {
		bo.Discover = f.discover
	}
	if set("discovery-window") {
		bo.DiscoveryWindow = f.discoveryWindow
	}
	if set("leaf") {
		bo.LeafURLs = nil
		for _, u := range f.leaf {
			bo.LeafURLs = append(bo.LeafURLs, bus.SplitList(u)...)
		}
	}
	if set("log-replicas") {
		bo.LogReplicas = f.logReplicas
	}
	if set("tls-verify") {
		bo.TLSVerify = f.tlsVerify
	}
	for _, s := range []struct {
		flag string
		src  string
		dst  *string
	}{
		{"discovery-group", f.discoveryGroup, &bo.DiscoveryGroup},
		{"discovery-iface", f.discoveryIface, &bo.DiscoveryInterface},
		{"js-domain", f.jsDomain, &bo.JetStreamDomain},
		{"auth-token", f.authToken, &bo.Token},
		{"user", f.user, &bo.User},
		{"password", f.password, &bo.Password},
		{"nkeys-file", f.nkeysFile, &bo.NKeysFile},
		{"nkey-seed", f.nkeySeed, &bo.NKeySeed},
		{"creds", f.creds, &bo.CredsFile},
		{"tls-cert", f.tlsCert, &bo.TLSCert},
		{"tls-key", f.tlsKey, &bo.TLSKey},
		{"tls-ca", f.tlsCA, &bo.TLSCA},
		{"cluster-user", f.clusterUser, &bo.ClusterUser},
		{"cluster-password", f.clusterPassword, &bo.ClusterPassword},
		{"cluster-tls-cert", f.clusterTLSCert, &bo.ClusterTLSCert},
		{"cluster-tls-key", f.clusterTLSKey, &bo.ClusterTLSKey},
		{"cluster-tls-ca", f.clusterTLSCA, &bo.ClusterTLSCA},
	} {
		if set(s.flag) {
			*s.dst = s.src
		}
	}
	if set("group") {
		po.Group = f.group
	}
	if set("hub") {
		po.Hub = f.hub
	}
	if set("peer-name") {
		po.Name = f.peerName
	}
	if set("peer-id") {
		po.ID = f.peerID
	}
	return bo, po, nil
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
		return 0, fmt.Errorf("%q is not a size (e.g. 1048576, 512K, 8M)", s)
	}
	if n*mult > math.MaxInt32 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return int32(n * mult), nil
}

// newLogger returns a text logger on w at the named level.
func newLogger(w io.Writer, level string) (*slog.Logger, slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), l, nil
}

// runNode runs the node until a signal arrives.
func runNode(cmd *cobra.Command, f *nodeFlags) error {
	log, level, err := newLogger(cmd.ErrOrStderr(), f.logLevel)
	if err != nil {
		return err
	}
	bo, po, err := nodeOptions(cmd.Flags(), f, os.LookupEnv)
	if err != nil {
		return err
	}
	funcs, err := parseFuncSpecs(f.funcs)
	if err != nil {
		return err
	}
	logSet, err := nodeLogSettings(cmd.Flags(), &f.log, os.LookupEnv)
	if err != nil {
		return err
	}
	if logSet.given() && bo.NoJetStream {
		return errors.New("the --log-* settings need the event log, which --no-jetstream disables")
	}
	bo.Logger = log.With("component", "bus")
	bo.Debug = level <= slog.LevelDebug
	po.Logger = log.With("component", "peer")

	ctx, stop := signalContext(cmd.Context())
	defer stop()

	node, err := bus.New(bus.WithOptions(bo))
	if err != nil {
		return err
	}
	if err := node.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted while starting: %w", err)
		}
		if errors.Is(err, bus.ErrNotReady) && len(bo.Routes) > 0 && bo.ExternalURL == "" && !bo.NoJetStream {
			return fmt.Errorf("%w\n(a clustered node waits for a quorum of its routes %v; are the other nodes running?)", err, bo.Routes)
		}
		if errors.Is(err, bus.ErrNotReady) && bo.Discover && !bo.NoJetStream {
			return fmt.Errorf("%w\n(a discovering node that heard other nodes of cluster %q waits for a quorum of them: are they running?)", err, bo.ClusterName)
		}
		return err
	}
	if logSet.given() && !bo.NoJetStream {
		// The first node of a cluster has its event log only once a
		// second node joins: settings for it cannot wait that long.
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := node.WaitJetStream(wctx)
		cancel()
		if err != nil {
			_ = node.Close()
			return fmt.Errorf("the --log-* settings need the event log, which is not ready: %w\n"+
				"(the first node of a cluster gets its log when a second node joins: "+
				"give the settings to a node that joins it, or to this node once the cluster has two)", err)
		}
	}
	if err := applyNodeLog(ctx, node.Conn(), logSet, log); err != nil {
		_ = node.Close()
		return err
	}
	p, err := peer.New(node.Conn(), func(o *peer.Options) error { *o = po; return nil })
	if err != nil {
		_ = node.Close()
		return err
	}
	shutdown := func() {
		if err := p.Close(); err != nil {
			log.Warn("peer close", "err", err)
		}
		if err := node.Close(); err != nil {
			log.Warn("node close", "err", err)
		}
	}
	nc := node.Conn()
	for _, fs := range funcs {
		cf := &commandFunc{spec: fs, log: log, maxOut: func() int { return int(nc.MaxPayload()) }}
		if err := peer.RegisterRaw(p, fs.Tag, cf.run); err != nil {
			shutdown()
			return fmt.Errorf("--func %s: %w", fs.Tag, err)
		}
	}

	info := p.Info()
	out := cmd.OutOrStdout()
	var b strings.Builder
	fmt.Fprintf(&b, "peer: %s\n", p.ID())
	fmt.Fprintf(&b, "node: %s\n", node.Name())
	fmt.Fprintf(&b, "client: %s\n", redactURL(node.ClientURL()))
	if u := node.ClusterURL(); u != "" {
		fmt.Fprintf(&b, "cluster: %s\n", u)
	}
	fmt.Fprintf(&b, "tags: %s\n", strings.Join(info.Tags, ","))
	b.WriteString("ready\n")
	if _, err := io.WriteString(out, b.String()); err != nil {
		shutdown()
		return err
	}
	log.Info("peer ready", "peer", p.ID(), "name", info.Name, "group", info.Group, "hub", info.Hub, "tags", info.Tags)

	<-ctx.Done()
	cause := context.Cause(ctx)
	stop() // a second signal now ends the process at once
	log.Info("shutting down", "cause", cause)
	shutdown()
	log.Info("stopped")
	return nil
}
