package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
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
stun-server"); none is contacted otherwise.`,
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
	opts := exposeOptions(f, log)
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
