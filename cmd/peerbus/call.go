package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/peerbus/peerbus/peer"
)

// Exit statuses of "peerbus call".
const (
	// exitRemote is the exit status of a call that reached a peer whose
	// function failed (a *peer.RemoteError).
	exitRemote = 2
)

// callFlags holds the flags of "peerbus call".
type callFlags struct {
	server  string
	target  string
	group   string
	timeout time.Duration
	stack   bool
}

func init() { rootCmd.AddCommand(newCallCmd()) }

// newCallCmd builds the "call" command.
func newCallCmd() *cobra.Command {
	f := &callFlags{}
	cmd := &cobra.Command{
		Use:   "call [flags] TAG [JSON|-]",
		Short: "Call a tagged function on a peer and print its JSON result",
		Long: `Call the function served under TAG on a peer of the bus and print its JSON
result on stdout. JSON is the argument (default null); "-" reads it from stdin.
It is checked before anything is sent.

--peer chooses where the call runs: "any" (default) one peer offering TAG,
load-balanced (within --group when given); "all" every peer offering TAG
(within --group), printing one JSON line per peer:
  {"peer":"<id>","result":<JSON>}  or  {"peer":"<id>","error":{...}}
or a peer id to call that peer.

Exit status: 0 on success; 2 when a peer answered with an error (the
remote error is printed on stderr, with its stack under --stack), whatever
its code: a failed or panicking function, no_such_tag from a peer called by
id, bad_request, a timeout the peer reported; with --peer all, when some
peer failed. 1 for every other error: bad arguments, an unreachable node,
no peer offering TAG (no reply at all), no result within --timeout (the
caller's own timeout).`,
		Example: `  peerbus call multiply '{"a":5,"b":10}'
  echo '{"a":5,"b":10}' | peerbus call multiply -
  peerbus call --peer all ping
  peerbus call --peer all --group workers info
  peerbus call --peer 3f1c9e2a-0f5e-4a4e-9d38-7b1c5a3d2e10 --timeout 30s build '{"target":"x"}'
  peerbus call --server nats://10.0.0.5:4222 --stack fail`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error { return runCall(cmd, f, args) },
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.target, "peer", "p", "any", `where to run: "any", "all", or a peer id`)
	fl.StringVarP(&f.group, "group", "g", "", "only peers of this group (with --peer any or all)")
	fl.DurationVarP(&f.timeout, "timeout", "t", peer.DefaultCallTimeout, "how long to wait for the result")
	fl.BoolVar(&f.stack, "stack", false, "print the remote stack of a failed call")
	addServerFlag(cmd, &f.server)
	return cmd
}

// runCall runs "peerbus call".
func runCall(cmd *cobra.Command, f *callFlags, args []string) error {
	tag := args[0]
	if err := peer.ValidateTag(tag); err != nil {
		return err
	}
	data, err := readJSONArg(args, 1, cmd.InOrStdin())
	if err != nil {
		return err
	}
	if f.timeout <= 0 {
		return fmt.Errorf("--timeout must be positive, not %v", f.timeout)
	}
	target := strings.TrimSpace(f.target)
	if target == "" {
		return errors.New(`--peer: want "any", "all" or a peer id`)
	}
	if target != "any" && target != "all" && f.group != "" {
		return errors.New("--group applies to --peer any or all, not to a peer id")
	}

	ctx, stop := signalContext(cmd.Context())
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()

	c, err := openClient(f.server, nil)
	if err != nil {
		return err
	}
	defer c.Close()

	out := cmd.OutOrStdout()
	if target == "all" {
		return callAll(ctx, c, f, tag, data, out)
	}
	opts := []peer.CallOption{peer.OnPeer(target), peer.Timeout(f.timeout)}
	if target == "any" {
		// One peer offering tag, load-balanced by the bus (within the group).
		opts = []peer.CallOption{peer.OnAny(), peer.InGroup(f.group), peer.Timeout(f.timeout)}
	}
	res, err := c.p.Call(ctx, tag, data, opts...)
	if err != nil {
		return callError(ctx, c.nc, err, tag, target, f)
	}
	_, err = fmt.Fprintf(out, "%s\n", jsonOrString(res))
	return err
}

// describeTags lists the distinct tags offered in where.
func describeTags(tags []string, where string) string {
	slices.Sort(tags)
	tags = slices.Compact(tags)
	if len(tags) == 0 {
		return "there are no peers " + where
	}
	return "tags offered " + where + ": " + strings.Join(tags, ", ")
}

// callError turns a failed call into the error the command reports.
func callError(ctx context.Context, nc *nats.Conn, err error, tag, target string, f *callFlags) error {
	var re *peer.RemoteError
	if errors.As(err, &re) {
		return &exitError{code: exitRemote, err: errors.New(formatRemoteError(re, f.stack))}
	}
	switch {
	case errors.Is(err, peer.ErrNoResponders):
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		infos, _ := peer.QueryPeers(qctx, nc, 0)
		if (target == "any" || target == "all") && f.group != "" {
			var tags []string
			for _, i := range infos {
				if i.Group == f.group {
					tags = append(tags, i.Tags...)
				}
			}
			return fmt.Errorf("no peer of group %q offers tag %q; %s", f.group, tag, describeTags(tags, "in group "+f.group))
		}
		if target == "any" || target == "all" {
			var tags []string
			for _, i := range infos {
				tags = append(tags, i.Tags...)
			}
			return fmt.Errorf("no peer offers tag %q; %s", tag, describeTags(tags, "on the bus"))
		}
		for _, i := range infos {
			if i.ID == target {
				return fmt.Errorf("peer %s does not offer tag %q; its tags: %s", target, tag, strings.Join(i.Tags, ", "))
			}
		}
		return fmt.Errorf("no peer with id %q on the bus; %s", target, describePeers(infos))
	case errors.Is(err, peer.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("call %q: no result within %v (use --timeout for longer calls)", tag, f.timeout)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("call %q: interrupted", tag)
	}
	return err
}

// describePeers lists peers for an error message.
func describePeers(infos []peer.Info) string {
	if len(infos) == 0 {
		return "there are no peers on the bus"
	}
	s := make([]string, len(infos))
	for i, in := range infos {
		s[i] = fmt.Sprintf("%s (%s)", in.ID, in.Name)
	}
	return "peers: " + strings.Join(s, ", ")
}

// formatRemoteError describes a remote error over several lines.
func formatRemoteError(re *peer.RemoteError, stack bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "remote error from peer %s calling %q\n", re.Peer, re.Tag)
	fmt.Fprintf(&b, "  code:    %s\n", re.Code)
	if re.Type != "" {
		fmt.Fprintf(&b, "  type:    %s\n", re.Type)
	}
	fmt.Fprintf(&b, "  message: %s", re.Message)
	if len(re.Tags) > 0 {
		fmt.Fprintf(&b, "\n  tags:    %s", strings.Join(re.Tags, ", "))
	}
	if stack && re.Stack != "" {
		b.WriteString("\n  stack:\n")
		for l := range strings.SplitSeq(strings.TrimRight(re.Stack, "\n"), "\n") {
			b.WriteString("    " + l + "\n")
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

// allLine is one line of "call --peer all".
type allLine struct {
	Peer   string          `json:"peer"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *lineError      `json:"error,omitempty"`
}

// lineError is the error object of an allLine: a remote error, or a
// local one (timeout) with only a code and a message.
type lineError struct {
	Peer    string   `json:"peer,omitempty"`
	Tag     string   `json:"tag,omitempty"`
	Code    string   `json:"code"`
	Type    string   `json:"type,omitempty"`
	Message string   `json:"message"`
	Stack   string   `json:"stack,omitempty"`
	Tags    []string `json:"tags,omitempty"`
}

// callAll runs a fan-out call and prints one line per peer.
func callAll(ctx context.Context, c *client, f *callFlags, tag string, data []byte, out io.Writer) error {
	opts := []peer.CallAllOption{peer.Timeout(f.timeout), peer.InGroup(f.group)}
	replies, err := c.p.CallAll(ctx, tag, data, opts...)
	if err != nil && len(replies) == 0 {
		return callError(ctx, c.nc, err, tag, "all", f)
	}
	remote, other := 0, 0
	for _, r := range replies {
		l := allLine{Peer: r.Peer}
		var re *peer.RemoteError
		switch {
		case r.Err == nil:
			l.Result = jsonOrString(r.Data)
		case errors.As(r.Err, &re):
			remote++
			l.Error = &lineError{Peer: re.Peer, Tag: re.Tag, Code: re.Code, Type: re.Type, Message: re.Message, Tags: re.Tags}
			if f.stack {
				l.Error.Stack = re.Stack
			}
		default:
			other++
			code := peer.CodeError
			if errors.Is(r.Err, peer.ErrTimeout) {
				code = peer.CodeTimeout
			}
			l.Error = &lineError{Code: code, Message: r.Err.Error()}
		}
		b, merr := jsonLine(l)
		if merr != nil {
			return merr
		}
		if _, werr := out.Write(b); werr != nil {
			return werr
		}
	}
	switch {
	case remote > 0:
		return &exitError{code: exitRemote, err: fmt.Errorf("%d of %d peers failed calling %q", remote+other, len(replies), tag)}
	case other > 0:
		return fmt.Errorf("%d of %d peers did not answer %q in time", other, len(replies), tag)
	}
	return nil
}
