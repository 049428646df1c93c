package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/peer"
)

// PresencePeers is the number of peers of the presence-scale cases, each
// on its own TCP connection to one node, as that many application
// processes would be. The process needs about 2 file descriptors per
// peer (Go raises the soft limit to the hard one at start; raise the
// hard limit with `ulimit -Hn` for 5,000 peers and more).
var PresencePeers = 1000

// An idle fleet is measured for presenceIdle, presenceSettle after it
// started: a whole period of the slow heartbeats of a bus without live
// views (peer.SlowBeats heartbeat intervals) and a second more.
const (
	presenceIdle   = peer.SlowBeats*peer.DefaultHeartbeat + time.Second
	presenceSettle = 2 * time.Second
)

// A raw peer of the baselines has the subscriptions a peer needs to be
// reachable (its direct subject, the presence query, the fan-out of
// ping), answers a scatter request, and sends nothing by itself.
const scatterSubject = "bench.scatter"

func presenceCases() []Case {
	n := strconv.Itoa(PresencePeers)
	return []Case{
		{
			Name: "presence-start", Kind: Sample, Unit: "ms", LowerIsBetter: true, MaxRounds: 3,
			What:     "time to start " + n + " peers, each on its own TCP connection to one node, 16 at a time",
			Baseline: "time to open " + n + " nats.go connections with the same subscriptions and flush them",
			Setup: func(ctx context.Context, env *Env) (Side, Side, func(), error) {
				node, err := presenceNode(ctx, env)
				if err != nil {
					return Side{}, Side{}, nil, err
				}
				sample := func(raw bool) func(context.Context) (float64, error) {
					return func(ctx context.Context) (float64, error) {
						t0 := time.Now()
						f, err := startPresenceFleet(ctx, node, PresencePeers, raw)
						el := time.Since(t0)
						f.close()
						return float64(el) / float64(time.Millisecond), err
					}
				}
				return Side{Sample: sample(false)}, Side{Sample: sample(true)}, func() { node.Close() }, nil
			},
		},
		{
			Name: "presence-idle", Kind: Sample, Unit: "% core", LowerIsBetter: true, MaxRounds: 1,
			What:     "CPU of the whole process (server and clients) over " + presenceIdle.String() + " (a period of the slow heartbeats) with " + n + " idle peers, 2 s after they started",
			Baseline: "the same with " + n + " idle nats.go connections holding the same subscriptions",
			Setup: func(ctx context.Context, env *Env) (Side, Side, func(), error) {
				node, err := presenceNode(ctx, env)
				if err != nil {
					return Side{}, Side{}, nil, err
				}
				sample := func(raw bool) func(context.Context) (float64, error) {
					return func(ctx context.Context) (float64, error) {
						f, err := startPresenceFleet(ctx, node, PresencePeers, raw)
						defer f.close()
						if err != nil {
							return 0, err
						}
						if err := sleepCtx(ctx, presenceSettle); err != nil {
							return 0, err
						}
						// The garbage of the start is not idle work.
						runtime.GC()
						c0, t0 := processCPU(), time.Now()
						if err := sleepCtx(ctx, presenceIdle); err != nil {
							return 0, err
						}
						// A floor of 0.1 % keeps the ratio finite when the
						// baseline is idle to the resolution of the clock.
						return max(0.1, 100*float64(processCPU()-c0)/float64(time.Since(t0))), nil
					}
				}
				return Side{Sample: sample(false)}, Side{Sample: sample(true)}, func() { node.Close() }, nil
			},
		},
		{
			Name: "presence-join", Kind: Sample, Unit: "ms", LowerIsBetter: true, MaxRounds: 5,
			What:     "from connecting a new peer until a live view (WatchPresence) among " + n + " peers reports it joined",
			Baseline: "from connecting a new nats.go connection until its first message reaches a subscriber on the same node",
			Setup:    presenceJoinSetup,
		},
		fleetCase("presence-list", "Peers() of a peer without a live view: a presence query that all "+n+" answer",
			"a scatter request to the same "+n+" connections, gathering exactly their "+n+" replies",
			func(ctx context.Context, p *peer.Peer) (int, error) {
				infos, err := p.Peers(ctx)
				return len(infos), err
			}),
		fleetCase("presence-callall", "CallAll of ping over "+n+" peers, waiting for each expected peer",
			"a scatter request to the same "+n+" connections, gathering exactly their "+n+" replies",
			func(ctx context.Context, p *peer.Peer) (int, error) {
				replies, err := p.CallAll(ctx, peer.TagPing, nil)
				return len(replies), err
			}),
	}
}

// fleetCase measures op on a fleet of peers (each of which also answers
// the baseline's scatter request) against the scatter request.
func fleetCase(name, what, baseline string, op func(context.Context, *peer.Peer) (int, error)) Case {
	return Case{
		Name: name, Kind: Sample, Unit: "ms", LowerIsBetter: true, MaxRounds: 5,
		What: what, Baseline: baseline,
		Setup: func(ctx context.Context, env *Env) (Side, Side, func(), error) {
			_, f, cleanup, err := presenceFleetOnNode(ctx, env)
			if err != nil {
				return Side{}, Side{}, nil, err
			}
			asker := f.peers[0]
			pb := func(ctx context.Context) (float64, error) {
				t0 := time.Now()
				got, err := op(ctx, asker)
				el := time.Since(t0)
				if err == nil && got != PresencePeers {
					err = fmt.Errorf("%s: %d answers of %d peers", name, got, PresencePeers)
				}
				return float64(el) / float64(time.Millisecond), err
			}
			raw := func(ctx context.Context) (float64, error) {
				t0 := time.Now()
				err := scatter(ctx, f.conns[0], PresencePeers)
				return float64(time.Since(t0)) / float64(time.Millisecond), err
			}
			return Side{Sample: pb}, Side{Sample: raw}, cleanup, nil
		},
	}
}

// presenceNode starts a node of its own (no JetStream) for a fleet.
func presenceNode(ctx context.Context, env *Env) (*bus.Node, error) {
	n, err := bus.Start(ctx, bus.WithName("bench-presence"), bus.WithListen("127.0.0.1:-1"),
		bus.WithoutJetStream(), bus.WithLogger(env.log))
	if err != nil {
		return nil, fmt.Errorf("start node: %w", err)
	}
	return n, nil
}

// presenceFleetOnNode starts a node of its own and PresencePeers peers
// on it; cleanup stops both.
func presenceFleetOnNode(ctx context.Context, env *Env) (*bus.Node, *presenceFleet, func(), error) {
	node, err := presenceNode(ctx, env)
	if err != nil {
		return nil, nil, nil, err
	}
	f, err := startPresenceFleet(ctx, node, PresencePeers, false)
	cleanup := func() { f.close(); node.Close() }
	if err != nil {
		cleanup()
		return nil, nil, nil, err
	}
	return node, f, cleanup, nil
}

type presenceFleet struct {
	peers []*peer.Peer
	conns []*nats.Conn
}

// startPresenceFleet opens n connections to node, 16 at a time, and on
// each starts a peer (or, raw, the subscriptions of a bare peer); every
// connection answers the scatter request.
func startPresenceFleet(ctx context.Context, node *bus.Node, n int, raw bool) (*presenceFleet, error) {
	f := &presenceFleet{peers: make([]*peer.Peer, n), conns: make([]*nats.Conn, n)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f.start(ctx, node, i, raw); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return f, errors.Join(errs...)
}

func (f *presenceFleet) start(ctx context.Context, node *bus.Node, i int, raw bool) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	nc, err := nats.Connect(node.ClientURL(), nats.Name("fleet-"+strconv.Itoa(i)), nats.NoReconnect())
	if err != nil {
		return err
	}
	f.conns[i] = nc
	if _, err := nc.Subscribe(scatterSubject, func(m *nats.Msg) { _ = m.Respond(nil) }); err != nil {
		return err
	}
	if !raw {
		p, err := peer.New(nc, peer.WithName(fmt.Sprintf("p%05d", i)))
		f.peers[i] = p
		return err
	}
	id := nats.NewInbox()
	for _, s := range []string{"peerbus.call." + id + ".>", peer.PresenceQuerySubject, peer.AllSubject(peer.TagPing)} {
		if _, err := nc.Subscribe(s, func(*nats.Msg) {}); err != nil {
			return err
		}
	}
	return nc.Flush()
}

func (f *presenceFleet) close() {
	if f == nil {
		return
	}
	var wg sync.WaitGroup
	for i := range f.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if f.peers[i] != nil {
				_ = f.peers[i].Close()
			}
			if f.conns[i] != nil {
				f.conns[i].Close()
			}
		}()
	}
	wg.Wait()
}

// scatter publishes one request to scatterSubject and waits for n
// replies.
func scatter(ctx context.Context, nc *nats.Conn, n int) error {
	inbox := nc.NewRespInbox()
	ch := make(chan *nats.Msg, n)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(scatterSubject, inbox, nil); err != nil {
		return err
	}
	for range n {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// processCPU returns the CPU time (user and system) of this process.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// presenceJoinSetup measures how soon a view sees a newcomer.
func presenceJoinSetup(ctx context.Context, env *Env) (Side, Side, func(), error) {
	node, f, cleanup, err := presenceFleetOnNode(ctx, env)
	if err != nil {
		return Side{}, Side{}, nil, err
	}
	joined := make(chan string, 4096)
	w := f.peers[1].WatchPresence(func(e peer.PresenceEvent) {
		if e.Kind == peer.PeerJoined {
			select {
			case joined <- e.Peer.ID:
			default:
			}
		}
	})
	if _, err := f.peers[1].Peers(ctx); err != nil { // the view is synced
		w.Close()
		cleanup()
		return Side{}, Side{}, nil, err
	}
	arrived := make(chan struct{}, 1)
	sub, err := f.conns[1].Subscribe("bench.join", func(*nats.Msg) { arrived <- struct{}{} })
	if err != nil {
		w.Close()
		cleanup()
		return Side{}, Side{}, nil, err
	}
	pb := func(ctx context.Context) (float64, error) {
		// Joins reported before this sample (the view's own start) are
		// not this sample's.
		for len(joined) > 0 {
			<-joined
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		t0 := time.Now()
		nc, err := nats.Connect(node.ClientURL(), nats.NoReconnect())
		if err != nil {
			return 0, err
		}
		defer nc.Close()
		p, err := peer.New(nc)
		if err != nil {
			return 0, err
		}
		defer p.Close()
		for {
			select {
			case id := <-joined:
				if id == p.ID() {
					return float64(time.Since(t0)) / float64(time.Millisecond), nil
				}
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
	}
	raw := func(ctx context.Context) (float64, error) {
		t0 := time.Now()
		nc, err := nats.Connect(node.ClientURL(), nats.NoReconnect())
		if err != nil {
			return 0, err
		}
		defer nc.Close()
		if err := nc.Publish("bench.join", nil); err != nil {
			return 0, err
		}
		select {
		case <-arrived:
			return float64(time.Since(t0)) / float64(time.Millisecond), nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return Side{Sample: pb}, Side{Sample: raw}, func() { _ = sub.Unsubscribe(); w.Close(); cleanup() }, nil
}
