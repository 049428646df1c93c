package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/peer"
)

// emitFlags holds the flags of "peerbus emit".
type emitFlags struct {
	server    string
	group     string
	id        string
	transient bool
	timeout   time.Duration
}

// emitResult is what "peerbus emit" prints.
type emitResult struct {
	ID        string    `json:"id"`
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Duplicate bool      `json:"duplicate,omitempty"`
	Transient bool      `json:"transient,omitempty"`
}

func init() { rootCmd.AddCommand(newEmitCmd()) }

// newEmitCmd builds the "emit" command.
func newEmitCmd() *cobra.Command {
	f := &emitFlags{}
	cmd := &cobra.Command{
		Use:   "emit [flags] EVENT [JSON|-]",
		Short: "Emit an event with a JSON payload",
		Long: `Emit the event EVENT (dot-separated name, e.g. order.created) with the JSON
payload (default null; "-" reads it from stdin). The event is stored in the
node's event log, which also delivers it to live watchers, and once the log
has it emit prints
  {"id":"<event id>","seq":<log sequence>,"time":"<emit time>"}
The event comes from a client of the CLI, in group --group
(default $PEERBUS_GROUP).

--id gives the event id instead of a new uuid: an emit retried with the same
id within the log's dedupe window (2 minutes by default, see
"peerbus node --log-dedupe-window") is stored once, and the retry prints the
stored event's seq and time with "duplicate":true.

--transient sends the event without storing it (seq 0): live watchers get
it, the log, replays and durable watchers never see it. A node without an
event log (started with --no-jetstream) accepts transient events only.`,
		Example: `  peerbus emit demo.hello '{"a":1}'
  peerbus emit --group billing invoice.paid '{"id":42}'
  jq -c . order.json | peerbus emit order.created -
  peerbus emit --id order-42-created order.created '{"id":42}'   # safe to retry
  peerbus emit --transient job.progress '{"pct":40}'`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error { return runEmit(cmd, f, args) },
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.group, "group", "g", "", "group the event is emitted in [$"+peer.EnvGroup+"]")
	fl.StringVar(&f.id, "id", "", "event `ID` (default a new uuid); a retry with the same id is stored once")
	fl.BoolVar(&f.transient, "transient", false, "send the event without storing it in the event log")
	fl.DurationVarP(&f.timeout, "timeout", "t", 10*time.Second, "how long to wait for the bus to take the event")
	addServerFlag(cmd, &f.server)
	return cmd
}

// runEmit runs "peerbus emit".
func runEmit(cmd *cobra.Command, f *emitFlags, args []string) error {
	name := args[0]
	if err := eventlog.ValidateName(name, false); err != nil {
		return err
	}
	if f.timeout <= 0 {
		return fmt.Errorf("--timeout must be positive, not %v", f.timeout)
	}
	data, err := readJSONArg(args, 1, cmd.InOrStdin())
	if err != nil {
		return err
	}
	var popts []peer.Option
	if cmd.Flags().Changed("group") {
		popts = append(popts, peer.WithGroup(f.group))
	}
	var eopts []eventlog.EmitOption
	if cmd.Flags().Changed("id") {
		eopts = append(eopts, eventlog.WithEventID(f.id))
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
	var ack eventlog.Ack
	if f.transient {
		ack, err = c.lg.EmitTransient(ctx, name, data, eopts...)
		if err == nil {
			err = c.nc.FlushWithContext(ctx) // the node has it before we exit
		}
	} else {
		ack, err = c.lg.Emit(ctx, name, data, eopts...)
	}
	if err != nil {
		if errors.Is(err, eventlog.ErrNoJetStream) {
			return fmt.Errorf("%w\n(the node has no event log: it runs without JetStream; "+
				"use --transient to send the event to live watchers without storing it)", err)
		}
		return logError(err)
	}
	b, err := jsonLine(emitResult{ID: ack.ID, Seq: ack.Seq, Time: ack.Time, Duplicate: ack.Duplicate, Transient: f.transient})
	if err != nil {
		return err
	}
	_, err = cmd.OutOrStdout().Write(b)
	return err
}
