//go:build chaos && linux

package main

// The chaos test: a 3-node cluster of peerbus node processes, each in a
// network namespace of its own, under a seeded schedule of faults (kill
// -9 and restart, a partition by iptables, SIGSTOP of the log's leader)
// while emitters, durable consumers and a caller of "any" run. Run it
// with
//
//	go test -tags chaos -count=1 -run TestChaos -v ./cmd/peerbus/
//
// PEERBUS_CHAOS_SEED replays a schedule; PEERBUS_CHAOS_DURATION sets
// the time of the faults (default 60s).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/internal/netlab"
	"github.com/peerbus/peerbus/peer"
)

const (
	chaosEmitters  = 4
	chaosCallTag   = "chaos.echo"
	chaosAckWait   = 5 * time.Second
	chaosCallLimit = 2 * time.Second
	chaosEmitEvery = 20 * time.Millisecond
	// chaosSettle is how long after a fault ends the calls made are not
	// counted: presence needs that long to notice a peer that is gone.
	chaosSettle = 4 * time.Second
)

// chaosNode is one node process of the cluster and its namespace.
type chaosNode struct {
	name string
	host *netlab.Host
	args []string
	proc *nodeProc
}

// chaosCluster is the lab: three nodes and a client namespace from which
// the test's connections dial.
type chaosCluster struct {
	t      *testing.T
	nodes  []*chaosNode
	client *netlab.Host
	urls   []string
}

// nsDialer dials from inside a namespace (the socket stays in it).
type nsDialer struct{ ns *netlab.Namespace }

func (d nsDialer) Dial(network, address string) (net.Conn, error) {
	var c net.Conn
	err := d.ns.Do(func() error {
		var err error
		c, err = net.DialTimeout(network, address, 2*time.Second)
		return err
	})
	return c, err
}

func iptables() string {
	if b := os.Getenv("NETLAB_IPTABLES"); b != "" {
		return b
	}
	return "iptables"
}

func (c *chaosCluster) start(i int) {
	n := c.nodes[i]
	n.proc = startNodeIn(c.t, n.host.Namespace, n.name, n.args...)
	n.proc.waitReady(c.t, 60*time.Second)
}

// connect opens a connection from the client namespace to the nodes of
// urls (all of them when none are given).
func (c *chaosCluster) connect(name string, urls ...string) *nats.Conn {
	c.t.Helper()
	if len(urls) == 0 {
		urls = c.urls
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.SetCustomDialer(nsDialer{c.client.Namespace}),
		nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(200*time.Millisecond),
		nats.Timeout(2*time.Second), nats.NoCallbacksAfterClientClose())
	if err != nil {
		c.t.Fatalf("connect %s: %v", name, err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

// newPeer starts a peer (and its log) on a new connection.
func (c *chaosCluster) newPeer(name string, onErr func(error), urls ...string) (*peer.Peer, *eventlog.Log) {
	c.t.Helper()
	nc := c.connect(name, urls...)
	opts := []peer.Option{peer.WithName(name), peer.WithPresence(250*time.Millisecond, 1500*time.Millisecond),
		peer.WithCallTimeout(8 * time.Second)}
	if onErr != nil {
		opts = append(opts, peer.WithErrorHandler(onErr))
	}
	p, err := peer.New(nc, opts...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { p.Close() })
	lg, err := eventlog.New(p)
	if err != nil {
		c.t.Fatal(err)
	}
	return p, lg
}

// logState returns the log stream's cluster state as the nodes report it.
func logState(ctx context.Context, js jetstream.JetStream) (*jetstream.ClusterInfo, *jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, eventlog.Stream)
	if err != nil {
		return nil, nil, err
	}
	si := s.CachedInfo()
	if si.Cluster == nil {
		return nil, nil, errors.New("no cluster info")
	}
	return si.Cluster, si, nil
}

// healthy reports whether the log has a leader and two current replicas.
func healthy(ctx context.Context, js jetstream.JetStream) bool {
	ci, _, err := logState(ctx, js)
	if err != nil || ci.Leader == "" || len(ci.Replicas) != 2 {
		return false
	}
	for _, r := range ci.Replicas {
		if !r.Current || r.Offline {
			return false
		}
	}
	return true
}

// awaitCond polls cond every 100 ms until it holds or timeout passes.
func awaitCond(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

type chaosEvent struct {
	K int `json:"k"`
	I int `json:"i"`
}

// window is a time span of a fault (until it is healed).
type window struct{ from, to time.Time }

type callRec struct {
	from, to time.Time
	ok       bool
}

func TestChaos(t *testing.T) {
	netlab.Require(t, iptables())
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("PEERBUS_CHAOS_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("PEERBUS_CHAOS_SEED=%q: %v", v, err)
		}
		seed = s
	}
	faultTime := 60 * time.Second
	if v := os.Getenv("PEERBUS_CHAOS_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("PEERBUS_CHAOS_DURATION=%q: %v", v, err)
		}
		faultTime = d
	}
	t.Logf("chaos seed %d (PEERBUS_CHAOS_SEED=%d replays this schedule)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	ctx := context.Background()

	// The lab and the cluster.
	lab := netlab.New(t)
	c := &chaosCluster{t: t, client: lab.AddPublicHost("client", 1)}
	var routes []string
	for i := range 3 {
		h := lab.AddPublicHost(fmt.Sprintf("n%d", i), 1)
		c.nodes = append(c.nodes, &chaosNode{name: fmt.Sprintf("c%d", i), host: h})
		routes = append(routes, fmt.Sprintf("nats-route://%s:6222", h.Addr()))
		c.urls = append(c.urls, fmt.Sprintf("nats://%s:4222", h.Addr()))
	}
	for _, n := range c.nodes {
		a := n.host.Addr().String()
		n.args = []string{"--name", n.name, "--listen", a + ":4222", "--cluster", a + ":6222",
			"--routes", strings.Join(routes, ","), "--data-dir", t.TempDir()}
	}
	// Started together: a node with routes waits for a quorum of them.
	for _, n := range c.nodes {
		n.proc = startNodeIn(t, n.host.Namespace, n.name, n.args...)
	}
	for _, n := range c.nodes {
		n.proc.waitReady(t, 60*time.Second)
	}
	_, admin := c.newPeer("admin", nil)
	if _, err := admin.Emit(ctx, "setup.init", 0); err != nil {
		t.Fatal(err)
	}
	mon := c.connect("monitor")
	js, err := jetstream.New(mon)
	if err != nil {
		t.Fatal(err)
	}
	if !awaitCond(60*time.Second, func() bool { return healthy(ctx, js) }) {
		ci, _, err := logState(ctx, js)
		t.Fatalf("the log never had 3 current replicas: %+v %v", ci, err)
	}

	// Two durable consumers.
	ackFailRE := regexp.MustCompile(`durable (\S+): ack of event seq (\d+) failed`)
	type durable struct {
		name     string
		mu       sync.Mutex
		seen     map[uint64]int // deliveries by seq
		nums     map[uint64][]int
		ackFails map[uint64]int
	}
	durables := []*durable{{name: "chaos-d1"}, {name: "chaos-d2"}}
	for i, d := range durables {
		d.seen, d.ackFails, d.nums = map[uint64]int{}, map[uint64]int{}, map[uint64][]int{}
		onErr := func(err error) {
			if m := ackFailRE.FindStringSubmatch(err.Error()); m != nil && m[1] == d.name {
				seq, _ := strconv.ParseUint(m[2], 10, 64)
				d.mu.Lock()
				d.ackFails[seq]++
				d.mu.Unlock()
			}
		}
		_, lg := c.newPeer(d.name, onErr, slices.Concat(c.urls[i+1:], c.urls[:i+1])...)
		if _, err := lg.SubscribeDurable(d.name, "chaos.>", func(_ context.Context, e eventlog.Event) error {
			d.mu.Lock()
			d.seen[e.Seq]++
			d.nums[e.Seq] = append(d.nums[e.Seq], e.Deliveries)
			d.mu.Unlock()
			return nil
		}, eventlog.FromStart(), eventlog.AckWait(chaosAckWait), eventlog.MaxDeliver(-1)); err != nil {
			t.Fatal(err)
		}
	}

	// A server peer of the call tag on every node, and a caller.
	var servers []string
	for i := range c.nodes {
		p, _ := c.newPeer(fmt.Sprintf("echo%d", i), nil, c.urls[i])
		if err := peer.RegisterRaw(p, chaosCallTag, func(_ context.Context, b []byte) ([]byte, error) { return b, nil }); err != nil {
			t.Fatal(err)
		}
		servers = append(servers, p.ID())
	}
	caller, _ := c.newPeer("caller", nil)
	if !awaitCond(30*time.Second, func() bool {
		infos, _ := caller.Peers(ctx, peer.WithTag(chaosCallTag))
		return len(infos) == len(servers)
	}) {
		t.Fatal("the caller never saw the three echo peers")
	}

	// The load: emitters, the caller.
	var stop atomic.Bool
	hardStop := time.Now().Add(faultTime + 60*time.Second)
	type emitter struct {
		acked    []eventlog.Ack
		retries  int
		gaveUp   error
		lastErrs []string
	}
	emitters := make([]*emitter, chaosEmitters)
	var load sync.WaitGroup
	for k := range chaosEmitters {
		em := &emitter{}
		emitters[k] = em
		_, lg := c.newPeer(fmt.Sprintf("emitter%d", k), nil, slices.Concat(c.urls[k%3:], c.urls[:k%3])...)
		load.Go(func() {
			name := fmt.Sprintf("chaos.e%d", k)
			// Paced, so that the durables (one event in flight) keep up
			// and the checks stay short.
			pace := time.NewTicker(chaosEmitEvery)
			defer pace.Stop()
			for i := 0; !stop.Load(); i++ {
				<-pace.C
				id := fmt.Sprintf("chaos-%d-%06d", k, i)
				for {
					ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
					f, err := lg.EmitAsync(ectx, name, chaosEvent{K: k, I: i}, eventlog.WithEventID(id))
					var a eventlog.Ack
					if err == nil {
						a, err = f.Wait(ectx)
					}
					cancel()
					if err == nil {
						em.acked = append(em.acked, a)
						break
					}
					em.retries++
					if len(em.lastErrs) < 5 {
						em.lastErrs = append(em.lastErrs, err.Error())
					}
					if time.Now().After(hardStop) {
						em.gaveUp = fmt.Errorf("event %s: %w", id, err)
						return
					}
					time.Sleep(100 * time.Millisecond) // backoff before the retry with the same id
				}
			}
		})
	}
	var callMu sync.Mutex
	var calls []callRec
	load.Go(func() {
		for !stop.Load() {
			from := time.Now()
			cctx, cancel := context.WithTimeout(ctx, chaosCallLimit)
			out, err := caller.Call(cctx, chaosCallTag, []byte(`"ping"`), peer.OnAny())
			cancel()
			callMu.Lock()
			calls = append(calls, callRec{from: from, to: time.Now(), ok: err == nil && string(out) == `"ping"`})
			callMu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	})

	// The fault schedule.
	kinds := []string{"kill", "partition", "pause"}
	var faults []window
	count := map[string]int{}
	var order []string
	begin := time.Now()
	for time.Since(begin) < faultTime || len(order) < len(kinds) {
		if len(order)%len(kinds) == 0 {
			rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
		}
		kind := kinds[len(order)%len(kinds)]
		hold := 2*time.Second + time.Duration(rng.IntN(3000))*time.Millisecond
		gap := 5*time.Second + time.Duration(rng.IntN(3000))*time.Millisecond
		n := c.nodes[rng.IntN(len(c.nodes))]
		if kind == "pause" {
			ci, _, err := logState(ctx, js)
			if err != nil {
				t.Fatalf("no log leader before a pause: %v", err)
			}
			for _, cn := range c.nodes {
				if cn.name == ci.Leader {
					n = cn
				}
			}
		}
		w := window{from: time.Now()}
		switch kind {
		case "kill":
			_ = n.proc.cmd.Process.Kill()
			if _, ok := n.proc.wait(10 * time.Second); !ok {
				t.Fatalf("%s survived kill -9", n.name)
			}
			time.Sleep(hold) // the node stays down this long
			c.start(slices.Index(c.nodes, n))
		case "partition":
			n.host.MustRun(iptables(), "-I", "INPUT", "!", "-i", "lo", "-j", "DROP")
			n.host.MustRun(iptables(), "-I", "OUTPUT", "!", "-o", "lo", "-j", "DROP")
			time.Sleep(hold)
			n.host.MustRun(iptables(), "-F", "INPUT")
			n.host.MustRun(iptables(), "-F", "OUTPUT")
		case "pause":
			n.proc.signal(syscall.SIGSTOP)
			time.Sleep(hold)
			n.proc.signal(syscall.SIGCONT)
		}
		w.to = time.Now()
		faults = append(faults, w)
		count[kind]++
		order = append(order, fmt.Sprintf("%s:%s:%v", kind, n.name, hold.Round(time.Millisecond)))
		t.Logf("fault %d: %s of %s for %v", len(order), kind, n.name, hold.Round(time.Millisecond))
		// One fault at a time: the next waits until the log is whole.
		if !awaitCond(60*time.Second, func() bool { return healthy(ctx, js) }) {
			ci, _, err := logState(ctx, js)
			t.Fatalf("the log did not recover after %s of %s: %+v %v", kind, n.name, ci, err)
		}
		time.Sleep(gap) // the load runs without a fault for this long
	}
	stop.Store(true)
	load.Wait()

	// Every emitter's events, as acknowledged.
	var ackedTotal int
	for k, em := range emitters {
		if em.gaveUp != nil {
			t.Errorf("emitter %d gave up: %v", k, em.gaveUp)
		}
		ackedTotal += len(em.acked)
	}
	// The log on every node: make each the leader, read it there.
	var lost, duplicated, disordered int
	for _, n := range c.nodes {
		if !awaitCond(30*time.Second, func() bool {
			ci, _, err := logState(ctx, js)
			if err == nil && ci.Leader == n.name {
				return true
			}
			req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": n.name}})
			_, _ = mon.Request("$JS.API.STREAM.LEADER.STEPDOWN."+eventlog.Stream, req, 2*time.Second)
			return awaitCond(3*time.Second, func() bool {
				ci, _, err := logState(ctx, js)
				return err == nil && ci.Leader == n.name
			})
		}) {
			t.Fatalf("%s never became the log's leader", n.name)
		}
		byEmitter := make([][]int, chaosEmitters)
		ids := map[string]int{}
		rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		for e, err := range admin.Replay(rctx, "chaos.>") {
			if err != nil {
				cancel()
				t.Fatalf("replay on %s: %v", n.name, err)
			}
			var v chaosEvent
			if err := e.Decode(&v); err != nil || v.K < 0 || v.K >= chaosEmitters {
				t.Fatalf("event %+v on %s: %v", e, n.name, err)
			}
			byEmitter[v.K] = append(byEmitter[v.K], v.I)
			ids[e.ID]++
		}
		cancel()
		for k, em := range emitters {
			got := byEmitter[k]
			stored := map[int]int{}
			for j, i := range got {
				stored[i]++
				if j > 0 && i <= got[j-1] {
					disordered++
				}
			}
			for i := range em.acked {
				switch stored[i] {
				case 0:
					lost++
					t.Errorf("%s: acknowledged event %d of emitter %d is not in the log", n.name, i, k)
				case 1:
				default:
					duplicated += stored[i] - 1
					t.Errorf("%s: event %d of emitter %d is in the log %d times", n.name, i, k, stored[i])
				}
			}
			if len(got) != len(em.acked) {
				t.Errorf("%s: emitter %d has %d events in the log, %d acknowledged", n.name, k, len(got), len(em.acked))
			}
		}
		if disordered > 0 {
			t.Errorf("%s: %d events out of their emitter's order", n.name, disordered)
		}
	}

	// The durables: every event at least once, acknowledged once.
	var seqs []uint64
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	for e, err := range admin.Replay(rctx, "chaos.>") {
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, e.Seq)
	}
	cancel()
	if len(seqs) == 0 {
		t.Fatal("no events in the log")
	}
	lastSeq := seqs[len(seqs)-1]
	durableSummary := make([]string, 0, len(durables))
	for _, d := range durables {
		if !awaitCond(90*time.Second, func() bool {
			di, err := admin.DurableInfo(ctx, d.name)
			return err == nil && di.AckFloor >= lastSeq && di.AckPending == 0 && di.Pending == 0
		}) {
			di, err := admin.DurableInfo(ctx, d.name)
			t.Errorf("durable %s did not catch up: %+v %v", d.name, di, err)
		}
		d.mu.Lock()
		var missing, twice, redelivered int
		for _, s := range seqs {
			n := d.seen[s]
			if n == 0 {
				missing++
			}
			if n > 1 {
				redelivered++
			}
			if n-d.ackFails[s] > 1 {
				twice++
				t.Errorf("durable %s: event seq %d handled %d times (deliveries %v), %d acks failed", d.name, s, n, d.nums[s], d.ackFails[s])
			}
		}
		d.mu.Unlock()
		if missing > 0 || twice > 0 {
			t.Errorf("durable %s: %d events never delivered, %d acknowledged more than once", d.name, missing, twice)
		}
		durableSummary = append(durableSummary, fmt.Sprintf("%s missing=%d acked-twice=%d redelivered=%d", d.name, missing, twice, redelivered))
	}

	// Calls, outside the faults and their settling time.
	var counted, ok int
	for _, cr := range calls {
		inFault := slices.ContainsFunc(faults, func(w window) bool {
			return cr.to.After(w.from) && cr.from.Before(w.to.Add(chaosSettle))
		})
		if inFault {
			continue
		}
		counted++
		if cr.ok {
			ok++
		}
	}
	rate := 0.0
	if counted > 0 {
		rate = 100 * float64(ok) / float64(counted)
	}
	if counted < 100 || rate < 99 {
		t.Errorf("calls outside faults: %d of %d ok (%.2f%%), want at least 99%% of at least 100", ok, counted, rate)
	}
	var retries int
	for k, em := range emitters {
		retries += em.retries
		if em.retries > 0 {
			t.Logf("emitter %d: %d retries, first errors: %q", k, em.retries, em.lastErrs)
		}
	}
	fmt.Printf("chaos: seed=%d faults=%d (kill=%d partition=%d pause=%d) events acknowledged=%d lost=%d duplicated=%d out-of-order=%d emit-retries=%d; %s; calls ok=%d/%d (%.2f%%) of %d made; schedule %s\n",
		seed, len(faults), count["kill"], count["partition"], count["pause"], ackedTotal, lost, duplicated, disordered, retries,
		strings.Join(durableSummary, ", "), ok, counted, rate, len(calls), strings.Join(order, " "))
}
