package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/policy"
)

func init() { rootCmd.AddCommand(newPolicyCmd()) }

// newPolicyCmd builds "peerbus policy" and its subcommands.
func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Work with authorization policies (see SECURITY.md)",
		Args:  cobra.NoArgs,
	}
	var file string
	nc := &cobra.Command{
		Use:   "nats-config --authorize FILE",
		Short: "Print a policy as the authorization block of a nats-server configuration",
		Long: `Print the "authorization { users = [...] }" block of a nats-server
configuration that grants the users of the policy FILE what a node given
--authorize FILE grants them, for deployments that run their own NATS
servers (peerbus node --nats-url, or the hub of leafnodes). Put it in the
configuration of every server the peers connect to. The peerbus nodes of
such a deployment connect with an identity of role admin.`,
		Example: `  peerbus policy nats-config --authorize policy.yaml >> nats.conf`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				file = strings.TrimSpace(os.Getenv(bus.EnvAuthorize))
			}
			if file == "" {
				return errors.New("give the policy with --authorize FILE (or $" + bus.EnvAuthorize + ")")
			}
			p, err := policy.Load(file)
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), p.NATSConfig())
			return err
		},
	}
	nc.Flags().StringVar(&file, "authorize", "", "policy `FILE` ($"+bus.EnvAuthorize+")")
	cmd.AddCommand(nc)
	return cmd
}
