package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/peerbus/peerbus/eventlog"
)

// healthFlags holds the flags of "peerbus health".
type healthFlags struct {
	server  string
	noLog   bool
	timeout time.Duration
}

func init() { rootCmd.AddCommand(newHealthCmd()) }

// newHealthCmd builds the "health" command.
func newHealthCmd() *cobra.Command {
	f := &healthFlags{}
	cmd := &cobra.Command{
		Use:   "health [flags]",
		Short: "Exit 0 when a node and its event log are ready",
		Long: `Check that the node at --server is ready: it accepts the connection, its
JetStream answers (in a cluster: it has a meta leader, so a quorum of nodes is
up), and the event log, when it exists, has a leader and answers. A log not
created yet counts as ready (the first emit creates it). --no-log checks the
connection only, for nodes run with --no-jetstream.

Prints one line, "ok: ..." on stdout with exit status 0, or what is not ready
on stderr with exit status 1. It needs no shell, so a FROM-scratch container
can use it as its healthcheck:

  healthcheck:
    test: ["CMD", "/peerbus", "health"]`,
		Example: `  peerbus health
  peerbus health --server nats://10.0.0.5:4222 --timeout 2s
  peerbus health --no-log`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runHealth(cmd, f) },
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.noLog, "no-log", false, "check the connection only, not JetStream and the event log")
	fl.DurationVarP(&f.timeout, "timeout", "t", 5*time.Second, "how long to wait for the answers at most")
	addServerFlag(cmd, &f.server)
	return cmd
}

// runHealth runs "peerbus health".
func runHealth(cmd *cobra.Command, f *healthFlags) error {
	if f.timeout <= 0 {
		return fmt.Errorf("--timeout must be positive, not %v", f.timeout)
	}
	nc, err := dialServer(f.server)
	if err != nil {
		return fmt.Errorf("not ready: %w", err)
	}
	defer nc.Close()
	ctx, stop := signalContext(cmd.Context())
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	server := redactURL(nc.ConnectedUrlRedacted())
	if err := nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("not ready: node at %s does not answer: %w", server, err)
	}
	if f.noLog {
		_, err := fmt.Fprintf(cmd.OutOrStdout(), "ok: node %s (%s)\n", server, nc.ConnectedServerName())
		return err
	}
	state, err := logHealth(ctx, nc)
	if err != nil {
		return fmt.Errorf("not ready: node at %s (%s): %w", server, nc.ConnectedServerName(), err)
	}
	_, err = fmt.Fprintf(cmd.OutOrStdout(), "ok: node %s (%s), %s\n", server, nc.ConnectedServerName(), state)
	return err
}

// logHealth checks JetStream and the event log, and describes them.
func logHealth(ctx context.Context, nc *nats.Conn) (string, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return "", fmt.Errorf("no JetStream, so no event log (give --no-log for a node run with --no-jetstream)")
		}
		return "", fmt.Errorf("JetStream not ready (a cluster needs a quorum of its nodes up): %w", err)
	}
	s, err := js.Stream(ctx, eventlog.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return "JetStream ready, event log not created yet", nil
	}
	if err != nil {
		return "", fmt.Errorf("event log %s not ready: %w", eventlog.Stream, err)
	}
	si := s.CachedInfo()
	if si.Cluster != nil && si.Config.Replicas > 1 && si.Cluster.Leader == "" {
		return "", fmt.Errorf("event log %s has no leader", eventlog.Stream)
	}
	return fmt.Sprintf("event log ready (events: %d, copies: %d)", si.State.Msgs, si.Config.Replicas), nil
}
