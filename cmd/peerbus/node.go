package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/peer"
	"github.com/peerbus/peerbus/policy"
)

// nodeFlags holds the flags of "peerbus node" that are not settings of
// bus.Settings or peer.Settings (those are read back from the flag set,
// see nodeOptions).
type nodeFlags struct {
	funcs    []string
	limits   []string
	secure   bool
	logLevel string
	log      logFlags
}

// nodeLong is the long help of "peerbus node".
const nodeLong = `Run a peerbus node until SIGINT or SIGTERM: an embedded NATS server (or, with
--nats-url, a connection to an existing NATS deployment) and a peer on it.

Once ready the node prints on stdout, one "key: value" per line:

  peer: <peer id>
  node: <node name>
  client: <client URL>           (what --server of client commands takes)
  cluster: <cluster route URL>   (only with a cluster listener)
  monitor: <monitoring URL>      (only with --monitor)
  tags: <served tags, comma separated>
  ready

and nothing else. Logs go to stderr, filtered by --log-level:

  error  failures only
  warn   and warnings: a node alone in its cluster, a route that fails,
         a slow event log, nats-server's own warnings and errors
  info   and what changes while the node runs (default): routes connected,
         nodes discovered, the event log ready or its copies changed
  debug  and everything else, including nats-server's notices (banner,
         listeners, JetStream settings, connections) and debug lines

Most options also come from the environment (the variable is named in each
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

--monitor serves the embedded server's HTTP monitoring endpoints (/varz,
/connz, /routez, /jsz, /healthz, ...), as nats-server -m does, for tools such
as prometheus-nats-exporter and nats-surveyor. It is off by default, and a
port alone listens on 127.0.0.1: give a host (0.0.0.0:8222) to serve others.
The endpoints need no credentials: serve them only where that is safe.
"peerbus health" checks a node without it.

--leaf makes the embedded server a leafnode of an existing NATS deployment;
the node keeps its own JetStream (and event log) in a JetStream domain named
after the node (--js-domain).

Security: --auth-token, or --user/--password and --nkeys-file, protect the
client port (client commands then need --token, --user/--password or --nkey);
--tls-cert/--tls-key serve it with TLS, --tls-verify with --tls-ca requires
client certificates. --cluster-user/--cluster-password and
--cluster-tls-cert/--cluster-tls-key/--cluster-tls-ca (mutual TLS) protect the
routes. In external and leafnode mode --nkey-seed, --creds, --tls-ca and the
user credentials are what the node presents.

--authorize FILE admits only the identities (peerbus keygen) a policy lists,
each with what it may serve, call, emit, read, expose and dial (SECURITY.md,
docs/policy.example.yaml); SIGHUP reloads the file. --secure is the short way:
it makes (or reuses) admin.nk and policy.yaml in the data directory (else in
the user's config directory, peerbus/) and says on stderr how clients use
them. --identity FILE gives the node's peer its key and id.`

// nodeExample is the example of "peerbus node".
const nodeExample = `  # A single node on the default address (127.0.0.1:4222)
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
    --cluster-tls-cert node.pem --cluster-tls-key node-key.pem --cluster-tls-ca ca.pem`

func init() {
	cmd, _ := newNodeCmd()
	rootCmd.AddCommand(cmd)
}

// newNodeCmd builds the "node" command and returns it with its flags.
func newNodeCmd() (*cobra.Command, *nodeFlags) {
	f := &nodeFlags{}
	cmd := &cobra.Command{
		Use:     "node",
		Short:   "Run a node (embedded NATS server with JetStream) and its peer",
		Long:    nodeLong,
		Example: nodeExample,
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return runNode(cmd, f) },
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	addSettingFlags(fs, nodeSettings())
	fs.BoolVar(&f.secure, "secure", false, "admit only identities: make (or reuse) an admin identity and a policy in the data directory, and say how clients use them")
	fs.StringArrayVar(&f.funcs, "func", nil, "serve a tag by running a shell command (sh -c), given as `TAG=COMMAND` (repeatable)")
	fs.StringArrayVar(&f.limits, "func-concurrency", nil, "calls of a --func tag run at once, given as `TAG=N`, overriding --tag-concurrency (repeatable)")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level on stderr: error, warn, info, debug (nats-server's own notices only at debug)")
	addLogFlags(fs, &f.log)
	return cmd, f
}

// nodeOptions builds the node's and the peer's options: the defaults,
// then the environment (read through lookup), then the flags of
// nodeSettings that were set on the command line.
func nodeOptions(fs *pflag.FlagSet, lookup func(string) (string, bool)) (bus.Options, peer.Options, error) {
	bo := bus.DefaultOptions()
	if err := bo.ApplyEnv(lookup); err != nil {
		return bo, peer.Options{}, err
	}
	po := peer.DefaultOptions()
	if err := po.ApplyEnv(lookup); err != nil {
		return bo, po, err
	}
	if err := applySettingFlags(fs, nodeSettings(), &bo, &po); err != nil {
		return bo, po, err
	}
	// The peer's identity is the node's: the node connects with it.
	bo.Identity = po.Identity
	return bo, po, nil
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
	bo, po, err := nodeOptions(cmd.Flags(), os.LookupEnv)
	if err != nil {
		return err
	}
	funcs, err := parseFuncSpecs(f.funcs)
	if err != nil {
		return err
	}
	limits, err := parseFuncLimits(f.limits, funcs)
	if err != nil {
		return err
	}
	polPath := policyPath(cmd.Flags(), os.LookupEnv)
	if f.secure {
		dir, err := secureDir(bo)
		if err != nil {
			return err
		}
		if polPath, err = applySecure(&bo, dir, cmd.ErrOrStderr()); err != nil {
			return err
		}
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

	node, err := startNode(ctx, bo)
	if err != nil {
		return err
	}
	p, err := startNodePeer(ctx, node, bo, po, logSet, log)
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
	if err := serveFuncs(p, node.Conn(), funcs, log); err != nil {
		shutdown()
		return err
	}
	for tag, n := range limits {
		if err := p.SetTagConcurrency(tag, n); err != nil {
			shutdown()
			return fmt.Errorf("--func-concurrency %s: %w", tag, err)
		}
	}
	if bo.Policy != nil {
		stopHUP := reloadPolicyOnHUP(node, polPath, log)
		defer stopHUP()
		if !bo.NoJetStream {
			// Peers may emit and read but not create the log: the node
			// creates it.
			cctx, ccancel := context.WithCancel(ctx)
			created := createLog(cctx, p, log)
			defer func() { ccancel(); <-created }()
		}
	}
	// "ready" means served: the server has the subscriptions of every
	// --func tag before a client may call it.
	if err := p.Conn().Flush(); err != nil {
		shutdown()
		return fmt.Errorf("node: flush the node's subscriptions: %w", err)
	}
	if err := printReady(cmd.OutOrStdout(), node, p); err != nil {
		shutdown()
		return err
	}

	<-ctx.Done()
	cause := context.Cause(ctx)
	stop() // a second signal now ends the process at once
	log.Debug("shutting down", "cause", cause)
	shutdown()
	log.Debug("stopped")
	return nil
}

// createLog makes sure the event log exists, retrying until it does or
// ctx ends (the first node of a cluster has its JetStream only once a
// second node joins). The returned channel is closed when it is done.
func createLog(ctx context.Context, p *peer.Peer, log *slog.Logger) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		lg, err := eventlog.New(p)
		if err != nil {
			log.Warn("event log not created", "err", err)
			return
		}
		for ctx.Err() == nil {
			ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := lg.Info(ictx)
			cancel()
			if err == nil {
				return
			}
			log.Debug("event log not created yet", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	return done
}

// policyPath returns the policy file of --authorize, else of
// $PEERBUS_AUTHORIZE.
func policyPath(fs *pflag.FlagSet, lookup func(string) (string, bool)) string {
	if f := fs.Lookup("authorize"); f != nil && f.Changed {
		return f.Value.String()
	}
	v, _ := lookup(bus.EnvAuthorize)
	return v
}

// reloadPolicyOnHUP reloads the policy file at path on each SIGHUP; a
// file that does not load is logged and the policy in force stays. The
// returned func stops it.
func reloadPolicyOnHUP(node *bus.Node, path string, log *slog.Logger) func() {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-hup:
				p, err := policy.Load(path)
				if err == nil {
					err = node.ReloadPolicy(p)
				}
				if err != nil {
					log.Error("policy not reloaded; the one in force stays", "file", path, "err", err)
					continue
				}
				log.Info("policy reloaded", "file", path, "users", len(p.Users))
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		<-finished
	}
}

// startNode starts the bus node, and says what a node that is not ready
// in time waits for.
func startNode(ctx context.Context, bo bus.Options) (*bus.Node, error) {
	node, err := bus.New(bus.WithOptions(bo))
	if err != nil {
		return nil, err
	}
	if err := node.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("interrupted while starting: %w", err)
		}
		if errors.Is(err, bus.ErrAddrInUse) {
			return nil, err // names the port and how to join a node on it
		}
		if errors.Is(err, bus.ErrNotReady) && len(bo.Routes) > 0 && bo.ExternalURL == "" && !bo.NoJetStream {
			return nil, fmt.Errorf("%w\n(a clustered node waits for a quorum of its routes %v; are the other nodes running?)", err, bo.Routes)
		}
		if errors.Is(err, bus.ErrNotReady) && bo.Discover && !bo.NoJetStream {
			return nil, fmt.Errorf("%w\n(a discovering node that heard other nodes of cluster %q waits for a quorum of them: are they running?)", err, bo.ClusterName)
		}
		return nil, err
	}
	return node, nil
}

// startNodePeer applies the event log settings, then starts the node's
// peer. The caller closes the node when it fails.
func startNodePeer(ctx context.Context, node *bus.Node, bo bus.Options, po peer.Options, logSet logSettings, log *slog.Logger) (*peer.Peer, error) {
	if logSet.given() && !bo.NoJetStream {
		// The first node of a cluster has its event log only once a
		// second node joins: settings for it cannot wait that long.
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := node.WaitJetStream(wctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("the --log-* settings need the event log, which is not ready: %w\n"+
				"(the first node of a cluster gets its log when a second node joins: "+
				"give the settings to a node that joins it, or to this node once the cluster has two)", err)
		}
	}
	if err := applyNodeLog(ctx, node.Conn(), logSet, log); err != nil {
		return nil, err
	}
	return peer.New(node.Conn(), func(o *peer.Options) error { *o = po; return nil })
}

// parseFuncLimits parses the --func-concurrency values: TAG=N, N
// positive, for a tag of a --func.
func parseFuncLimits(vals []string, funcs []funcSpec) (map[string]int, error) {
	out := map[string]int{}
	for _, v := range vals {
		tag, ns, ok := strings.Cut(v, "=")
		n, err := strconv.Atoi(ns)
		if !ok || err != nil || n <= 0 {
			return nil, fmt.Errorf("--func-concurrency %q: want TAG=N with N a positive integer", v)
		}
		if !slices.ContainsFunc(funcs, func(f funcSpec) bool { return f.Tag == tag }) {
			return nil, fmt.Errorf("--func-concurrency %q: no --func serves tag %q", v, tag)
		}
		out[tag] = n
	}
	return out, nil
}

// serveFuncs registers the --func commands on p.
func serveFuncs(p *peer.Peer, nc *nats.Conn, funcs []funcSpec, log *slog.Logger) error {
	for _, fs := range funcs {
		cf := &commandFunc{spec: fs, log: log, maxOut: func() int { return int(nc.MaxPayload()) }}
		if err := peer.RegisterRaw(p, fs.Tag, cf.run); err != nil {
			return fmt.Errorf("--func %s: %w", fs.Tag, err)
		}
	}
	return nil
}

// printReady prints the node's "key: value" lines and "ready" on out, in
// one write.
func printReady(out io.Writer, node *bus.Node, p *peer.Peer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "peer: %s\n", p.ID())
	fmt.Fprintf(&b, "node: %s\n", node.Name())
	fmt.Fprintf(&b, "client: %s\n", redactURL(node.ClientURL()))
	if u := node.ClusterURL(); u != "" {
		fmt.Fprintf(&b, "cluster: %s\n", u)
	}
	if u := node.MonitorURL(); u != "" {
		fmt.Fprintf(&b, "monitor: %s\n", u)
	}
	fmt.Fprintf(&b, "tags: %s\n", strings.Join(p.Info().Tags, ","))
	b.WriteString("ready\n")
	_, err := io.WriteString(out, b.String())
	return err
}
