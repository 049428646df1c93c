package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/peer"
)

// crashEmitter emits events asynchronously with ids crash-<n> from a
// peer on its own connection, and records which the log acknowledged.
type crashEmitter struct {
	p  *eventlog.Log
	nc *nats.Conn

	mu      sync.Mutex
	sent    []string          // ids handed to EmitAsync, in order
	acked   map[string]uint64 // id -> seq of acknowledged events
	order   []string          // acknowledged ids in emit order
	settled int               // futures that returned (ack or error)
	ackedCh chan struct{}     // signalled on every ack
	err     error             // why emitting stopped
}

func newCrashEmitter(t *testing.T, server string) *crashEmitter {
	t.Helper()
	nc, err := nats.Connect(server, nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	p, err := peer.New(nc, peer.AsClient(), peer.WithCallTimeout(5*time.Second))
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(); nc.Close() })
	lg, err := eventlog.New(p)
	if err != nil {
		t.Fatal(err)
	}
	return &crashEmitter{p: lg, nc: nc, acked: map[string]uint64{}, ackedCh: make(chan struct{}, 1)}
}

func crashID(i int) string { return fmt.Sprintf("crash-%05d", i) }

// run emits crash-<from>… until an emit fails or ctx ends, with at most
// window events waiting for their ack; it returns when every future
// returned or waitCtx ended.
func (c *crashEmitter) run(ctx, waitCtx context.Context, from, window int) {
	futures := make(chan *eventlog.EmitFuture, window)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for f := range futures {
			ack, err := f.Wait(waitCtx)
			c.mu.Lock()
			c.settled++
			if err == nil {
				c.acked[ack.ID] = ack.Seq
				c.order = append(c.order, ack.ID)
			}
			c.mu.Unlock()
			if err == nil {
				select {
				case c.ackedCh <- struct{}{}:
				default:
				}
			}
		}
	}()
	for i := from; ctx.Err() == nil; i++ {
		id := crashID(i)
		f, err := c.p.EmitAsync(ctx, "crash.ev", map[string]int{"n": i}, eventlog.WithEventID(id))
		c.mu.Lock()
		if err != nil {
			c.err = err
			c.mu.Unlock()
			break
		}
		c.sent = append(c.sent, id)
		c.mu.Unlock()
		futures <- f // blocks while window events wait for their ack
	}
	close(futures)
	wg.Wait()
}

// state returns a copy of what the emitter recorded.
func (c *crashEmitter) state() (sent []string, acked map[string]uint64, order []string, settled int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	acked = make(map[string]uint64, len(c.acked))
	for k, v := range c.acked {
		acked[k] = v
	}
	return slices.Clone(c.sent), acked, slices.Clone(c.order), c.settled
}

// TestCrashSafety kills a node with SIGKILL while acknowledged events
// stream into its log, restarts it on the same data directory, name and
// ports, and checks with "peerbus replay" that every acknowledged event
// is there at its sequence, in order, and none twice, also after the
// events whose outcome was unknown are emitted again with their ids.
func TestCrashSafety(t *testing.T) {
	const minAckedBeforeKill, total = 150, 250
	port := strconv.Itoa(freePorts(t, 1)[0])
	dir := t.TempDir()
	args := []string{"--name", "crash", "--listen", "127.0.0.1:" + port, "--data-dir", dir}
	n := startNodeProc(t, "node1", args...)
	n.waitReady(t, 30*time.Second)
	s := n.info["client"]

	em := newCrashEmitter(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	waitCtx, cancelWait := context.WithCancel(context.Background())
	defer cancelWait()
	emitting := make(chan struct{})
	go func() {
		defer close(emitting)
		em.run(ctx, waitCtx, 0, 64)
	}()
	// Kill the node once enough events were acknowledged, while the
	// emitter is still sending.
	deadline := time.After(60 * time.Second)
	for {
		_, acked, _, _ := em.state()
		if len(acked) >= minAckedBeforeKill {
			break
		}
		select {
		case <-em.ackedCh:
		case <-emitting:
			t.Fatalf("emitting stopped before the kill: %v", em.err)
		case <-deadline:
			t.Fatalf("only %d events acknowledged in 60s", len(acked))
		}
	}
	if err := n.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	sentAtKill, ackedAtKill, _, settledAtKill := em.state()
	if _, ok := n.wait(10 * time.Second); !ok {
		t.Fatal("the killed node did not exit")
	}
	// The connection closes with the node; acks received before are in.
	waitFor(t, "the emitter's connection to close", 10*time.Second, em.nc.IsClosed)
	cancelWait()
	select {
	case <-emitting:
	case <-time.After(20 * time.Second):
		t.Fatal("the emitter did not stop after the node was killed")
	}
	cancel()
	sent, acked, order, _ := em.state()
	if em.err == nil {
		t.Errorf("the emitter stopped without an error")
	}
	t.Logf("at the kill: %d sent, %d acknowledged, %d in flight; in the end %d sent, %d acknowledged",
		len(sentAtKill), len(ackedAtKill), len(sentAtKill)-settledAtKill, len(sent), len(acked))
	if len(sent) == len(acked) {
		t.Errorf("every sent event was acknowledged: none was in flight when the node died")
	}

	// Restart on the same data directory, name and ports.
	n2 := startNodeProc(t, "node2", args...)
	n2.waitReady(t, 60*time.Second)
	if n2.info["client"] != s {
		t.Fatalf("restarted node on %q, want %q", n2.info["client"], s)
	}

	check := func(stage string, want map[string]uint64, all int) map[string]uint64 {
		t.Helper()
		got := replayJSON(t, s, "crash.>")
		seen := map[string]uint64{}
		var prev uint64
		for _, e := range got {
			if _, dup := seen[e.ID]; dup {
				t.Errorf("%s: event %s stored twice (seq %d and %d)", stage, e.ID, seen[e.ID], e.Seq)
			}
			if e.Seq <= prev {
				t.Errorf("%s: seq %d after %d", stage, e.Seq, prev)
			}
			seen[e.ID], prev = e.Seq, e.Seq
		}
		for id, seq := range want {
			if got, ok := seen[id]; !ok {
				t.Errorf("%s: acknowledged event %s (seq %d) missing", stage, id, seq)
			} else if got != seq {
				t.Errorf("%s: acknowledged event %s at seq %d, acknowledged with %d", stage, id, got, seq)
			}
		}
		if all >= 0 && len(got) != all {
			t.Errorf("%s: %d events in the log, want %d", stage, len(got), all)
		}
		return seen
	}
	stored := check("after the restart", acked, -1)
	// Acknowledged events were stored in the order they were emitted.
	for i := 1; i < len(order); i++ {
		if acked[order[i]] <= acked[order[i-1]] {
			t.Errorf("acknowledged %s at seq %d after %s at seq %d", order[i], acked[order[i]], order[i-1], acked[order[i-1]])
		}
	}
	unknown := 0
	for _, id := range sent {
		if _, ok := acked[id]; !ok {
			unknown++
		}
	}
	t.Logf("after the restart: %d of %d sent events stored (%d acknowledged, %d unknown)", len(stored), len(sent), len(acked), unknown)

	// Emit the events of unknown outcome again with the same ids, then
	// more up to total: each id must end up stored once.
	em2 := newCrashEmitter(t, s)
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	for _, id := range sent {
		if _, ok := acked[id]; ok {
			continue
		}
		ack, err := em2.p.Emit(rctx, "crash.ev", map[string]string{"retry": id}, eventlog.WithEventID(id))
		if err != nil {
			t.Fatalf("emit %s again: %v", id, err)
		}
		if seq, ok := stored[id]; ok && (!ack.Duplicate || ack.Seq != seq) {
			t.Errorf("emit again of %s, stored at seq %d before the kill: %+v", id, seq, ack)
		} else if !ok && ack.Duplicate {
			t.Errorf("emit again of %s, not stored before the kill: %+v", id, ack)
		}
		acked[id] = ack.Seq
	}
	for i := len(sent); i < total; i++ {
		ack, err := em2.p.Emit(rctx, "crash.ev", map[string]int{"n": i}, eventlog.WithEventID(crashID(i)))
		if err != nil {
			t.Fatalf("emit after the restart: %v", err)
		}
		acked[ack.ID] = ack.Seq
	}
	check("after the retries", acked, max(total, len(sent)))
}
