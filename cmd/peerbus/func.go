package main

// The --func runner of "peerbus node": a tag served by a shell command.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/peerbus/peerbus/peer"
)

const (
	// maxFuncStderr caps the stderr kept from a --func command.
	maxFuncStderr = 64 << 10
	// funcWaitDelay is how long a --func command's pipes stay open after
	// the command was killed (a grandchild may hold them).
	funcWaitDelay = 2 * time.Second
)

// Environment of a --func command, on top of the node's environment.
const (
	envFuncTag    = "PEERBUS_TAG"    // the tag being served
	envFuncCaller = "PEERBUS_CALLER" // the calling peer's id ("" for a client)
)

// funcSpec is one --func TAG=COMMAND.
type funcSpec struct {
	Tag     string
	Command string
}

// parseFuncSpec parses TAG=COMMAND.
func parseFuncSpec(s string) (funcSpec, error) {
	tag, command, ok := strings.Cut(s, "=")
	tag, command = strings.TrimSpace(tag), strings.TrimSpace(command)
	if !ok || tag == "" || command == "" {
		return funcSpec{}, fmt.Errorf("--func %q: want TAG=COMMAND, e.g. --func upper='tr a-z A-Z'", s)
	}
	if err := peer.ValidateTag(tag); err != nil {
		return funcSpec{}, fmt.Errorf("--func %q: %w", s, err)
	}
	return funcSpec{Tag: tag, Command: command}, nil
}

// parseFuncSpecs parses every --func value and rejects duplicate tags.
func parseFuncSpecs(values []string) ([]funcSpec, error) {
	seen := map[string]bool{}
	out := make([]funcSpec, 0, len(values))
	for _, v := range values {
		f, err := parseFuncSpec(v)
		if err != nil {
			return nil, err
		}
		if seen[f.Tag] || f.Tag == peer.TagInfo || f.Tag == peer.TagPing {
			return nil, fmt.Errorf("--func %q: tag %q is already served", v, f.Tag)
		}
		seen[f.Tag] = true
		out = append(out, f)
	}
	return out, nil
}

// CommandError is the error of a --func command that failed: it exited
// with a non-zero status, was killed, or printed something that is not
// JSON. Callers receive it as a *peer.RemoteError whose message is this
// error's text (exit status and stderr included).
type CommandError struct {
	// Tag is the tag the command serves.
	Tag string
	// Command is the shell command.
	Command string
	// State is the process state ("exit status 3", "signal: killed"),
	// empty when the command did not run.
	State string
	// Reason says what went wrong when the exit status alone does not.
	Reason string
	// Stderr is the command's trimmed standard error.
	Stderr string
	// Err is the underlying error (a context error for a command that
	// outlived its call, which makes the remote error a timeout).
	Err error
}

// Error implements error.
func (e *CommandError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "command %q", e.Command)
	switch {
	case e.Reason != "" && e.State != "":
		fmt.Fprintf(&b, " %s (%s)", e.Reason, e.State)
	case e.Reason != "":
		fmt.Fprintf(&b, " %s", e.Reason)
	case e.State != "":
		fmt.Fprintf(&b, " failed: %s", e.State)
	}
	if e.Stderr != "" {
		fmt.Fprintf(&b, ": %s", e.Stderr)
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *CommandError) Unwrap() error { return e.Err }

// StackTrace describes where the error happened; it becomes the remote
// error's stack.
func (e *CommandError) StackTrace() string {
	s := "sh -c " + e.Command
	if e.State != "" {
		s += "\n\t" + e.State
	}
	return s
}

// commandFunc serves one tag by running a shell command: the JSON
// arguments on stdin, the JSON result on stdout.
type commandFunc struct {
	spec funcSpec
	// maxOut returns the largest stdout accepted (the bus max payload).
	maxOut func() int
	log    *slog.Logger
}

// run runs the command for one call. Its run time is bounded by ctx.
func (f *commandFunc) run(ctx context.Context, args []byte) ([]byte, error) {
	limit := 1 << 20
	if f.maxOut != nil {
		if n := f.maxOut(); n > 0 {
			limit = n
		}
	}
	if a := bytes.TrimSpace(args); len(a) > 0 {
		var v json.RawMessage
		if err := json.Unmarshal(a, &v); err != nil {
			// As a typed function answers: the command never runs.
			return nil, fmt.Errorf("%w: arguments of %s are not JSON: %w", peer.ErrBadRequest, f.spec.Tag, err)
		}
	}
	cmd := exec.CommandContext(ctx, "sh", "-c", f.spec.Command)
	cmd.Stdin = bytes.NewReader(args)
	stdout := &cappedBuffer{limit: limit, strict: true}
	stderr := &cappedBuffer{limit: maxFuncStderr}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Env = append(os.Environ(), envFuncTag+"="+f.spec.Tag, envFuncCaller+"="+peer.CallerFrom(ctx))
	cmd.WaitDelay = funcWaitDelay
	setProcessGroup(cmd)
	start := time.Now()
	err := cmd.Run()
	if f.log != nil {
		f.log.Debug("func command ran", "tag", f.spec.Tag, "elapsed", time.Since(start), "err", err)
	}
	ce := &CommandError{Tag: f.spec.Tag, Command: f.spec.Command, Stderr: stderr.text()}
	if cmd.ProcessState != nil {
		ce.State = cmd.ProcessState.String()
	}
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		ce.Reason, ce.Err = "did not finish before the caller's deadline and was killed", ctx.Err()
		return nil, ce
	case ctx.Err() != nil:
		ce.Reason, ce.Err = "was killed: the call was canceled (the peer is closing)", ctx.Err()
		return nil, ce
	case stdout.over:
		ce.Reason = fmt.Sprintf("printed more than %d bytes (the bus max payload)", limit)
		ce.Err = peer.ErrPayloadTooLarge
		return nil, ce
	case err != nil:
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ce.Reason, ce.Err = "could not run: "+err.Error(), err
		}
		return nil, ce
	}
	if f.log != nil && len(stderr.Bytes()) > 0 {
		f.log.Debug("func command stderr", "tag", f.spec.Tag, "stderr", stderr.text())
	}
	out := bytes.TrimSpace(stdout.Bytes())
	if len(out) == 0 {
		return []byte("null"), nil
	}
	if err := checkJSON(out); err != nil {
		ce.Reason = "printed invalid JSON on stdout: " + err.Error()
		return nil, ce
	}
	return out, nil
}

// cappedBuffer keeps at most limit bytes. When strict, a write beyond the
// limit fails (the command then gets a broken pipe); otherwise the excess
// is dropped silently. (The buffer is a field, not embedded, so that
// io.Copy cannot bypass Write through bytes.Buffer.ReadFrom.)
type cappedBuffer struct {
	buf    bytes.Buffer
	limit  int
	strict bool
	over   bool
}

// Write implements io.Writer.
func (c *cappedBuffer) Write(p []byte) (int, error) {
	room := c.limit - c.buf.Len()
	if len(p) > room {
		c.over = true
		if room > 0 {
			c.buf.Write(p[:room])
		}
		if c.strict {
			return 0, errors.New("output too large")
		}
		return len(p), nil
	}
	return c.buf.Write(p)
}

// Bytes returns the kept bytes.
func (c *cappedBuffer) Bytes() []byte { return c.buf.Bytes() }

// text returns the trimmed content, marking a truncation.
func (c *cappedBuffer) text() string {
	s := strings.TrimSpace(c.buf.String())
	if c.over {
		s += " …(truncated)"
	}
	return s
}

// jsonOrString returns data as JSON when it is valid JSON, else as a
// JSON string, so that any payload can be embedded in a JSON line.
func jsonOrString(data []byte) json.RawMessage {
	if len(bytes.TrimSpace(data)) == 0 {
		return json.RawMessage("null")
	}
	if json.Valid(data) {
		return json.RawMessage(data)
	}
	b, _ := jsonLine(string(data))
	return bytes.TrimSuffix(b, []byte("\n"))
}
