package peer

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// PresenceKind is what happened to a peer.
type PresenceKind string

// Presence kinds.
const (
	// PeerJoined: a peer announced itself (or was seen for the first time).
	PeerJoined PresenceKind = "join"
	// PeerLeft: a peer closed and said so.
	PeerLeft PresenceKind = "leave"
	// PeerGone: a peer stopped heartbeating for GoneAfter.
	PeerGone PresenceKind = "gone"
)

// PresenceEvent reports a change of the set of live peers.
type PresenceEvent struct {
	// Kind is what happened.
	Kind PresenceKind `json:"kind"`
	// Peer describes the peer (as last announced, for leave and gone).
	Peer Info `json:"peer"`
	// Time is when this peer saw the change.
	Time time.Time `json:"time"`
}

type presenceEntry struct {
	info Info
	seen time.Time
}

type presence struct {
	p        *Peer
	mu       sync.Mutex
	peers    map[string]*presenceEntry
	watchers map[int]func(PresenceEvent)
	nextW    int
	synced   chan struct{}
	stopCh   chan struct{}
	wg       sync.WaitGroup
	subs     []*nats.Subscription
	stopOnce sync.Once
	ctx      context.Context
	cancel   context.CancelFunc
}

func startPresence(p *Peer) (*presence, error) {
	pr := &presence{p: p, peers: map[string]*presenceEntry{}, watchers: map[int]func(PresenceEvent){},
		synced: make(chan struct{}), stopCh: make(chan struct{})}
	pr.ctx, pr.cancel = context.WithCancel(p.ctx)
	sub, err := p.nc.Subscribe(subjPresence+"*.*", pr.onAnnounce)
	if err != nil {
		return nil, fmt.Errorf("peer: subscribe presence: %w", err)
	}
	pr.subs = append(pr.subs, sub)
	if !p.opts.NoPresence {
		q, err := p.nc.Subscribe(PresenceQuerySubject, func(m *nats.Msg) {
			if m.Reply == "" {
				return
			}
			data, _ := json.Marshal(p.Info())
			_ = p.nc.Publish(m.Reply, data)
		})
		if err != nil {
			pr.unsubscribe()
			pr.cancel()
			return nil, fmt.Errorf("peer: subscribe presence: %w", err)
		}
		pr.subs = append(pr.subs, q)
		pr.announce(string(PeerJoined))
	}
	pr.wg.Add(2)
	go pr.loop()
	go func() {
		defer pr.wg.Done()
		defer close(pr.synced)
		ctx, cancel := context.WithTimeout(pr.ctx, 2*time.Second)
		defer cancel()
		infos, err := QueryPeers(ctx, p.nc, 0)
		if err != nil {
			return
		}
		now := time.Now()
		for _, i := range infos {
			pr.upsert(i, now)
		}
	}()
	return pr, nil
}

func (pr *presence) unsubscribe() {
	for _, s := range pr.subs {
		_ = s.Unsubscribe()
	}
}

// announce publishes this peer's Info under kind.
func (pr *presence) announce(kind string) {
	data, err := json.Marshal(pr.p.Info())
	if err != nil {
		return
	}
	if err := pr.p.nc.Publish(subjPresence+kind+"."+pr.p.id, data); err != nil {
		pr.p.log.Debug("presence announce failed", "err", err)
	}
}

func (pr *presence) loop() {
	defer pr.wg.Done()
	hb := time.NewTicker(pr.p.opts.Heartbeat)
	defer hb.Stop()
	reap := time.NewTicker(max(pr.p.opts.Heartbeat/4, 50*time.Millisecond))
	defer reap.Stop()
	for {
		select {
		case <-pr.stopCh:
			return
		case <-hb.C:
			if !pr.p.opts.NoPresence {
				pr.announce("hb")
			}
		case now := <-reap.C:
			pr.reap(now)
		}
	}
}

func (pr *presence) reap(now time.Time) {
	var gone []Info
	pr.mu.Lock()
	for id, e := range pr.peers {
		if now.Sub(e.seen) > pr.p.opts.GoneAfter {
			delete(pr.peers, id)
			gone = append(gone, e.info)
		}
	}
	pr.mu.Unlock()
	for _, i := range gone {
		pr.notify(PresenceEvent{Kind: PeerGone, Peer: i, Time: now})
	}
}

func (pr *presence) onAnnounce(m *nats.Msg) {
	rest := strings.TrimPrefix(m.Subject, subjPresence)
	kind, id, ok := strings.Cut(rest, ".")
	if !ok {
		return
	}
	var info Info
	if err := json.Unmarshal(m.Data, &info); err != nil || info.ID != id {
		pr.p.log.Debug("malformed presence announcement", "subject", m.Subject)
		return
	}
	now := time.Now()
	switch kind {
	case "leave":
		pr.mu.Lock()
		_, had := pr.peers[id]
		delete(pr.peers, id)
		pr.mu.Unlock()
		if had {
			pr.notify(PresenceEvent{Kind: PeerLeft, Peer: info, Time: now})
		}
	case "join", "hb":
		isNew := pr.upsert(info, now)
		if isNew && id != pr.p.id && !pr.p.opts.NoPresence {
			// Let the newcomer learn about this peer at once.
			pr.announce("hb")
		}
	}
}

// upsert records info; it reports whether the peer is new.
func (pr *presence) upsert(info Info, now time.Time) bool {
	pr.mu.Lock()
	e, ok := pr.peers[info.ID]
	if ok {
		e.info, e.seen = info, now
	} else {
		pr.peers[info.ID] = &presenceEntry{info: info, seen: now}
	}
	pr.mu.Unlock()
	if !ok {
		pr.notify(PresenceEvent{Kind: PeerJoined, Peer: info, Time: now})
	}
	return !ok
}

func (pr *presence) notify(ev PresenceEvent) {
	pr.mu.Lock()
	ws := make([]func(PresenceEvent), 0, len(pr.watchers))
	for _, w := range pr.watchers {
		ws = append(ws, w)
	}
	pr.mu.Unlock()
	for _, w := range ws {
		w(ev)
	}
}

func (pr *presence) stop(leave bool) {
	pr.stopOnce.Do(func() {
		close(pr.stopCh)
		pr.cancel()
		if leave && !pr.p.opts.NoPresence {
			pr.announce(string(PeerLeft))
		}
		pr.unsubscribe()
	})
	pr.wg.Wait()
}

// PeerFilter selects peers in Peers.
type PeerFilter func(Info) bool

// ByGroup keeps peers of group g (every peer when g is empty).
func ByGroup(g string) PeerFilter {
	return func(i Info) bool { return g == "" || i.Group == g }
}

// HubsOnly keeps hub peers.
func HubsOnly() PeerFilter { return func(i Info) bool { return i.Hub } }

// WithTag keeps peers that offer tag.
func WithTag(tag string) PeerFilter { return func(i Info) bool { return i.HasTag(tag) } }

// Peers lists the live peers (this one included, unless it is a client)
// that pass every filter, sorted by name then id. The first call waits
// for the initial presence query to finish.
func (p *Peer) Peers(ctx context.Context, filters ...PeerFilter) ([]Info, error) {
	select {
	case <-p.pres.synced:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p.pres.mu.Lock()
	out := make([]Info, 0, len(p.pres.peers))
	for _, e := range p.pres.peers {
		out = append(out, e.info)
	}
	p.pres.mu.Unlock()
	out = slices.DeleteFunc(out, func(i Info) bool {
		for _, f := range filters {
			if !f(i) {
				return true
			}
		}
		return false
	})
	sortInfos(out)
	return out, nil
}

func sortInfos(out []Info) {
	slices.SortFunc(out, func(a, b Info) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// WatchPresence calls fn for every join, leave and gone seen from now
// on, until the watch is closed or the peer closes. fn must not block
// for long.
func (p *Peer) WatchPresence(fn func(PresenceEvent)) *PresenceWatch {
	pr := p.pres
	pr.mu.Lock()
	id := pr.nextW
	pr.nextW++
	pr.watchers[id] = fn
	pr.mu.Unlock()
	return &PresenceWatch{pr: pr, id: id}
}

// PresenceWatch is a watch started by WatchPresence.
type PresenceWatch struct {
	pr     *presence
	id     int
	closed atomic.Bool
}

var errWatchClosed = fmt.Errorf("peer: presence watch closed: %w", net.ErrClosed)

// Close ends the watch: fn is not called for the changes seen after it
// returns (a call already running may still end). It waits for nothing.
// A second call returns an error wrapping net.ErrClosed.
func (w *PresenceWatch) Close() error {
	if w.closed.Swap(true) {
		return errWatchClosed
	}
	w.pr.mu.Lock()
	delete(w.pr.watchers, w.id)
	w.pr.mu.Unlock()
	return nil
}

// QueryPeers asks every peer on the bus reachable through nc for its
// Info and gathers the answers until no new answer came for quiet (0
// means 150ms) or ctx ends. Any NATS client can do the same: see
// docs/PROTOCOL.md.
func QueryPeers(ctx context.Context, nc *nats.Conn, quiet time.Duration) ([]Info, error) {
	if quiet <= 0 {
		quiet = 150 * time.Millisecond
	}
	inbox := nc.NewRespInbox()
	ch := make(chan *nats.Msg, 256)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, fmt.Errorf("peer: query peers: %w", err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(PresenceQuerySubject, inbox, nil); err != nil {
		return nil, fmt.Errorf("peer: query peers: %w", err)
	}
	seen := map[string]Info{}
	timer := time.NewTimer(quiet)
	defer timer.Stop()
	for {
		select {
		case m := <-ch:
			if m.Header.Get("Status") == "503" {
				return nil, nil // no peer on the bus
			}
			var i Info
			if err := json.Unmarshal(m.Data, &i); err == nil && i.ID != "" {
				seen[i.ID] = i
			}
			timer.Reset(quiet)
		case <-timer.C:
			out := make([]Info, 0, len(seen))
			for _, i := range seen {
				out = append(out, i)
			}
			sortInfos(out)
			return out, nil
		case <-ctx.Done():
			if len(seen) == 0 {
				return nil, fmt.Errorf("peer: query peers: %w", ctx.Err())
			}
			out := make([]Info, 0, len(seen))
			for _, i := range seen {
				out = append(out, i)
			}
			sortInfos(out)
			return out, nil
		}
	}
}
