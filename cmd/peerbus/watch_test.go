package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/peerbus/peerbus/eventlog"
)

// emitted parses the output of "peerbus emit".
func emitted(t *testing.T, r result) emitResult {
	t.Helper()
	var ack emitResult
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ack) != nil || ack.ID == "" || ack.Time.IsZero() {
		t.Fatalf("emit: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, `"seq":`) {
		t.Errorf("emit output %q lacks seq", r.stdout)
	}
	return ack
}

// testWatchEmit watches on server watchOn and emits on emitOn.
func testWatchEmit(t *testing.T, watchOn, emitOn string) {
	w := startProc(t, "watch", testEnv(), peerbusBin(t), "watch", "demo.>", "--server", watchOn)
	w.waitStderr(t, "watching", 10*time.Second)

	// Interest crosses the route asynchronously: emit until the watcher
	// prints the event.
	var got eventLine
	var ack emitResult
	deadline := time.Now().Add(20 * time.Second)
	for found := false; !found; {
		if time.Now().After(deadline) {
			t.Fatal("the watcher never printed an emitted event")
		}
		ack = emitted(t, runCLI(t, "", "emit", "demo.hello", `{"a":1}`, "--group", "gx", "--server", emitOn))
		wait := time.After(500 * time.Millisecond)
	read:
		for {
			select {
			case l, ok := <-w.lines:
				if !ok {
					t.Fatalf("watch exited; stderr:\n%s", w.stderr.String())
				}
				if err := json.Unmarshal([]byte(l), &got); err != nil {
					t.Fatalf("watch printed %q: %v", l, err)
				}
				if got.ID == ack.ID {
					found = true
					break read
				}
			case <-wait:
				break read
			}
		}
	}
	if got.Name != "demo.hello" || got.Group != "gx" || got.Peer == "" || string(got.Data) != `{"a":1}` ||
		!got.Time.Equal(ack.Time) {
		t.Errorf("watched event %+v (data %s), emitted %+v", got, got.Data, ack)
	}

	// Events that do not match are not printed: "other.x" is emitted
	// before "demo.after" on the same connection, so it would arrive first.
	emitted(t, runCLI(t, "", "emit", "other.x", "--server", emitOn))
	after := emitted(t, runCLI(t, "", "emit", "demo.after", `"text"`, "--server", emitOn))
	for {
		l, ok := w.nextLine(10 * time.Second)
		if !ok {
			t.Fatal("demo.after not printed")
		}
		var e eventLine
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("watch printed %q: %v", l, err)
		}
		if e.Name == "other.x" {
			t.Errorf("watch 'demo.>' printed %q", l)
		}
		if e.ID == after.ID {
			if string(e.Data) != `"text"` || e.Group != "" {
				t.Errorf("demo.after printed as %q", l)
			}
			break
		}
	}

	w.signal(os.Interrupt)
	if code, ok := w.wait(10 * time.Second); !ok || code != 0 {
		t.Errorf("watch after SIGINT: exited=%v code=%d; stderr:\n%s", ok, code, w.stderr.String())
	}
}

func TestFormatEvent(t *testing.T) {
	tm := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, tc := range []struct {
		data []byte
		want string
	}{
		{[]byte(`{"a":1}`), `{"a":1}`},
		{nil, `null`},
		{[]byte("not json <&>"), `"not json <&>"`},
	} {
		b, err := formatEvent(eventlog.Event{ID: "i", Name: "n.x", Peer: "p", Time: tm, Seq: 7, Data: tc.data})
		if err != nil {
			t.Fatal(err)
		}
		want := `{"id":"i","name":"n.x","peer":"p","group":"","time":"2026-01-02T03:04:05.000000006Z","seq":7,"data":` + tc.want + "}\n"
		if string(b) != want {
			t.Errorf("formatEvent = %s, want %s", b, want)
		}
	}
	var buf bytes.Buffer
	ew := newEventWriter(&buf)
	if err := ew.Write(eventlog.Event{ID: "a", Data: []byte("1")}); err != nil || strings.Count(buf.String(), "\n") != 1 {
		t.Errorf("eventWriter wrote %q, %v", buf.String(), err)
	}
}

// TestWatchCount checks --count on a single node: watch exits by itself
// after the events it waited for.
func TestWatchCount(t *testing.T) {
	n := startNodeProc(t, "node", "--listen", "127.0.0.1:-1", "--data-dir", t.TempDir())
	n.waitReady(t, 30*time.Second)
	s := n.info["client"]
	w := startProc(t, "watch", testEnv(), peerbusBin(t), "watch", "job.*", "--count", "2", "--group", "ops", "--server", s)
	w.waitStderr(t, "watching", 10*time.Second)
	// One node: the subscription is in place once watch says so.
	emitted(t, runCLI(t, "", "emit", "job.done", `1`, "--group", "dev", "--server", s))
	emitted(t, runCLI(t, "", "emit", "job.done", `2`, "--group", "ops", "--server", s))
	emitted(t, runCLI(t, "", "emit", "job.done", `3`, "--group", "ops", "--server", s))
	emitted(t, runCLI(t, "", "emit", "job.done", `4`, "--group", "ops", "--server", s))
	code, ok := w.wait(10 * time.Second)
	if !ok || code != 0 {
		t.Fatalf("watch --count 2: exited=%v code=%d; stderr:\n%s", ok, code, w.stderr.String())
	}
	var data []string
	for l := range w.lines {
		var e eventLine
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		data = append(data, string(e.Data))
	}
	if strings.Join(data, ",") != "2,3" {
		t.Errorf("watch --group ops --count 2 printed data %v, want 2,3", data)
	}
}

// TestExampleEvents runs examples/events in listen and emit mode against
// a running node.
func TestExampleEvents(t *testing.T) {
	bin := buildBinary(t, "../../examples/events", "events")
	n := startNodeProc(t, "node", "--listen", "127.0.0.1:-1", "--data-dir", t.TempDir())
	n.waitReady(t, 30*time.Second)
	// The listener joins the node on its address, as beside the Quick
	// start's node; the emitter is given the node's URL.
	l := startProc(t, "listen", testEnv("PEERBUS_LISTEN="+strings.TrimPrefix(n.info["client"], "nats://")),
		bin, "-mode", "listen", "-count", "3")
	env := testEnv("PEERBUS_NATS_URL=" + n.info["client"])
	l.waitStderr(t, "listening for demo.>", 10*time.Second)
	e := startProc(t, "emit", env, bin, "-mode", "emit", "-count", "3", "-interval", "10ms")
	if code, ok := e.wait(20 * time.Second); !ok || code != 0 {
		t.Fatalf("emit: exited=%v code=%d; stderr:\n%s", ok, code, e.stderr.String())
	}
	if code, ok := l.wait(20 * time.Second); !ok || code != 0 {
		t.Fatalf("listen: exited=%v code=%d; stderr:\n%s", ok, code, l.stderr.String())
	}
	var got []string
	for line := range l.lines {
		got = append(got, line)
	}
	if len(got) != 3 || !strings.HasPrefix(got[0], "demo.tick from ") || !strings.HasSuffix(got[2], `n=3 text="hello"`) {
		t.Errorf("listener printed %q", got)
	}
}
