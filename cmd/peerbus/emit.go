package main

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/peerbus/peerbus/peer"
)

// emitFlags holds the flags of "peerbus emit".
type emitFlags struct {
	server  string
	group   string
	timeout time.Duration
}

// emitResult is what "peerbus emit" prints.
type emitResult struct {
	ID   string    `json:"id"`
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
}

func init() { rootCmd.AddCommand(newEmitCmd()) }

// newEmitCmd builds the "emit" command.
func newEmitCmd() *cobra.Command {
	f := &emitFlags{}
	cmd := &cobra.Command{
		Use:   "emit [flags] EVENT [JSON|-]",
		Short: "Emit an event with a JSON payload",
		Long: `Emit the event EVENT (dot-separated name, e.g. order.created) with the JSON
payload (default null; "-" reads it from stdin), and print
  {"id":"<event id>","seq":<log sequence, 0 when not logged>,"time":"<time>"}
The event comes from a client of the CLI, in group --group
(default $PEERBUS_GROUP).`,
		Example: `  peerbus emit demo.hello '{"a":1}'
  peerbus emit --group billing invoice.paid '{"id":42}'
  jq -c . order.json | peerbus emit order.created -`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error { return runEmit(cmd, f, args) },
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.group, "group", "g", "", "group the event is emitted in [$"+peer.EnvGroup+"]")
	fl.DurationVarP(&f.timeout, "timeout", "t", 10*time.Second, "how long to wait for the bus to take the event")
	addServerFlag(cmd, &f.server)
	return cmd
}

// runEmit runs "peerbus emit".
func runEmit(cmd *cobra.Command, f *emitFlags, args []string) error {
	name := args[0]
	if err := peer.ValidateEventName(name, false); err != nil {
		return err
	}
	data, err := readJSONArg(args, 1, cmd.InOrStdin())
	if err != nil {
		return err
	}
	var popts []peer.Option
	if cmd.Flags().Changed("group") {
		popts = append(popts, peer.WithGroup(f.group))
	}
	c, err := openClient(f.server, popts)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, stop := signalContext(cmd.Context())
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	ack, err := c.p.Emit(ctx, name, data)
	if err != nil {
		return err
	}
	b, err := jsonLine(emitResult{ID: ack.ID, Seq: ack.Seq, Time: ack.Time})
	if err != nil {
		return err
	}
	_, err = cmd.OutOrStdout().Write(b)
	return err
}
