// Command peerbus runs peerbus nodes and talks to them: it serves and
// calls tagged functions, emits and watches events, lists peers, and
// offers the networking tools of package netcore.
//
// Each subcommand lives in its own file and adds itself to rootCmd in an
// init function; this file only wires the root command.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// rootCmd is the peerbus command; subcommands add themselves to it.
var rootCmd = &cobra.Command{
	Use:   "peerbus",
	Short: "Peer-to-peer calls, events and pipes over an embedded NATS bus",
	Long: `peerbus runs a node (an embedded NATS server with JetStream) and talks to
nodes: call tagged functions on peers, emit and watch events, list peers,
and use the networking tools (interfaces, NAT detection, echo daemon).

Client commands reach a node through --server (default $PEERBUS_SERVER,
else nats://127.0.0.1:4222).`,
	SilenceUsage:  true,
	SilenceErrors: true,
}

// exitError carries a specific exit code out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	if err := rootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "peerbus:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}
