package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/peerbus/peerbus/eventlog"
)

// emitCLI runs "peerbus emit" on server and returns its parsed output.
func emitCLI(t *testing.T, server string, args ...string) emitResult {
	t.Helper()
	return emitted(t, runCLI(t, "", append([]string{"emit", "--server", server}, args...)...))
}

// replayJSON runs "peerbus replay --json" on server and returns the
// printed events.
func replayJSON(t *testing.T, server string, args ...string) []eventLine {
	t.Helper()
	r := runCLI(t, "", append([]string{"replay", "--json", "--server", server}, args...)...)
	if r.code != 0 {
		t.Fatalf("replay %v: exit %d, stderr %q", args, r.code, r.stderr)
	}
	return parseEventLines(t, r.stdout)
}

// parseEventLines parses JSON event lines.
func parseEventLines(t *testing.T, out string) []eventLine {
	t.Helper()
	var es []eventLine
	for l := range strings.Lines(out) {
		var e eventLine
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("event line %q: %v", l, err)
		}
		es = append(es, e)
	}
	return es
}

// ids returns the event ids of es.
func ids(es []eventLine) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

// ackIDs returns the event ids of acks.
func ackIDs(acks ...emitResult) []string {
	out := make([]string, len(acks))
	for i, a := range acks {
		out[i] = a.ID
	}
	return out
}

// logInfoJSON runs "peerbus log info --json" on server.
func logInfoJSON(t *testing.T, server string) eventlog.Info {
	t.Helper()
	r := runCLI(t, "", "log", "info", "--json", "--server", server)
	var li eventlog.Info
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &li) != nil {
		t.Fatalf("log info --json: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	return li
}

// readEvents reads n event lines from a watch process.
func readEvents(t *testing.T, w *proc, n int) []eventLine {
	t.Helper()
	var es []eventLine
	for len(es) < n {
		l, ok := w.nextLine(20 * time.Second)
		if !ok {
			t.Fatalf("%s printed %d events, want %d; stderr:\n%s", w.name, len(es), n, w.stderr.String())
		}
		es = append(es, parseEventLines(t, l)...)
	}
	return es
}

// TestLogEmitReplay checks emit's sequences and dedupe, replay from the
// start, from a sequence and from a time, with filters, and the counts
// of "log info".
func TestLogEmitReplay(t *testing.T) {
	n := startNodeProc(t, "node", "--listen", "127.0.0.1:-1", "--data-dir", t.TempDir())
	n.waitReady(t, 30*time.Second)
	s := n.info["client"]

	var acks []emitResult
	for i, args := range [][]string{
		{"rp.created", `{"n":1}`, "--group", "shop"},
		{"rp.created", `{"n":2}`},
		{"rp.paid", `{"n":3}`, "--group", "shop"},
		{"other.x", `{"n":4}`},
		{"rp.created", `{"n":5}`, "--group", "billing"},
	} {
		a := emitCLI(t, s, args...)
		if want := uint64(i + 1); a.Seq != want || a.Duplicate {
			t.Errorf("emit %v: seq %d duplicate %v, want seq %d", args, a.Seq, a.Duplicate, want)
		}
		acks = append(acks, a)
	}

	// Dedupe: a retried emit with the same id is stored once.
	d1 := emitCLI(t, s, "--id", "order-42", "rp.paid", `{"n":6}`)
	d2 := emitCLI(t, s, "--id", "order-42", "rp.paid", `{"n":6}`)
	if d1.ID != "order-42" || d1.Seq != 6 || d1.Duplicate {
		t.Errorf("first emit --id: %+v", d1)
	}
	if d2.ID != "order-42" || d2.Seq != d1.Seq || !d2.Duplicate || !d2.Time.Equal(d1.Time) {
		t.Errorf("retried emit --id: %+v, first %+v", d2, d1)
	}
	acks = append(acks, d1)
	// A transient event is not stored.
	tr := runCLI(t, "", "emit", "--transient", "rp.created", `{"n":7}`, "--server", s)
	if tr.code != 0 || !strings.Contains(tr.stdout, `"seq":0`) || !strings.Contains(tr.stdout, `"transient":true`) {
		t.Errorf("emit --transient: exit %d, %q %q", tr.code, tr.stdout, tr.stderr)
	}
	last := emitCLI(t, s, "rp.created", `{"n":8}`)
	if last.Seq != 7 {
		t.Errorf("emit after a transient event and a duplicate: seq %d, want 7", last.Seq)
	}
	acks = append(acks, last)

	all := replayJSON(t, s, ">")
	if got, want := ids(all), ackIDs(acks...); !slices.Equal(got, want) {
		t.Fatalf("replay '>' printed %v, want %v", got, want)
	}
	for i, e := range all {
		if e.Seq != uint64(i+1) || e.Peer == "" || !e.Time.Equal(acks[i].Time) {
			t.Errorf("replayed event %d: %+v, emitted %+v", i, e, acks[i])
		}
	}
	if all[0].Name != "rp.created" || all[0].Group != "shop" || string(all[0].Data) != `{"n":1}` {
		t.Errorf("first event %+v (data %s)", all[0], all[0].Data)
	}
	for _, tc := range []struct {
		args []string
		want []emitResult
	}{
		{[]string{"rp.>"}, []emitResult{acks[0], acks[1], acks[2], acks[4], acks[5], acks[6]}},
		{[]string{"rp.created", "--from-seq", "3"}, []emitResult{acks[4], acks[6]}},
		{[]string{">", "--from-seq", "5"}, acks[4:]},
		{[]string{">", "--since", acks[3].Time.Format(time.RFC3339Nano)}, acks[3:]},
		{[]string{">", "--since", "1h"}, acks},
		{[]string{"rp.*", "--group", "shop"}, []emitResult{acks[0], acks[2]}},
		{[]string{"rp.*", "--group", "shop", "--group", "billing"}, []emitResult{acks[0], acks[2], acks[4]}},
		{[]string{">", "--peer", all[1].Peer}, []emitResult{acks[1]}},
		{[]string{">", "--limit", "2"}, acks[:2]},
		{[]string{"nothing.here"}, nil},
	} {
		if got, want := ids(replayJSON(t, s, tc.args...)), ackIDs(tc.want...); !slices.Equal(got, want) {
			t.Errorf("replay %v printed %v, want %v", tc.args, got, want)
		}
	}

	// The table.
	r := runCLI(t, "", "replay", "rp.paid", "--server", s)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "SEQ") || !strings.HasPrefix(lines[1], "3 ") ||
		!strings.Contains(lines[1], "shop") || !strings.HasSuffix(lines[2], `{"n":6}`) {
		t.Errorf("replay table: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, "", "replay", "nothing.here", "--server", s)
	if r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "no events") {
		t.Errorf("empty replay: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}

	// watch --all / --from-seq print the stored events, then follow.
	w := startProc(t, "watch", testEnv(), peerbusBin(t), "watch", "rp.created", "--from-seq", "2", "--count", "4", "--server", s)
	got := readEvents(t, w, 3)
	if want := ackIDs(acks[1], acks[4], acks[6]); !slices.Equal(ids(got), want) {
		t.Errorf("watch --from-seq 2 printed %v, want %v", ids(got), want)
	}
	live := emitCLI(t, s, "rp.created", `{"n":9}`)
	if got := readEvents(t, w, 1); got[0].ID != live.ID || got[0].Seq != live.Seq {
		t.Errorf("watch --from-seq then printed %+v, want %+v", got[0], live)
	}
	if code, ok := w.wait(10 * time.Second); !ok || code != 0 {
		t.Errorf("watch --count 4: exited=%v code=%d", ok, code)
	}
	r = runCLI(t, "", "watch", ">", "--all", "--count", "2", "--server", s)
	if es := parseEventLines(t, r.stdout); r.code != 0 || !slices.Equal(ids(es), ackIDs(acks[:2]...)) {
		t.Errorf("watch --all --count 2: exit %d, %v; stderr %q", r.code, ids(es), r.stderr)
	}

	li := logInfoJSON(t, s)
	if li.Stream != eventlog.Stream || li.Events != 8 || li.FirstSeq != 1 || li.LastSeq != 8 || li.Storage != "file" ||
		li.Discard != "old" || li.MaxAge != eventlog.DefaultMaxAge || li.Duplicates != eventlog.DefaultDuplicates || li.Replicas != 1 {
		t.Errorf("log info: %+v", li)
	}
	r = runCLI(t, "", "log", "info", "--server", s)
	if r.code != 0 || !strings.Contains(r.stdout, "events:") || !strings.Contains(r.stdout, "8 (") ||
		!strings.Contains(r.stdout, "seq 8 at") || !strings.Contains(r.stdout, "max age 7d") {
		t.Errorf("log info: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestWatchDurableResume checks that a durable watch stopped with SIGINT
// and started again prints exactly the events it had not printed.
func TestWatchDurableResume(t *testing.T) {
	n := startNodeProc(t, "node", "--listen", "127.0.0.1:-1", "--data-dir", t.TempDir())
	n.waitReady(t, 30*time.Second)
	s := n.info["client"]
	watch := func(name string) *proc {
		w := startProc(t, name, testEnv(), peerbusBin(t), "watch", "dur.>", "--durable", "audit", "--server", s)
		w.waitStderr(t, `watching (durable "audit")`, 20*time.Second)
		return w
	}
	before := emitCLI(t, s, "dur.x", `0`) // before the durable exists: not printed

	w1 := watch("watch1")
	var first []emitResult
	for i := 1; i <= 3; i++ {
		first = append(first, emitCLI(t, s, "dur.x", strconv.Itoa(i)))
	}
	if got := readEvents(t, w1, 3); !slices.Equal(ids(got), ackIDs(first...)) {
		t.Fatalf("first watch printed %v, want %v (not %s)", ids(got), ackIDs(first...), before.ID)
	}
	w1.signal(os.Interrupt)
	if code, ok := w1.wait(10 * time.Second); !ok || code != 0 {
		t.Fatalf("watch after SIGINT: exited=%v code=%d; stderr:\n%s", ok, code, w1.stderr.String())
	}

	// While nobody watches.
	missed := []emitResult{emitCLI(t, s, "dur.x", "4"), emitCLI(t, s, "dur.y", "5")}
	emitCLI(t, s, "other.z", "6") // does not match
	r := runCLI(t, "", "log", "durables", "--json", "--server", s)
	var ds []eventlog.DurableInfo
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ds) != nil || len(ds) != 1 {
		t.Fatalf("log durables --json: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if d := ds[0]; d.Name != "audit" || d.Pattern != "dur.>" || d.Pending != 2 || d.AckFloor != first[2].Seq || d.AckPending != 0 {
		t.Errorf("durable while stopped: %+v", d)
	}

	// The second watch prints the two it missed, then new ones: a
	// marker emitted now comes right after them in log order, so
	// anything printed twice would show before it.
	w2 := watch("watch2")
	marker := emitCLI(t, s, "dur.marker")
	want := append(ackIDs(missed...), marker.ID)
	if got := readEvents(t, w2, 3); !slices.Equal(ids(got), want) {
		t.Errorf("resumed watch printed %v, want %v", ids(got), want)
	}
	w2.signal(os.Interrupt)
	if code, ok := w2.wait(10 * time.Second); !ok || code != 0 {
		t.Errorf("second watch after SIGINT: exited=%v code=%d", ok, code)
	}

	// --count on a durable: the events after the count stay unprinted
	// and are printed by the next watch.
	more := []emitResult{emitCLI(t, s, "dur.x", "7"), emitCLI(t, s, "dur.x", "8"), emitCLI(t, s, "dur.x", "9")}
	r = runCLI(t, "", "watch", "dur.>", "--durable", "audit", "--must-exist", "--count", "1", "--server", s)
	if es := parseEventLines(t, r.stdout); r.code != 0 || !slices.Equal(ids(es), ackIDs(more[0])) {
		t.Errorf("watch --durable --count 1: exit %d, %v; stderr %q", r.code, ids(es), r.stderr)
	}
	r = runCLI(t, "", "watch", "dur.>", "--durable", "audit", "--count", "2", "--server", s)
	if es := parseEventLines(t, r.stdout); r.code != 0 || !slices.Equal(ids(es), ackIDs(more[1:]...)) {
		t.Errorf("watch --durable --count 2: exit %d, %v; stderr %q", r.code, ids(es), r.stderr)
	}

	li := logInfoJSON(t, s)
	if len(li.Durables) != 1 || li.Durables[0].AckFloor != more[2].Seq || li.Durables[0].Pending != 0 {
		t.Errorf("log info durables: %+v", li.Durables)
	}
	r = runCLI(t, "", "log", "delete-durable", "audit", "--server", s)
	if r.code != 0 {
		t.Errorf("log delete-durable: exit %d, %q", r.code, r.stderr)
	}
	r = runCLI(t, "", "watch", "dur.>", "--durable", "audit", "--must-exist", "--server", s)
	if r.code != 1 || !strings.Contains(r.stderr, `unknown durable subscription: "audit"`) || !strings.Contains(r.stderr, "log durables") {
		t.Errorf("watch --must-exist of a deleted durable: exit %d, %q", r.code, r.stderr)
	}
	r = runCLI(t, "", "log", "delete-durable", "audit", "--server", s)
	if r.code != 1 || !strings.Contains(r.stderr, "unknown durable") {
		t.Errorf("log delete-durable of a deleted durable: exit %d, %q", r.code, r.stderr)
	}
}

// TestLogErrors checks the messages of a full log, a node without
// JetStream and bad flags.
func TestLogErrors(t *testing.T) {
	n := startNodeProc(t, "full", "--listen", "127.0.0.1:-1", "--data-dir", t.TempDir(),
		"--log-max-events", "2", "--log-discard", "new")
	n.waitReady(t, 30*time.Second)
	s := n.info["client"]
	emitCLI(t, s, "a.b")
	emitCLI(t, s, "a.b")
	r := runCLI(t, "", "emit", "a.b", "--server", s)
	if r.code != 1 || !strings.Contains(r.stderr, "event log full") || !strings.Contains(r.stderr, "--log-max-events") || r.stdout != "" {
		t.Errorf("emit to a full log: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if li := logInfoJSON(t, s); li.Events != 2 || li.MaxEvents != 2 || li.Discard != "new" {
		t.Errorf("full log: %+v", li)
	}
	// Options the peer refuses.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"watch", ">", "--durable", "a.b"}, "durable name"},
		{[]string{"emit", "--id", "has space", "a.b"}, "event id"},
	} {
		r := runCLI(t, "", append(tc.args, "--server", s)...)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("peerbus %v: exit %d, stderr %q; want exit 1 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}

	nj := startNodeProc(t, "nojs", "--listen", "127.0.0.1:-1", "--no-jetstream")
	nj.waitReady(t, 30*time.Second)
	s = nj.info["client"]
	start := time.Now()
	r = runCLI(t, "", "emit", "a.b", "--server", s)
	if r.code != 1 || !strings.Contains(r.stderr, "event log unavailable") || !strings.Contains(r.stderr, "--transient") {
		t.Errorf("emit without JetStream: exit %d, %q", r.code, r.stderr)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("emit without JetStream took %v to fail", d)
	}
	if r := runCLI(t, "", "emit", "--transient", "a.b", "--server", s); r.code != 0 || !strings.Contains(r.stdout, `"seq":0`) {
		t.Errorf("emit --transient without JetStream: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	for _, args := range [][]string{
		{"replay", ">"},
		{"watch", ">", "--all"},
		{"watch", ">", "--durable", "d"},
		{"log", "info"},
	} {
		r := runCLI(t, "", append(args, "--server", s)...)
		if r.code != 1 || !strings.Contains(r.stderr, "JetStream") || r.stdout != "" {
			t.Errorf("%v without JetStream: exit %d, %q %q", args, r.code, r.stdout, r.stderr)
		}
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"watch", ">", "--all", "--since", "1m"}, "only one of --all, --from-seq and --since"},
		{[]string{"watch", ">", "--max-deliver", "3"}, "--max-deliver needs --durable"},
		{[]string{"watch", ">", "--must-exist"}, "--must-exist needs --durable"},
		{[]string{"watch", ">", "--since", "yesterday"}, `--since "yesterday"`},
		{[]string{"replay", ">", "--from-seq", "1", "--since", "1m"}, "only one of"},
		{[]string{"replay", "a..b"}, "empty token"},
		{[]string{"node", "--log-max-age", "forever"}, "--log-max-age"},
		{[]string{"node", "--log-discard", "sometimes"}, "want old or new"},
		{[]string{"node", "--log-max-events", "-5"}, "--log-max-events"},
		{[]string{"node", "--no-jetstream", "--log-max-age", "1h"}, "--no-jetstream"},
	} {
		args := append(tc.args, "--server", "127.0.0.1:1")
		if tc.args[0] == "node" {
			args = append(tc.args, "--listen", "127.0.0.1:-1", "--data-dir", t.TempDir())
		}
		r := runCLI(t, "", args...)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("peerbus %v: exit %d, stderr %q; want exit 1 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
}

// TestNodeLogSettings checks that a node applies the log settings it
// was given (flags or environment), keeps the others, and leaves the log
// alone without any.
func TestNodeLogSettings(t *testing.T) {
	port := strconv.Itoa(freePorts(t, 1)[0])
	dir := t.TempDir()
	s := "nats://127.0.0.1:" + port
	run := func(env []string, args ...string) *nodeProc {
		t.Helper()
		args = append([]string{"node", "--log-level", "warn", "--name", "ls", "--listen", "127.0.0.1:" + port, "--data-dir", dir}, args...)
		n := &nodeProc{proc: startProc(t, "node", testEnv(env...), peerbusBin(t), args...), info: map[string]string{}}
		n.waitReady(t, 30*time.Second)
		return n
	}
	stop := func(n *nodeProc) {
		t.Helper()
		n.signal(os.Interrupt)
		if code, ok := n.wait(20 * time.Second); !ok || code != 0 {
			t.Fatalf("node after SIGINT: exited=%v code=%d", ok, code)
		}
	}

	n := run(nil, "--log-max-age", "1h", "--log-max-bytes", "64M", "--log-discard", "new", "--log-dedupe-window", "30s")
	li := logInfoJSON(t, s)
	if li.MaxAge != time.Hour || li.MaxBytes != 64<<20 || li.MaxEvents != -1 || li.Discard != "new" || li.Duplicates != 30*time.Second || li.Storage != "file" {
		t.Errorf("first start: %+v", li)
	}
	for range 3 {
		emitCLI(t, s, "ls.x")
	}
	stop(n)

	// The environment, and only what is given changes.
	n = run([]string{envLogMaxEvents + "=10", envLogMaxAge + "=2d"})
	li = logInfoJSON(t, s)
	if li.MaxAge != 48*time.Hour || li.MaxBytes != 64<<20 || li.MaxEvents != 10 || li.Discard != "new" || li.Duplicates != 30*time.Second || li.Events != 3 {
		t.Errorf("second start (env): %+v", li)
	}
	stop(n)

	// A flag wins over the environment; "none" lifts a limit.
	n = run([]string{envLogMaxEvents + "=10"}, "--log-max-events", "none", "--log-max-bytes", "none")
	li = logInfoJSON(t, s)
	if li.MaxEvents != -1 || li.MaxBytes != -1 || li.MaxAge != 48*time.Hour {
		t.Errorf("third start (flag over env, none): %+v", li)
	}
	stop(n)

	// Without settings the log stays as it is.
	n = run(nil)
	if li2 := logInfoJSON(t, s); li2.MaxAge != li.MaxAge || li2.MaxEvents != li.MaxEvents || li2.Discard != "new" || li2.Events != 3 {
		t.Errorf("start without settings changed the log: %+v", li2)
	}
	stop(n)

	// The storage of an existing log cannot change.
	p := startProc(t, "memnode", testEnv(), peerbusBin(t), "node", "--log-level", "warn", "--name", "ls",
		"--listen", "127.0.0.1:"+port, "--data-dir", dir, "--log-memory")
	if code, ok := p.wait(30 * time.Second); !ok || code != 1 || !strings.Contains(p.stderr.String(), "exists with file storage") {
		t.Errorf("--log-memory on a file log: exited=%v code=%d; stderr:\n%s", ok, code, p.stderr.String())
	}

	// A new log in memory.
	n = startNodeProc(t, "memory", "--listen", "127.0.0.1:-1", "--data-dir", filepath.Join(dir, "mem"), "--log-memory")
	n.waitReady(t, 30*time.Second)
	if li := logInfoJSON(t, n.info["client"]); li.Storage != "memory" || li.MaxAge != eventlog.DefaultMaxAge {
		t.Errorf("--log-memory: %+v", li)
	}
}

func TestNodeLogSettingsParse(t *testing.T) {
	parse := func(env map[string]string, args ...string) (logSettings, error) {
		cmd, f := newNodeCmd()
		if err := cmd.Flags().Parse(args); err != nil {
			t.Fatal(err)
		}
		return nodeLogSettings(cmd.Flags(), &f.log, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	}
	s, err := parse(nil)
	if err != nil || s.given() {
		t.Errorf("no settings: %+v, %v", s, err)
	}
	s, err = parse(map[string]string{envLogMaxAge: "30d", envLogMaxBytes: "2G", envLogMemory: "true", envLogDiscard: "NEW"},
		"--log-max-bytes", "512K", "--log-max-events", "1000", "--log-dedupe-window", "1m")
	if err != nil {
		t.Fatal(err)
	}
	c := s.Apply(eventlog.Config{MaxAge: 5, MaxBytes: 6, MaxEvents: 7, Duplicates: 8, MaxEventSize: 9})
	want := eventlog.Config{MaxAge: 30 * 24 * time.Hour, MaxBytes: 512 << 10, MaxEvents: 1000, Duplicates: time.Minute,
		MaxEventSize: 9, Memory: true, DiscardNew: true}
	if c != want {
		t.Errorf("apply = %+v, want %+v", c, want)
	}
	s, err = parse(map[string]string{envLogMemory: "true"}, "--log-memory=false", "--log-max-age", "none")
	if err != nil || s.Memory == nil || *s.Memory || s.MaxAge == nil || *s.MaxAge != -1 {
		t.Errorf("flag over env: %+v, %v", s, err)
	}
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{envLogMemory: "perhaps"}, nil, envLogMemory},
		{map[string]string{envLogMaxBytes: "lots"}, nil, envLogMaxBytes},
		{nil, []string{"--log-dedupe-window", "0s"}, "--log-dedupe-window"},
		{nil, []string{"--log-max-age", "-2h"}, "--log-max-age"},
	} {
		if _, err := parse(tc.env, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: err %v, want %q", tc.env, tc.args, err, tc.want)
		}
	}

}

func TestParseSinceAndSizes(t *testing.T) {
	now := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"10m":                  now.Add(-10 * time.Minute),
		"1d":                   now.Add(-24 * time.Hour),
		"0s":                   now,
		"2026-01-02T03:04:05Z": time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	} {
		if got, err := parseSince(in, now); err != nil || !got.Equal(want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-5m", "soon"} {
		if _, err := parseSince(in, now); err == nil {
			t.Errorf("parseSince(%q): no error", in)
		}
	}
	for in, want := range map[string]int64{"1024": 1024, "8M": 8 << 20, "2GiB": 2 << 30, "1t": 1 << 40, "none": -1, "0": -1} {
		if got, err := parseLimitSize(in); err != nil || got != want {
			t.Errorf("parseLimitSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 1 << 30: "1.0 GiB"} {
		if got := formatBytes(in); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestLogCommandsHelp(t *testing.T) {
	for _, c := range [][]string{{"replay"}, {"log"}, {"log", "info"}, {"log", "durables"}, {"log", "delete-durable"}} {
		r := runCLI(t, "", append(c, "--help")...)
		if r.code != 0 || !strings.Contains(r.stdout, "Examples:") || !strings.Contains(r.stdout, "peerbus "+strings.Join(c, " ")) {
			t.Errorf("peerbus %v --help: exit %d\n%s", c, r.code, r.stdout)
		}
	}
}
