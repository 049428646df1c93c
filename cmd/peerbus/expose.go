package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/peerbus/peerbus/bridge"
	"github.com/peerbus/peerbus/peer"
)

// exposeFlags holds the flags of "peerbus expose".
type exposeFlags struct {
	server   string
	stun     []string
	group    string
	peerName string
	udpIdle  time.Duration
	noLoop   bool
	logLevel string

	// Limits (bridge.Limits); zero values mean the default.
	maxCandidates   int
	strategyTimeout time.Duration
	setupTimeout    time.Duration
	maxPending      int
	maxPendingPeer  int
	maxSessions     int
	punchRate       int
	allowNets       []string
}

func init() { rootCmd.AddCommand(newExposeCmd()) }

// newExposeCmd builds the "expose" command.
func newExposeCmd() *cobra.Command {
	f := &exposeFlags{}
	cmd := &cobra.Command{
		Use:   "expose [flags] NAME TARGET [NAME TARGET]...",
		Short: "Expose local TCP or UDP services to the peers of the bus",
		Long: `Expose local services under names, so that other peers reach them with
"peerbus forward" or the bridge package. TARGET is tcp://host:port or
udp://host:port; only the exposed targets are reachable, never another
address. Each session dials the target anew.

The command is a peer of the node at --server (it does not embed a node:
run "peerbus node" for that, on this machine or elsewhere). It serves the
tag bridge.open.NAME for each service, prints on stdout

  peer: <peer id>
  exposed: NAME TARGET      (one line per service)
  ready

and then runs until SIGINT or SIGTERM, logging each session and the path
it took (direct, reverse, punch-udp, punch-tcp or relay) on stderr.

Peers first try to connect directly, then through NATs (hole punching),
and fall back to relaying the bytes over the bus. Give --stun with the
STUN servers to use (for example a rendezvous node running "peerbus
stun-server"); none is contacted otherwise.

What dialers can make the exposer do is bounded (bridge.Limits; the
defaults in brackets): candidates per offer (--max-candidates), how long
one strategy and the whole setup of a session may take
(--max-strategy-timeout, --setup-timeout), sessions still without a
path (--max-pending, --max-pending-per-peer, by the dialing peer's id),
sessions in all (--max-sessions), connection attempts and probes per
second towards dialers (--punch-rate), and the networks it connects or
sends probes to for reverse paths and hole punching (--allow-net,
repeatable; loopback and link-local addresses only between peers on one
host, whatever the list). An offer beyond a limit is refused; the dialer
gets bridge.ErrLimit.`,
		Example: `  peerbus expose web tcp://127.0.0.1:8080
  peerbus expose --server nats://rendezvous:4222 --stun rendezvous:3478 ssh tcp://127.0.0.1:22
  peerbus expose dns udp://127.0.0.1:53 web tcp://127.0.0.1:8080`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 || len(args)%2 != 0 {
				return fmt.Errorf("want NAME TARGET pairs, got %d argument(s)", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error { return runExpose(cmd, f, args) },
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&f.stun, "stun", nil, "STUN server `HOST:PORT` to learn the external address and NAT type (repeatable)")
	fl.StringVarP(&f.group, "group", "g", "", "the peer's group [$"+peer.EnvGroup+"]")
	fl.StringVar(&f.peerName, "peer-name", "", "the peer's friendly name (default <hostname>-<pid>) [$"+peer.EnvPeerName+"]")
	fl.DurationVar(&f.udpIdle, "udp-idle", bridge.DefaultUDPIdleTimeout, "end a UDP session after this long without a datagram")
	fl.BoolVar(&f.noLoop, "no-loopback", false, "do not offer loopback addresses to dialers")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level on stderr: debug, info, warn, error")
	d := bridge.DefaultLimits()
	fl.IntVar(&f.maxCandidates, "max-candidates", d.MaxCandidates, "most TCP and most UDP candidates an offer may carry (1 to 256)")
	fl.DurationVar(&f.strategyTimeout, "max-strategy-timeout", d.MaxStrategyTimeout, "longest a dialer may ask the exposer to connect, probe or punch for one strategy (100ms to 2m)")
	fl.DurationVar(&f.setupTimeout, "setup-timeout", d.MaxSetup, "longest a session may stay without a path (1s to 5m)")
	fl.IntVar(&f.maxPending, "max-pending", d.MaxPending, "most sessions without a path per service")
	fl.IntVar(&f.maxPendingPeer, "max-pending-per-peer", d.MaxPendingPerPeer, "most sessions without a path per service from one dialing peer (at most --max-pending)")
	fl.IntVar(&f.maxSessions, "max-sessions", d.MaxSessions, "most sessions per service, with or without a path (at least --max-pending)")
	fl.IntVar(&f.punchRate, "punch-rate", d.AttemptRate, "most connection attempts and UDP probes per second towards dialers, per service (1 to 100000)")
	fl.StringArrayVar(&f.allowNets, "allow-net", nil, "connect or probe back only to dialer addresses in this `CIDR` (repeatable; default any)")
	addServerFlag(cmd, &f.server)
	return cmd
}

// stayConnected keeps a long-running command's connection up across node
// restarts (the client commands' default is to fail fast).
func stayConnected() nats.Option {
	return func(o *nats.Options) error {
		o.AllowReconnect = true
		o.MaxReconnect = -1
		o.ReconnectWait = 500 * time.Millisecond
		return nil
	}
}

// runExpose runs "peerbus expose".
func runExpose(cmd *cobra.Command, f *exposeFlags, args []string) error {
	log, _, err := newLogger(cmd.ErrOrStderr(), f.logLevel)
	if err != nil {
		return err
	}
	limits, err := exposeLimits(f)
	if err != nil {
		return err
	}
	type spec struct{ name, target string }
	var specs []spec
	for i := 0; i < len(args); i += 2 {
		name, target := args[i], args[i+1]
		if err := bridge.ValidateName(name); err != nil {
			return err
		}
		if _, _, err := bridge.ParseTarget(target); err != nil {
			return err
		}
		specs = append(specs, spec{name, target})
	}
	nc, err := dialServer(f.server, stayConnected())
	if err != nil {
		return err
	}
	defer nc.Close()
	popts := []peer.Option{peer.FromEnv(), peer.WithLogger(log.With("component", "peer"))}
	if cmd.Flags().Changed("group") {
		popts = append(popts, peer.WithGroup(f.group))
	}
	if f.peerName != "" {
		popts = append(popts, peer.WithName(f.peerName))
	}
	p, err := peer.New(nc, popts...)
	if err != nil {
		return err
	}
	defer p.Close()

	ctx, stop := signalContext(cmd.Context())
	defer stop()
	opts := append(exposeOptions(f, log), bridge.WithLimits(limits))
	var services []*bridge.Service
	defer func() {
		for _, s := range services {
			_ = s.Close()
		}
	}()
	var b strings.Builder
	fmt.Fprintf(&b, "peer: %s\n", p.ID())
	for _, s := range specs {
		svc, err := bridge.Expose(ctx, p, s.name, s.target, opts...)
		if err != nil {
			return err
		}
		services = append(services, svc)
		fmt.Fprintf(&b, "exposed: %s %s\n", s.name, svc.Target())
	}
	b.WriteString("ready\n")
	if _, err := io.WriteString(cmd.OutOrStdout(), b.String()); err != nil {
		return err
	}
	log.Info("exposing", "peer", p.ID(), "server", redactURL(nc.ConnectedUrlRedacted()), "services", len(services))
	<-ctx.Done()
	stop()
	log.Info("shutting down", "cause", context.Cause(ctx))
	for _, s := range services {
		st := s.Stats()
		log.Info("service closed", "service", s.Name(), "sessions", st.Opened, "paths", fmt.Sprint(st.Paths))
	}
	return nil
}

// exposeOptions maps the flags of "peerbus expose" to bridge options.
func exposeOptions(f *exposeFlags, log *slog.Logger) []bridge.ExposeOption {
	opts := []bridge.ExposeOption{
		bridge.WithLogger(log.With("component", "bridge")),
		bridge.WithUDPIdleTimeout(f.udpIdle),
		bridge.OnSession(func(si bridge.SessionInfo) {
			remote := "-"
			if si.Remote.IsValid() {
				remote = si.Remote.String()
			}
			log.Info("session", "service", si.Service, "dialer", si.Peer, "path", si.Path, "remote", remote)
		}),
	}
	if len(f.stun) > 0 {
		opts = append(opts, bridge.WithSTUN(f.stun...))
	}
	if f.noLoop {
		opts = append(opts, bridge.WithoutLoopback())
	}
	return opts
}

// limitFlags names the flag of each bridge.Limits field, for errors.
var limitFlags = strings.NewReplacer(
	"MaxCandidates", "--max-candidates",
	"MaxStrategyTimeout", "--max-strategy-timeout",
	"MaxSetup", "--setup-timeout",
	"MaxPendingPerPeer", "--max-pending-per-peer",
	"MaxPending", "--max-pending",
	"MaxSessions", "--max-sessions",
	"AttemptRate", "--punch-rate",
)

// exposeLimits maps the limit flags of "peerbus expose" to
// bridge.Limits and checks them.
func exposeLimits(f *exposeFlags) (bridge.Limits, error) {
	l := bridge.Limits{
		MaxCandidates:      f.maxCandidates,
		MaxStrategyTimeout: f.strategyTimeout,
		MaxSetup:           f.setupTimeout,
		MaxPending:         f.maxPending,
		MaxPendingPerPeer:  f.maxPendingPeer,
		MaxSessions:        f.maxSessions,
		AttemptRate:        f.punchRate,
	}
	for _, s := range f.allowNets {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() {
			return l, fmt.Errorf("--allow-net %q: want an IPv4 network in CIDR notation, like 192.0.2.0/24", s)
		}
		l.Networks = append(l.Networks, p.Masked())
	}
	if err := l.Validate(); err != nil {
		return l, errors.New(strings.TrimPrefix(limitFlags.Replace(err.Error()), "bridge: invalid option: limits: "))
	}
	return l, nil
}
