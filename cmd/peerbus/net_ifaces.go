package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/peerbus/peerbus/netcore"
)

func init() { rootCmd.AddCommand(newIfacesCmd()) }

// ifacesReport is what "peerbus ifaces" prints.
type ifacesReport struct {
	Interfaces    []netcore.Interface `json:"interfaces"`
	DefaultRoutes []netcore.Route     `json:"default_routes"`
	// NoDefaultRoute explains, per family, why there is no default route.
	NoDefaultRoute map[string]string `json:"no_default_route,omitempty"`
}

// newIfacesCmd builds the "ifaces" command.
func newIfacesCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ifaces [--json]",
		Short: "List network interfaces, their addresses and the default routes",
		Long: `List this machine's network interfaces with their IPv4 and IPv6 addresses
(link-local ones marked), then the default route of each family: the
interface, the source address a pipe bound to that route uses, and the
gateway.

Default routes come from the kernel routing tables (/proc/net/route and
/proc/net/ipv6_route on Linux); where those are missing, from the source
address the kernel picks for a UDP socket connected to a documentation
address (192.0.2.1, 2001:db8::1), which sends no packet. The gateway is then
unknown. Nothing is sent on the network.`,
		Example: `  peerbus ifaces
  peerbus ifaces --json | jq '.default_routes[] | select(.family == "ipv4") | .local_ip'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rep, err := collectIfaces()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			return printIfaces(out, rep)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// collectIfaces gathers the interfaces and default routes.
func collectIfaces() (ifacesReport, error) {
	ifs, err := netcore.Interfaces()
	if err != nil {
		return ifacesReport{}, err
	}
	rep := ifacesReport{Interfaces: ifs, DefaultRoutes: []netcore.Route{}}
	for _, f := range []netcore.Family{netcore.IPv4, netcore.IPv6} {
		r, err := netcore.DefaultRoute(f)
		if err != nil {
			if rep.NoDefaultRoute == nil {
				rep.NoDefaultRoute = map[string]string{}
			}
			name, _ := f.MarshalText()
			rep.NoDefaultRoute[string(name)] = err.Error()
			continue
		}
		rep.DefaultRoutes = append(rep.DefaultRoutes, r)
	}
	return rep, nil
}

// printIfaces writes the report as two tables.
func printIfaces(w io.Writer, rep ifacesReport) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INTERFACE\tINDEX\tMTU\tFLAGS\tADDRESSES")
	for _, it := range rep.Interfaces {
		var flags []string
		switch {
		case it.Up && it.Running:
			flags = append(flags, "up")
		case it.Up:
			flags = append(flags, "down", "no-carrier") // administratively up
		default:
			flags = append(flags, "down")
		}
		if it.Loopback {
			flags = append(flags, "loopback")
		}
		if it.Multicast {
			flags = append(flags, "multicast")
		}
		addrs := make([]string, 0, len(it.Addrs))
		for _, a := range it.Addrs {
			s := a.Prefix.String()
			if a.LinkLocal {
				s += " (link-local)"
			}
			addrs = append(addrs, s)
		}
		if len(addrs) == 0 {
			addrs = []string{"-"}
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", it.Name, it.Index, it.MTU, strings.Join(flags, ","), addrs[0])
		for _, a := range addrs[1:] {
			fmt.Fprintf(tw, "\t\t\t\t%s\n", a)
		}
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "FAMILY\tINTERFACE\tSOURCE\tGATEWAY")
	for _, r := range rep.DefaultRoutes {
		gw := "-"
		if r.Gateway.IsValid() {
			gw = r.Gateway.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Family, r.Interface, r.LocalIP, gw)
	}
	for _, f := range []string{"ipv4", "ipv6"} {
		if why, ok := rep.NoDefaultRoute[f]; ok {
			var fam netcore.Family
			_ = fam.UnmarshalText([]byte(f))
			fmt.Fprintf(tw, "%s\tnone\t-\t-\t(%s)\n", fam, why)
		}
	}
	return tw.Flush()
}
