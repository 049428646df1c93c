package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/peerbus/peerbus/identity"
)

func init() { rootCmd.AddCommand(newKeygenCmd()) }

// newKeygenCmd builds the "keygen" command.
func newKeygenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "keygen [FILE]",
		Short: "Make a peer identity: an nkey seed file and the peer id it gives",
		Long: `Make a new peer identity (a NATS user nkey, ed25519) and write its seed to
FILE, a new file readable by its owner only (mode 0600); an existing file is
never replaced. Without FILE the seed is printed instead, on the first line
("seed: SU...").

It prints, one "key: value" per line:

  public: <public key>    (what a policy names: --authorize)
  peer: <peer id>         (the id the key gives: UUIDv5 of the public key)
  file: <FILE>

Give the file to a node or a client command with --identity FILE or
$PEERBUS_IDENTITY.`,
		Example: `  peerbus keygen alice.nk
  peerbus node --identity alice.nk
  peerbus call --identity alice.nk ping`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := identity.New()
			if err != nil {
				return err
			}
			var b strings.Builder
			if len(args) == 0 {
				seed, err := id.Seed()
				if err != nil {
					return err
				}
				fmt.Fprintf(&b, "seed: %s\n", seed)
			} else if err := id.WriteFile(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(&b, "public: %s\npeer: %s\n", id.PublicKey(), id.PeerID())
			if len(args) == 1 {
				fmt.Fprintf(&b, "file: %s\n", args[0])
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), b.String())
			return err
		},
	}
}
