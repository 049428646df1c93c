package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/peerbus/peerbus/netcore/nat"
	"github.com/spf13/cobra"
)

func init() {
	rootCmd.AddCommand(newNATCmd(), newSTUNServerCmd())
}

// natFlags are the flags of "peerbus nat".
type natFlags struct {
	stun    []string
	json    bool
	timeout time.Duration
	quorum  int
	local   string
	samples int
	verbose bool
}

// newNATCmd builds the "nat" command.
func newNATCmd() *cobra.Command {
	f := &natFlags{}
	cmd := &cobra.Command{
		Use:   "nat --stun HOST[:PORT] [--stun HOST[:PORT] ...] [flags]",
		Short: "Detect the NAT in front of this host with STUN",
		Long: `Detect the NAT between this host and the given STUN servers and print the
mapped (external) address, the RFC 5780 mapping and filtering behaviours,
the classic RFC 3489 NAT type (open-internet, full-cone, restricted-cone,
port-restricted-cone, symmetric, symmetric-udp-firewall, blocked) and how
the NAT allocates ports (preserving, sequential with a delta, random).

There is no default STUN server: nothing is contacted unless named with
--stun. The first server is the primary one; the mapping and filtering tests
need it to support RFC 5780 (two IP addresses, e.g. "peerbus stun-server
--alt-ip" or coturn with two listening IPs). Further servers only vote on
the mapped address: --quorum of them (default a majority) must agree on its
IP.

Probes run in parallel with retransmissions inside --timeout; a filtering
NAT costs one --timeout, since a filtering test is only negative when its
timeout expired.

Exit status: 0 on success; 1 on any error, including no answer at all (the
type is then "blocked") and too few servers agreeing; the result is still
printed when there is one.`,
		Example: `  peerbus nat --stun stun.example.net
  peerbus nat --stun 192.0.2.10:3478 --stun 198.51.100.20:3478 --json
  peerbus nat --stun 192.0.2.10 --timeout 1s --local 10.0.0.20 --verbose`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runNAT(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringArrayVarP(&f.stun, "stun", "s", nil, "STUN server HOST[:PORT] (port 3478 by default); repeat for several")
	fl.BoolVar(&f.json, "json", false, "print the result as JSON")
	fl.DurationVarP(&f.timeout, "timeout", "t", nat.DefaultTimeout, "the longest a probe waits, retransmissions included (once the server answered, a probe waits 10 round trips, at least 100ms)")
	fl.IntVar(&f.quorum, "quorum", 0, "servers that must agree on the mapped IP (0: a majority)")
	fl.StringVar(&f.local, "local", "", "local IP[:PORT] to probe from (default: the route's source address)")
	fl.IntVar(&f.samples, "port-samples", nat.DefaultPortSamples, "fresh sockets used to observe port allocation (0: none)")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "also list every STUN transaction")
	return cmd
}

// runNAT runs "peerbus nat".
func runNAT(cmd *cobra.Command, f *natFlags) error {
	if len(f.stun) == 0 {
		return errors.New("no STUN server: give one or more with --stun HOST[:PORT] (there is no default server)")
	}
	if f.timeout <= 0 {
		return fmt.Errorf("--timeout must be positive, not %v", f.timeout)
	}
	if f.quorum < 0 || f.quorum > len(f.stun) {
		return fmt.Errorf("--quorum must be between 0 and the number of servers (%d), not %d", len(f.stun), f.quorum)
	}
	local, err := parseLocal(f.local)
	if err != nil {
		return err
	}
	samples := f.samples
	if samples <= 0 {
		samples = -1 // none (in nat.Config zero means the default)
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := nat.Classify(ctx, nat.Config{
		Servers:     f.stun,
		Quorum:      f.quorum,
		Timeout:     f.timeout,
		PortSamples: samples,
		Local:       local,
	})
	if res != nil {
		out := cmd.OutOrStdout()
		if f.json {
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			if jerr := enc.Encode(res); jerr != nil {
				return jerr
			}
		} else {
			printNATResult(out, res, f.verbose)
		}
	}
	return err
}

// parseLocal parses --local: "", "IP" or "IP:PORT".
func parseLocal(s string) (netip.AddrPort, error) {
	if s == "" {
		return netip.AddrPort{}, nil
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	ip, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("--local %q: want IP or IP:PORT", s)
	}
	return netip.AddrPortFrom(ip, 0), nil
}

// printNATResult prints a classification for people.
func printNATResult(w io.Writer, r *nat.Result, verbose bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	yesNo := map[bool]string{true: "yes", false: "no"}
	fmt.Fprintf(tw, "NAT type\t%s\n", r.Classic)
	fmt.Fprintf(tw, "Behind NAT\t%s\n", yesNo[r.NAT])
	fmt.Fprintf(tw, "Mapping\t%s\n", r.Mapping)
	fmt.Fprintf(tw, "Filtering\t%s\n", r.Filtering)
	mapped := "none"
	if r.MappedAddress.IsValid() {
		mapped = r.MappedAddress.String()
	}
	fmt.Fprintf(tw, "Mapped address\t%s (%d of %d servers agree, quorum %d)\n", mapped, r.Agreeing, r.Servers, r.Quorum)
	fmt.Fprintf(tw, "Local address\t%s\n", r.LocalAddress)
	ports := string(r.PortAllocation)
	if r.PortAllocation == nat.PortSequential {
		ports = fmt.Sprintf("%s (delta %+d)", ports, r.PortDelta)
	}
	fmt.Fprintf(tw, "Port allocation\t%s\n", ports)
	fmt.Fprintf(tw, "Took\t%v\n", r.Duration.Round(time.Millisecond))
	_ = tw.Flush()
	if !verbose {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TEST\tSERVER\tLOCAL\tTO\tCHANGE\tMAPPED\tFROM\tTRIES\tRTT\tERROR")
	for _, t := range r.Tests {
		mapped, from := "-", "-"
		if t.Answered {
			mapped, from = t.Mapped.String(), t.Source.String()
		}
		change := t.Change
		if change == "" {
			change = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%v\t%s\n", t.Name, t.Server, t.Local, t.Destination,
			change, mapped, from, t.Attempts, t.RTT.Round(10*time.Microsecond), t.Error)
	}
	_ = tw.Flush()
}

// stunServerFlags are the flags of "peerbus stun-server".
type stunServerFlags struct {
	listen   string
	altIP    string
	altPort  uint16
	software string
	verbose  bool
}

// newSTUNServerCmd builds the "stun-server" command.
func newSTUNServerCmd() *cobra.Command {
	f := &stunServerFlags{}
	cmd := &cobra.Command{
		Use:   "stun-server [--listen IP:PORT] [--alt-ip IP] [--alt-port PORT]",
		Short: "Run a STUN server (RFC 5780 NAT discovery with two addresses)",
		Long: `Run a STUN server until interrupted (SIGINT or SIGTERM). It answers Binding
requests over UDP with the requester's address (XOR-MAPPED-ADDRESS and
MAPPED-ADDRESS) and ignores everything else.

With --alt-ip it also implements RFC 5780 NAT behaviour discovery: it listens
on both IPs, each on the primary and the alternate port (--alt-port, default
the primary port + 1), answers CHANGE-REQUEST from the other IP and/or port,
and sends OTHER-ADDRESS and RESPONSE-ORIGIN, so "peerbus nat" (or coturn's
turnutils_natdiscovery) can classify NATs against it. Both IPs must be
addresses of this host that clients can reach; --listen then needs a
concrete IP.

It prints its addresses on stdout once listening.`,
		Example: `  peerbus stun-server --listen 0.0.0.0:3478
  peerbus stun-server --listen 192.0.2.10:3478 --alt-ip 192.0.2.11
  peerbus stun-server --listen 192.0.2.10:3478 --alt-ip 192.0.2.11 --alt-port 3479 --verbose`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runSTUNServer(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.listen, "listen", "l", "0.0.0.0:3478", "primary IP:PORT (port 0 picks a free one)")
	fl.StringVar(&f.altIP, "alt-ip", "", "second IP of this host; enables RFC 5780")
	fl.Uint16Var(&f.altPort, "alt-port", 0, "alternate port with --alt-ip (0: primary port + 1)")
	fl.StringVar(&f.software, "software", nat.DefaultSoftware, `SOFTWARE attribute ("-" for none)`)
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log every request on stderr")
	return cmd
}

// runSTUNServer runs "peerbus stun-server".
func runSTUNServer(cmd *cobra.Command, f *stunServerFlags) error {
	listen, err := netip.ParseAddrPort(f.listen)
	if err != nil {
		if strings.HasPrefix(f.listen, ":") {
			listen, err = netip.ParseAddrPort("0.0.0.0" + f.listen)
		}
		if err != nil {
			return fmt.Errorf("--listen %q: want IP:PORT", f.listen)
		}
	}
	cfg := nat.ServerConfig{Listen: listen, AltPort: f.altPort, Software: f.software}
	if f.altIP != "" {
		if cfg.AltIP, err = netip.ParseAddr(f.altIP); err != nil {
			return fmt.Errorf("--alt-ip %q: want an IP address", f.altIP)
		}
	} else if f.altPort != 0 {
		return errors.New("--alt-port needs --alt-ip")
	}
	level := slog.LevelWarn
	if f.verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := nat.ListenServer(ctx, cfg)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if other := srv.OtherAddr(); other.IsValid() {
		fmt.Fprintf(out, "stun-server listening on %s (RFC 5780, other address %s; all: %v)\n",
			srv.Addr(), other, srv.Addrs())
	} else {
		fmt.Fprintf(out, "stun-server listening on %s\n", srv.Addr())
	}
	<-ctx.Done()
	if err := srv.Close(); err != nil {
		return err
	}
	fmt.Fprintln(out, "stun-server stopped")
	return nil
}
