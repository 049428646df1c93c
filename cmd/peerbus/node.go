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

Every option also comes from the environment (PEERBUS_NAME, PEERBUS_LISTEN,
PEERBUS_CLUSTER, PEERBUS_CLUSTER_NAME, PEERBUS_ROUTES, PEERBUS_DATA_DIR,
PEERBUS_NATS_URL, PEERBUS_NO_JETSTREAM, PEERBUS_GROUP, PEERBUS_HUB,
PEERBUS_PEER_NAME, PEERBUS_PEER_ID): flags override the environment, which
overrides the defaults.

--func TAG=COMMAND serves TAG by running COMMAND with "sh -c": the JSON
arguments on stdin, the JSON result on stdout (empty stdout means null).
A non-zero exit, invalid JSON on stdout, or a run longer than the caller's
deadline fails the call with an error carrying the exit status and stderr.
The command's environment has PEERBUS_TAG and PEERBUS_CALLER (the calling
peer's id) added.

Clustered JetStream needs a quorum: a node with routes waits until enough
of its cluster peers are up, so start cluster members together.`,
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
  peerbus node --nats-url nats://nats.example.com:4222 --group workers`,
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
