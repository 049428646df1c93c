package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/peerbus/peerbus/netcore"
)

func init() { rootCmd.AddCommand(newEchoCmd()) }

// echoReplyTimeout bounds one echo write: a client that does not read its
// echoes is dropped.
const echoReplyTimeout = 5 * time.Second

// echoFlags are the flags of "peerbus echo".
type echoFlags struct {
	tcp, udp     []int
	allAddresses bool
	v4, v6       bool
	framing      string
	maxSize      int
	maxConns     int
	idleTimeout  time.Duration
	verbose      bool
}

// newEchoCmd builds the "echo" command.
func newEchoCmd() *cobra.Command {
	f := &echoFlags{}
	cmd := &cobra.Command{
		Use:   "echo --tcp PORT|--udp PORT [--tcp PORT ...] [flags]",
		Short: "Run an echo server on TCP and UDP ports, IPv4 and IPv6",
		Long: `Run an echo daemon: every message received on any of the given TCP and UDP
ports is sent back to its sender. It listens on every port for each family
(IPv4 and IPv6; by default both, IPv6 only where the machine has it), on
loopback unless --all-addresses is given, prints one "listening on" line
per socket and then "ready", and runs until SIGINT or SIGTERM.

Port 0 picks a free port, separately for every socket; the "listening on"
lines tell which. --framing sets how TCP streams are cut into messages:
"raw" (default) echoes bytes as they arrive, "lines" echoes line by line,
"length" expects a 4-byte big-endian length before every message. UDP
echoes datagram by datagram. Bad input drops the offending TCP client only;
--max-conns bounds the clients held per socket and --idle-timeout frees
the slots of silent ones.`,
		Example: `  peerbus echo --tcp 7000 --udp 7000
  peerbus echo --tcp 7000,7001 --udp 7000 --v4
  peerbus echo --tcp 7000 --all-addresses --framing lines
  peerbus echo --udp 0 --v6 --verbose

  # then, from another terminal (nc -N is netcat-openbsd's: Debian package
  # netcat-openbsd; socat is package socat):
  echo hello | nc -N 127.0.0.1 7000
  echo hello | socat -t 1 - UDP6:[::1]:7000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runEcho(cmd, f) },
	}
	fl := cmd.Flags()
	fl.IntSliceVar(&f.tcp, "tcp", nil, "TCP port to listen on (0: any free port); repeat or separate with commas")
	fl.IntSliceVar(&f.udp, "udp", nil, "UDP port to listen on (0: any free port); repeat or separate with commas")
	fl.BoolVar(&f.allAddresses, "all-addresses", false, "listen on all addresses (0.0.0.0 and ::) instead of loopback only")
	fl.BoolVar(&f.v4, "v4", false, "listen on IPv4 (with --v6: both; default: both)")
	fl.BoolVar(&f.v6, "v6", false, "listen on IPv6 (with --v4: both; default: both)")
	fl.StringVar(&f.framing, "framing", "raw", `how TCP streams are cut into messages: "raw", "lines" or "length"`)
	fl.IntVar(&f.maxSize, "max-size", netcore.DefaultMaxMessageSize, "largest message in bytes with --framing lines or length")
	fl.IntVar(&f.maxConns, "max-conns", netcore.DefaultMaxConns, "most clients held at once per socket")
	fl.DurationVar(&f.idleTimeout, "idle-timeout", 5*time.Minute, "drop a TCP client silent this long (0: never)")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log every message on stderr")
	return cmd
}

// plan checks the flags and turns them into what the daemon listens on
// and the options of its pipes.
func (f *echoFlags) plan() (netcore.ListenSpec, []netcore.Option, error) {
	var spec netcore.ListenSpec
	if len(f.tcp) == 0 && len(f.udp) == 0 {
		return spec, nil, errors.New("nothing to listen on: give at least one --tcp PORT or --udp PORT")
	}
	for _, p := range []struct {
		flag  string
		ports []int
		dst   *[]uint16
	}{{"--tcp", f.tcp, &spec.TCP}, {"--udp", f.udp, &spec.UDP}} {
		seen := map[int]bool{}
		for _, port := range p.ports {
			if port < 0 || port > 65535 {
				return spec, nil, fmt.Errorf("%s %d: port must be between 0 and 65535", p.flag, port)
			}
			if port != 0 && seen[port] {
				return spec, nil, fmt.Errorf("%s %d given twice", p.flag, port)
			}
			seen[port] = true
			*p.dst = append(*p.dst, uint16(port))
		}
	}
	switch {
	case f.v4 && !f.v6:
		spec.Families = []netcore.Family{netcore.IPv4}
	case f.v6 && !f.v4:
		spec.Families = []netcore.Family{netcore.IPv6}
	default:
		spec.Families = []netcore.Family{netcore.IPv4, netcore.IPv6}
	}
	spec.AllAddresses = f.allAddresses
	if f.maxSize <= 0 {
		return spec, nil, fmt.Errorf("--max-size must be positive, not %d", f.maxSize)
	}
	if f.maxConns <= 0 {
		return spec, nil, fmt.Errorf("--max-conns must be positive, not %d", f.maxConns)
	}
	if f.idleTimeout < 0 {
		return spec, nil, fmt.Errorf("--idle-timeout must not be negative, not %v", f.idleTimeout)
	}
	opts := []netcore.Option{netcore.WithMaxConns(f.maxConns), netcore.WithIdleTimeout(f.idleTimeout)}
	switch f.framing {
	case "raw":
		opts = append(opts, netcore.WithFraming(netcore.Raw()))
	case "lines":
		opts = append(opts, netcore.WithFraming(netcore.Lines(f.maxSize)))
	case "length":
		opts = append(opts, netcore.WithFraming(netcore.LengthPrefixed(f.maxSize)))
	default:
		return spec, nil, fmt.Errorf(`--framing %q: want "raw", "lines" or "length"`, f.framing)
	}
	return spec, opts, nil
}

// echoHandler sends every message back; a TCP client that cannot take its
// echo in time is dropped.
func echoHandler(log *slog.Logger) netcore.Handler {
	return func(m netcore.Message) {
		log.Info("message", "proto", m.Pipe.Protocol(), "from", m.From, "bytes", len(m.Data))
		ctx, cancel := context.WithTimeout(context.Background(), echoReplyTimeout)
		err := m.Reply(ctx, m.Data)
		cancel()
		if err != nil && !errors.Is(err, net.ErrClosed) {
			log.Warn("echo failed", "from", m.From, "err", err)
			if m.Pipe.Protocol() == netcore.TCP && !m.Pipe.IsServer() {
				m.Pipe.Close()
			}
		}
	}
}

// startEcho opens the echo daemon and prints where it listens.
func startEcho(ctx context.Context, f *echoFlags, out, errOut io.Writer) (*netcore.Daemon, error) {
	spec, opts, err := f.plan()
	if err != nil {
		return nil, err
	}
	level := slog.LevelWarn
	if f.verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: level}))
	explicit := f.v4 || f.v6
	if !explicit && !haveIPv6Loopback() {
		fmt.Fprintln(errOut, "peerbus echo: no IPv6 on this machine, listening on IPv4 only")
		spec.Families = []netcore.Family{netcore.IPv4}
	}
	d := netcore.NewDaemon(echoHandler(log), append(opts, netcore.WithLogger(log))...)
	pipes, err := d.ListenAll(ctx, spec)
	if err != nil {
		d.Close()
		return nil, err
	}
	for _, p := range pipes {
		fmt.Fprintf(out, "listening on %s %s\n", p.Protocol(), p.LocalAddr())
	}
	fmt.Fprintln(out, "ready")
	return d, nil
}

// haveIPv6Loopback reports whether ::1 can be bound.
func haveIPv6Loopback() bool {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// runEcho runs "peerbus echo" until a signal or the command's context
// ends.
func runEcho(cmd *cobra.Command, f *echoFlags) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := startEcho(ctx, f, cmd.OutOrStdout(), cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	<-ctx.Done()
	var in, out uint64
	for _, p := range d.Pipes() {
		st := p.Stats()
		in += st.MessagesIn
		out += st.MessagesOut
	}
	if err := d.Close(); err != nil {
		return err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "peerbus echo: stopped after %d messages in, %d echoed\n", in, out)
	return nil
}
