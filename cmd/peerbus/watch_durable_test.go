package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestWatchDurableOutputFails checks that a durable watch whose output
// fails (stdout is /dev/full) hands its event back: after two such
// watches with --max-deliver 2, a later watch still prints the event.
func TestWatchDurableOutputFails(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	n := startNodeProc(t, "node", "--listen", "127.0.0.1:-1", "--data-dir", t.TempDir())
	n.waitReady(t, 30*time.Second)
	s := n.info["client"]
	ack := emitted(t, runCLI(t, "", "emit", "job.full", `1`, "--server", s))
	for i := 0; i < 2; i++ {
		full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cmd := exec.CommandContext(ctx, peerbusBin(t), "watch", "--durable", "d", "--all", "--max-deliver", "2", "job.>", "--server", s)
		cmd.Env = testEnv()
		var errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = full, &errb
		err = cmd.Run()
		timedOut := ctx.Err() != nil
		cancel()
		full.Close()
		if err == nil || timedOut || !strings.Contains(errb.String(), "write event") {
			t.Fatalf("watch %d into /dev/full: %v; stderr:\n%s", i+1, err, errb.String())
		}
	}
	r := runCLI(t, "", "watch", "--durable", "d", "--count", "1", "job.>", "--server", s)
	var got eventLine
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &got) != nil || got.ID != ack.ID {
		t.Fatalf("the later watch: exit %d, stdout %q (want event %s), stderr:\n%s", r.code, r.stdout, ack.ID, r.stderr)
	}
	r = runCLI(t, "", "replay", "_dead.>", "--server", s)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "" {
		t.Fatalf("dead letters for an unprinted event: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}
