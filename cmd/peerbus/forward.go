package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/peerbus/peerbus/bridge"
)

// forwardFlags holds the flags of "peerbus forward".
type forwardFlags struct {
	server     string
	listen     string
	stun       []string
	strategies string
	timeout    time.Duration
	udpIdle    time.Duration
	noLoop     bool
	logLevel   string
}

func init() { rootCmd.AddCommand(newForwardCmd()) }

// newForwardCmd builds the "forward" command.
func newForwardCmd() *cobra.Command {
	f := &forwardFlags{}
	cmd := &cobra.Command{
		Use:   "forward --listen [tcp://|udp://]HOST:PORT [flags] PEER NAME",
		Short: "Forward a local port to a service another peer exposes",
		Long: `Forward a local TCP or UDP port to the service NAME exposed by peer PEER
("peerbus expose"), like ssh -L. PEER is a peer id, or "any" for any peer
exposing NAME. --listen takes tcp://HOST:PORT (the default scheme) or
udp://HOST:PORT; the service must be of the same protocol.

Each TCP connection to the local port opens its own session; for UDP, each
local client address gets one session, ended after --udp-idle without a
datagram. A session tries the strategies in order (direct, reverse,
punch-udp, punch-tcp, relay; --strategies restricts them) and logs the
path it took on stderr.

Once listening the command prints on stdout

  listening: tcp://HOST:PORT
  ready

and runs until SIGINT or SIGTERM. It is a client of the node at --server
and does not announce itself as a peer.`,
		Example: `  peerbus forward --listen 127.0.0.1:9000 5b0d6c8e-... web
  peerbus forward --listen 127.0.0.1:9000 any web
  peerbus forward --listen udp://127.0.0.1:5353 any dns --strategies relay
  peerbus forward --listen 127.0.0.1:2222 --stun rendezvous:3478 --server nats://rendezvous:4222 any ssh`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error { return runForward(cmd, f, args[0], args[1]) },
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.listen, "listen", "l", "", "local address to listen on, [tcp://|udp://]HOST:PORT (port 0 picks one)")
	fl.StringArrayVar(&f.stun, "stun", nil, "STUN server `HOST:PORT` to learn the external address and NAT type (repeatable)")
	fl.StringVar(&f.strategies, "strategies", "all", "strategies to try, comma separated: direct, reverse, punch-udp, punch-tcp, relay")
	fl.DurationVar(&f.timeout, "timeout", 30*time.Second, "how long one session's setup may take")
	fl.DurationVar(&f.udpIdle, "udp-idle", bridge.DefaultUDPIdleTimeout, "end a UDP session after this long without a datagram")
	fl.BoolVar(&f.noLoop, "no-loopback", false, "do not offer loopback addresses to the exposer")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level on stderr: debug, info, warn, error")
	addServerFlag(cmd, &f.server)
	_ = cmd.MarkFlagRequired("listen")
	return cmd
}

// parseListen splits --listen into protocol and address.
func parseListen(s string) (proto, addr string, err error) {
	if !strings.Contains(s, "://") {
		s = "tcp://" + s
	}
	proto, addr, err = bridge.ParseTarget(s)
	if err != nil {
		return "", "", fmt.Errorf("--listen %q: want [tcp://|udp://]HOST:PORT", strings.TrimPrefix(s, "tcp://"))
	}
	return proto, addr, nil
}

// runForward runs "peerbus forward".
func runForward(cmd *cobra.Command, f *forwardFlags, peerID, name string) error {
	log, _, err := newLogger(cmd.ErrOrStderr(), f.logLevel)
	if err != nil {
		return err
	}
	proto, addr, err := parseListen(f.listen)
	if err != nil {
		return err
	}
	if err := bridge.ValidateName(name); err != nil {
		return err
	}
	strategies, err := bridge.ParseStrategies(f.strategies)
	if err != nil {
		return fmt.Errorf("--strategies: %w", err)
	}
	if f.timeout <= 0 {
		return fmt.Errorf("--timeout must be positive, not %v", f.timeout)
	}
	if f.udpIdle <= 0 {
		return fmt.Errorf("--udp-idle must be positive, not %v", f.udpIdle)
	}
	opts := []bridge.DialOption{bridge.WithStrategies(strategies...), bridge.WithLogger(log.With("component", "bridge"))}
	if len(f.stun) > 0 {
		opts = append(opts, bridge.WithSTUN(f.stun...))
	}
	if f.noLoop {
		opts = append(opts, bridge.WithoutLoopback())
	}
	cl, err := openClient(f.server, nil, stayConnected())
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, stop := signalContext(cmd.Context())
	defer stop()
	fw := &forwarder{peerID: peerID, name: name, opts: opts, timeout: f.timeout, idle: f.udpIdle, log: log, cl: cl}
	if proto == "udp" {
		return fw.udp(ctx, cmd.OutOrStdout(), addr)
	}
	return fw.tcp(ctx, cmd.OutOrStdout(), addr)
}

// forwarder carries local connections to a remote service.
type forwarder struct {
	peerID, name string
	opts         []bridge.DialOption
	timeout      time.Duration
	idle         time.Duration
	log          *slog.Logger
	cl           *client
	wg           sync.WaitGroup
}

func printListening(out io.Writer, proto string, a net.Addr) error {
	_, err := fmt.Fprintf(out, "listening: %s://%s\nready\n", proto, a)
	return err
}

// tcp forwards every connection to the local TCP address.
func (fw *forwarder) tcp(ctx context.Context, out io.Writer, addr string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer fw.wg.Wait()
	defer ln.Close()
	if err := printListening(out, "tcp", ln.Addr()); err != nil {
		return err
	}
	stopAccept := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stopAccept()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				fw.log.Info("shutting down", "cause", context.Cause(ctx))
				return nil
			}
			return err
		}
		fw.wg.Add(1)
		go func() {
			defer fw.wg.Done()
			fw.serveTCP(ctx, c)
		}()
	}
}

func (fw *forwarder) serveTCP(ctx context.Context, local net.Conn) {
	dctx, cancel := context.WithTimeout(ctx, fw.timeout)
	defer cancel()
	remote, err := bridge.Dial(dctx, fw.cl.p, fw.peerID, fw.name, fw.opts...)
	if err != nil {
		fw.log.Warn("connection refused", "from", local.RemoteAddr(), "err", err)
		_ = local.Close()
		return
	}
	res := remote.Result()
	fw.log.Info("connection", "from", local.RemoteAddr(), "peer", res.Peer, "path", res.Path,
		"remote", pathRemote(res), "setup", res.Setup.Round(time.Millisecond))
	bridge.Join(ctx, local, remote)
	fw.log.Debug("connection closed", "from", local.RemoteAddr())
}

func pathRemote(res bridge.DialResult) string {
	if res.Remote.IsValid() {
		return res.Remote.String()
	}
	return "-"
}

// udp forwards the datagrams of every local client (bridge.ForwardUDP).
func (fw *forwarder) udp(ctx context.Context, out io.Writer, addr string) error {
	var lc net.ListenConfig
	pcc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return err
	}
	pc := pcc.(*net.UDPConn)
	if err := printListening(out, "udp", pc.LocalAddr()); err != nil {
		_ = pc.Close()
		return err
	}
	opts := append(fw.opts, bridge.WithSessionSetupTimeout(fw.timeout), bridge.WithUDPIdleTimeout(fw.idle))
	err = bridge.ForwardUDP(ctx, fw.cl.p, pc, fw.peerID, fw.name, opts...)
	fw.log.Info("shutting down", "cause", context.Cause(ctx))
	return err
}
