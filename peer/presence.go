package peer

// Presence, protocol version 2 (docs/PROTOCOL.md, "Presence"). A peer
// announces its full Info with a revision number when it joins, when its
// tags change (update) and when it leaves; its heartbeat carries only
// the revision. Nobody keeps a table of all peers unless asked to: Peers
// and CallAll ask the bus with a query the answering peers filter on,
// and only a live view (WatchPresence) subscribes to the announcements,
// detecting silent peers and probing them.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// Presence limits (see docs/PROTOCOL.md).
const (
	// PresenceVersion is the version of the presence protocol this
	// package speaks; announcements and queries carry it as "v".
	PresenceVersion = 2
	// MaxInfoBytes bounds the JSON of a peer's Info: a peer refuses a
	// name or a registration that would make it larger
	// (ErrInfoTooLarge), and drops announcements that are larger.
	MaxInfoBytes = 16 << 10
	// MaxTags bounds the tags of a peer: Register refuses more
	// (ErrTooManyTags), and announcements with more are dropped.
	MaxTags = 256
	// MaxPeers bounds the peers a live view holds and the answers a
	// query gathers (ErrTooManyPeers).
	MaxPeers = 50_000
)

// PresenceKind is what happened to a peer.
type PresenceKind string

// Presence kinds.
const (
	// PeerJoined: a peer announced itself (or was seen for the first time).
	PeerJoined PresenceKind = "join"
	// PeerLeft: a peer closed and said so.
	PeerLeft PresenceKind = "leave"
	// PeerGone: a peer stopped heartbeating for GoneAfter, or its
	// connection is gone (a probe found no one on its subject).
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

// announcement is the payload of join, update and leave, and the answer
// to a query: the Info with the protocol version and the revision.
type announcement struct {
	Info
	V   int    `json:"v,omitempty"`
	Rev uint64 `json:"rev,omitempty"`
}

// beat is the payload of a version 2 heartbeat.
type beat struct {
	Rev uint64 `json:"rev"`
}

// PeerQuery selects the peers that answer a presence query (version 2):
// each peer checks it and answers only when it matches, so a query for
// the peers of a tag costs one answer per such peer. Empty fields match
// every peer. Peers of protocol version 1 answer every query; the
// asker filters their answers.
type PeerQuery struct {
	// ID keeps the peer with this id.
	ID string `json:"id,omitempty"`
	// Tag keeps the peers that serve this tag.
	Tag string `json:"tag,omitempty"`
	// Group keeps the peers of this group.
	Group string `json:"group,omitempty"`
	// Hub keeps the hub peers.
	Hub bool `json:"hub,omitempty"`
	// Bound takes only the answers a peer sent on its own answer
	// subject, which a bus with a policy lets no one else publish on
	// (docs/PROTOCOL.md): answers on the reply inbox, which anyone may
	// forge, are dropped. A peer with an identity always asks so. It is
	// not sent.
	Bound bool `json:"-"`
}

// Match reports whether i passes the query.
func (q PeerQuery) Match(i Info) bool {
	return (q.ID == "" || i.ID == q.ID) && (q.Tag == "" || i.HasTag(q.Tag)) &&
		(q.Group == "" || i.Group == q.Group) && (!q.Hub || i.Hub)
}

// queryMsg is the payload of a version 2 query.
type queryMsg struct {
	V int `json:"v"`
	PeerQuery
	// Watch is set by a live view starting: every peer that gets it
	// heartbeats at the full rate again.
	Watch bool `json:"watch,omitempty"`
	// Answer is the token of the query's answer subjects: a peer answers
	// on AnswerSubject(Answer, its id) rather than on the reply inbox.
	Answer string `json:"answer,omitempty"`
}

// checkInfo checks the limits of an Info.
func checkInfo(i Info) ([]byte, error) {
	if len(i.Tags) > MaxTags {
		return nil, fmt.Errorf("%w: %d tags, at most %d", ErrTooManyTags, len(i.Tags), MaxTags)
	}
	data, err := json.Marshal(i)
	if err != nil {
		return nil, fmt.Errorf("peer: encode info: %w", err)
	}
	if len(data) > MaxInfoBytes {
		return nil, fmt.Errorf("%w: %d bytes of JSON, at most %d", ErrInfoTooLarge, len(data), MaxInfoBytes)
	}
	return data, nil
}

// warnLimiter logs a warning at most once per interval, with the count
// of the occurrences since the last line.
type warnLimiter struct {
	mu      sync.Mutex
	last    time.Time
	dropped int
}

const warnEvery = 10 * time.Second

func (w *warnLimiter) warn(l *slog.Logger, msg string, args ...any) {
	w.mu.Lock()
	w.dropped++
	now := time.Now()
	if !w.last.IsZero() && now.Sub(w.last) < warnEvery {
		w.mu.Unlock()
		return
	}
	n := w.dropped
	w.dropped, w.last = 0, now
	w.mu.Unlock()
	l.Warn(msg, append(args, "dropped", n)...)
}

type presence struct {
	p   *Peer
	rev atomic.Uint64

	mu       sync.Mutex
	cache    []byte // the announcement of cacheRev
	cacheRev uint64
	view     *view
	watchers map[int]func(PresenceEvent)
	nextW    int
	stopped  bool

	viewMu sync.Mutex // serializes starting and stopping the view
	refs   int        // users of the view (watches)

	// Heartbeat pacing: a heartbeat is sent as a request whose reply
	// subject ends in the watch epoch; a 503 (no subscriber: no live view
	// anywhere) for the current epoch slows the heartbeats down, a query
	// with "watch" starts a new epoch at the full rate.
	epoch   atomic.Uint64
	slow    atomic.Bool
	wake    chan struct{}
	hbInbox string
	hbSub   *nats.Subscription

	stopCh   chan struct{}
	wg       sync.WaitGroup
	querySub *nats.Subscription
	stopOnce sync.Once
	warns    warnLimiter
}

func startPresence(p *Peer) (*presence, error) {
	pr := &presence{p: p, watchers: map[int]func(PresenceEvent){}, stopCh: make(chan struct{}), wake: make(chan struct{}, 1)}
	pr.rev.Store(1)
	if p.opts.NoPresence {
		return pr, nil
	}
	if _, err := checkInfo(p.Info()); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	q, err := p.nc.Subscribe(PresenceQuerySubject, pr.onQuery)
	if err != nil {
		return nil, fmt.Errorf("peer: subscribe presence: %w", err)
	}
	pr.querySub = q
	pr.hbInbox = p.nc.NewInbox()
	if pr.hbSub, err = p.nc.Subscribe(pr.hbInbox+".*", pr.onBeatStatus); err != nil {
		_ = q.Unsubscribe()
		return nil, fmt.Errorf("peer: subscribe presence: %w", err)
	}
	pr.announce(string(PeerJoined))
	pr.wg.Add(1)
	go pr.heartbeat()
	return pr, nil
}

// announcement returns the JSON announcement of the peer's Info at its
// current revision.
func (pr *presence) announcement() []byte {
	rev := pr.rev.Load()
	pr.mu.Lock()
	if pr.cache != nil && pr.cacheRev == rev {
		data := pr.cache
		pr.mu.Unlock()
		return data
	}
	pr.mu.Unlock()
	data, err := json.Marshal(announcement{Info: pr.p.Info(), V: PresenceVersion, Rev: rev})
	if err != nil {
		return nil
	}
	pr.mu.Lock()
	pr.cache, pr.cacheRev = data, rev
	pr.mu.Unlock()
	return data
}

// announce publishes the peer's announcement under kind.
func (pr *presence) announce(kind string) {
	data := pr.announcement()
	if data == nil {
		return
	}
	if err := pr.p.nc.Publish(subjPresence+kind+"."+pr.p.id, data); err != nil {
		pr.p.log.Debug("presence announce failed", "err", err)
	}
}

// changed records a change of the peer's Info (its tags) and announces
// it.
func (pr *presence) changed() {
	if pr.p.opts.NoPresence {
		return
	}
	pr.rev.Add(1)
	pr.announce("update")
}

// onQuery answers a presence query: a version 1 query (empty, or not a
// version 2 object) always, a version 2 query when it matches.
func (pr *presence) onQuery(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	reply := m.Reply
	if q, ok := decodeQuery(m.Data); ok {
		if q.Watch {
			pr.watched()
		}
		if !q.Match(pr.p.Info()) {
			return
		}
		if q.Answer != "" && validToken(q.Answer) {
			reply = AnswerSubject(q.Answer, pr.p.id)
		}
	}
	if data := pr.announcement(); data != nil {
		_ = pr.p.nc.Publish(reply, data)
	}
}

// decodeQuery decodes a version 2 query; ok is false for a version 1
// query (empty, or not a version 2 object), which every peer answers.
func decodeQuery(data []byte) (q queryMsg, ok bool) {
	if len(data) == 0 || len(data) > MaxInfoBytes {
		return q, false
	}
	if err := json.Unmarshal(data, &q); err != nil || q.V < 2 {
		return queryMsg{}, false
	}
	return q, true
}

// validToken reports whether t can be one token of a subject.
func validToken(t string) bool {
	return len(t) <= 64 && !strings.ContainsAny(t, ".*> \t\r\n")
}

// SlowBeats is how many heartbeat intervals apart a peer heartbeats
// while no live view subscribes to heartbeats anywhere on the bus.
const SlowBeats = 20

// watched starts a new watch epoch at the full heartbeat rate.
func (pr *presence) watched() {
	pr.epoch.Add(1)
	if pr.slow.Swap(false) {
		select {
		case pr.wake <- struct{}{}:
		default:
		}
	}
}

// onBeatStatus handles the answer to a heartbeat: only a 503 comes,
// when nobody subscribes to heartbeats; for the current epoch it slows
// the heartbeats down.
func (pr *presence) onBeatStatus(m *nats.Msg) {
	if m.Header.Get("Status") != "503" {
		return
	}
	e := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	if e == strconv.FormatUint(pr.epoch.Load(), 10) {
		pr.slow.Store(true)
	}
}

// heartbeat publishes {"rev":N} every Heartbeat while a live view
// listens, and every SlowBeats heartbeats while none does, starting at
// a random point of the first interval so that peers started together
// do not beat together.
func (pr *presence) heartbeat() {
	defer pr.wg.Done()
	hb := pr.p.opts.Heartbeat
	t := time.NewTimer(rand.N(hb) + 1)
	defer t.Stop()
	subject := subjPresence + "hb." + pr.p.id
	for {
		select {
		case <-pr.stopCh:
			return
		case <-pr.wake:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
			t.Reset(rand.N(hb) + 1)
		case <-t.C:
			if pr.slow.Load() {
				t.Reset(SlowBeats * hb)
			} else {
				t.Reset(hb)
			}
			data, _ := json.Marshal(beat{Rev: pr.rev.Load()})
			reply := pr.hbInbox + "." + strconv.FormatUint(pr.epoch.Load(), 10)
			if err := pr.p.nc.PublishRequest(subject, reply, data); err != nil {
				pr.p.log.Debug("presence heartbeat failed", "err", err)
			}
		}
	}
}

func (pr *presence) stop(leave bool) {
	pr.stopOnce.Do(func() {
		close(pr.stopCh)
		if leave && !pr.p.opts.NoPresence {
			pr.announce(string(PeerLeft))
		}
		if pr.querySub != nil {
			_ = pr.querySub.Unsubscribe()
		}
		if pr.hbSub != nil {
			_ = pr.hbSub.Unsubscribe()
		}
		pr.viewMu.Lock()
		pr.mu.Lock()
		pr.stopped = true
		v := pr.view
		pr.view = nil
		pr.mu.Unlock()
		pr.viewMu.Unlock()
		if v != nil {
			v.stop()
		}
	})
	pr.wg.Wait()
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

// currentView returns the live view, or nil.
func (pr *presence) currentView() *view {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.view
}

// acquireView starts the live view or takes one more reference to it.
func (pr *presence) acquireView() {
	pr.viewMu.Lock()
	defer pr.viewMu.Unlock()
	pr.refs++
	pr.mu.Lock()
	has, stopped := pr.view != nil, pr.stopped
	pr.mu.Unlock()
	if has || stopped {
		return
	}
	v, err := startView(pr)
	if err != nil {
		pr.p.log.Warn("presence view failed", "err", err)
		return
	}
	pr.mu.Lock()
	pr.view = v
	pr.mu.Unlock()
}

// releaseView drops a reference to the live view and stops it with the
// last one. It waits for nothing.
func (pr *presence) releaseView() {
	pr.viewMu.Lock()
	defer pr.viewMu.Unlock()
	pr.refs--
	if pr.refs > 0 {
		return
	}
	pr.mu.Lock()
	v := pr.view
	pr.view = nil
	pr.mu.Unlock()
	if v != nil {
		v.stop()
	}
}

// maxFetches bounds the Info fetches a view runs at once.
const maxFetches = 64

// view is a live table of the peers: it follows the announcements and
// heartbeats, probes the peers that fall silent, and reports changes to
// the watchers. Its state is guarded by presence.mu.
type view struct {
	pr       *presence
	peers    map[string]*viewEntry
	fetching map[string]bool
	synced   chan struct{}
	probes   string // probe replies come on probes + ".pbb-" + peer id (see onProbe)
	subs     []*nats.Subscription
	stopCh   chan struct{}
	ctx      context.Context
	cancel   context.CancelFunc
	stopOnce sync.Once
	done     atomic.Bool // stopped
}

type viewEntry struct {
	info      Info
	rev       uint64
	seen      time.Time // last heartbeat, announcement or probe answer
	probed    time.Time // when the pending probe went out (zero: none)
	announced bool      // a join was reported for it
}

func startView(pr *presence) (*view, error) {
	p := pr.p
	v := &view{pr: pr, peers: map[string]*viewEntry{}, fetching: map[string]bool{},
		synced: make(chan struct{}), stopCh: make(chan struct{}), probes: p.nc.NewInbox()}
	v.ctx, v.cancel = context.WithCancel(p.ctx)
	fail := func(err error) (*view, error) {
		v.stop()
		return nil, fmt.Errorf("peer: subscribe presence: %w", err)
	}
	sub, err := p.nc.Subscribe(subjPresence+"*.*", v.onAnnounce)
	if err != nil {
		return fail(err)
	}
	v.subs = append(v.subs, sub)
	ps, err := p.nc.Subscribe(v.probes+".>", v.onProbe)
	if err != nil {
		return fail(err)
	}
	v.subs = append(v.subs, ps)
	fctx, cancel := context.WithTimeout(v.ctx, 5*time.Second)
	err = p.nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		return fail(err)
	}
	pr.wg.Add(2)
	go v.loop()
	go func() {
		defer pr.wg.Done()
		defer close(v.synced)
		ctx, cancel := context.WithTimeout(v.ctx, 5*time.Second)
		defer cancel()
		as, _ := runQuery(ctx, p.nc, queryMsg{V: PresenceVersion, PeerQuery: PeerQuery{Bound: p.bound()}, Watch: true}, p.id, 0, p.log)
		for _, a := range as {
			v.upsert(a, fromQuery)
		}
	}()
	return v, nil
}

func (v *view) stop() {
	v.stopOnce.Do(func() {
		v.done.Store(true)
		close(v.stopCh)
		v.cancel()
		for _, s := range v.subs {
			_ = s.Unsubscribe()
		}
	})
}

// liveLocked reports whether v still runs.
func (v *view) liveLocked() bool { return !v.done.Load() }

func (v *view) onAnnounce(m *nats.Msg) {
	pr := v.pr
	rest := strings.TrimPrefix(m.Subject, subjPresence)
	kind, id, ok := strings.Cut(rest, ".")
	if !ok || id == "" {
		return
	}
	if len(m.Data) > MaxInfoBytes+64 {
		pr.warns.warn(pr.p.log, "presence: announcement too large dropped", "subject", m.Subject, "bytes", len(m.Data))
		return
	}
	var a announcement
	if err := json.Unmarshal(m.Data, &a); err != nil {
		pr.warns.warn(pr.p.log, "presence: malformed announcement dropped", "subject", m.Subject, "err", err)
		return
	}
	if kind == "hb" && a.ID == "" {
		v.beat(id, a.Rev)
		return
	}
	if a.ID != id || len(a.Tags) > MaxTags {
		pr.warns.warn(pr.p.log, "presence: invalid announcement dropped", "subject", m.Subject)
		return
	}
	switch kind {
	case "leave":
		pr.mu.Lock()
		e, had := v.peers[id]
		if had && v.liveLocked() {
			delete(v.peers, id)
		}
		pr.mu.Unlock()
		if had {
			if a.Rev != 0 && a.Rev < e.rev {
				a.Info = e.info
			}
			pr.notify(PresenceEvent{Kind: PeerLeft, Peer: a.Info, Time: time.Now()})
		}
	case "join":
		v.upsert(a, fromJoin)
	case "update", "hb": // "hb" with an Info: a version 1 peer
		v.upsert(a, fromOther)
	}
}

// How an Info reached a view.
const (
	fromQuery = iota // the view's first query
	fromJoin         // a join announcement
	fromOther        // an update, a version 1 heartbeat, a fetch
)

// upsert records a; a new peer is reported joined unless it comes from
// the view's first query, and a known one is reported joined on its join
// announcement when it was not yet.
func (v *view) upsert(a announcement, from int) {
	pr := v.pr
	now := time.Now()
	pr.mu.Lock()
	if !v.liveLocked() {
		pr.mu.Unlock()
		return
	}
	e, ok := v.peers[a.ID]
	if !ok {
		if len(v.peers) >= MaxPeers {
			pr.mu.Unlock()
			pr.warns.warn(pr.p.log, "presence: view full, peer dropped", "peer", a.ID, "max", MaxPeers)
			return
		}
		e = &viewEntry{}
		v.peers[a.ID] = e
	}
	if a.Rev == 0 || a.Rev >= e.rev {
		e.info, e.rev = a.Info, a.Rev
	}
	e.seen, e.probed = now, time.Time{}
	report := !e.announced && (from == fromJoin || (!ok && from != fromQuery))
	if report {
		e.announced = true
	}
	info := e.info
	pr.mu.Unlock()
	if report {
		pr.notify(PresenceEvent{Kind: PeerJoined, Peer: info, Time: now})
	}
}

// beat records a version 2 heartbeat; an unknown peer, or a newer
// revision than known, makes the view fetch the peer's Info.
func (v *view) beat(id string, rev uint64) {
	pr := v.pr
	pr.mu.Lock()
	e, ok := v.peers[id]
	if ok {
		e.seen, e.probed = time.Now(), time.Time{}
	}
	fetch := (!ok || rev > e.rev) && !v.fetching[id] && len(v.fetching) < maxFetches && v.liveLocked()
	if fetch {
		v.fetching[id] = true
		pr.wg.Add(1)
	}
	pr.mu.Unlock()
	if fetch {
		go v.fetch(id, rev)
	}
}

// fetch asks peer id for its Info with a call of its built-in info tag
// (one message to that peer, not a query to all) and records it at rev,
// the revision its heartbeat named.
func (v *view) fetch(id string, rev uint64) {
	pr := v.pr
	defer pr.wg.Done()
	defer func() {
		pr.mu.Lock()
		delete(v.fetching, id)
		pr.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(v.ctx, 2*time.Second)
	defer cancel()
	data, err := pr.p.call(ctx, TagInfo, []byte("null"), callConfig{target: targetPeer, peer: id, timeout: 2 * time.Second})
	if err != nil || len(data) > MaxInfoBytes {
		return
	}
	var i Info
	if err := json.Unmarshal(data, &i); err != nil || i.ID != id || len(i.Tags) > MaxTags {
		pr.warns.warn(pr.p.log, "presence: invalid info answer dropped", "peer", id)
		return
	}
	v.upsert(announcement{Info: i, V: PresenceVersion, Rev: rev}, fromOther)
}

// onProbe handles the answer to a probe: a 503 status (no one serves the
// peer's subject: its connection is gone) makes it gone at once; any
// other answer shows it alive.
//
// The probe of peer id has the reply subject "<probes>.pbb-<id>": the
// server's no-responders status comes on it, and the peer's bound answer
// on "<probes>.pbb-<id>.<id>"; an answer naming another responder is
// dropped.
func (v *view) onProbe(m *nats.Msg) {
	pr := v.pr
	rest, ok := strings.CutPrefix(m.Subject, v.probes+"."+BoundReplyMark)
	if !ok {
		return
	}
	id, from, bound := strings.Cut(rest, ".")
	if bound && from != id {
		return
	}
	now := time.Now()
	pr.mu.Lock()
	e, ok := v.peers[id]
	if !ok || !v.liveLocked() {
		pr.mu.Unlock()
		return
	}
	if m.Header.Get("Status") == "503" {
		delete(v.peers, id)
		info := e.info
		pr.mu.Unlock()
		pr.notify(PresenceEvent{Kind: PeerGone, Peer: info, Time: now})
		return
	}
	e.seen, e.probed = now, time.Time{}
	pr.mu.Unlock()
}

// loop reaps the peers silent for GoneAfter and probes those silent for
// one and a half heartbeats.
func (v *view) loop() {
	pr := v.pr
	defer pr.wg.Done()
	hb, goneAfter := pr.p.opts.Heartbeat, pr.p.opts.GoneAfter
	tick := time.NewTicker(max(hb/4, 25*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-v.stopCh:
			return
		case now := <-tick.C:
			var gone []Info
			var probe []string
			// Announcements or probe answers still queued here mean this
			// view is behind, not that the peers are silent: reap none
			// until it has caught up.
			behind := v.behind()
			pr.mu.Lock()
			for id, e := range v.peers {
				silent := now.Sub(e.seen)
				switch {
				case silent > goneAfter && !behind && !e.probed.IsZero() && now.Sub(e.probed) >= hb/2:
					delete(v.peers, id)
					gone = append(gone, e.info)
				case silent > hb+hb/2 && (e.probed.IsZero() || now.Sub(e.probed) > hb):
					e.probed = now
					probe = append(probe, id)
				}
			}
			pr.mu.Unlock()
			for _, id := range probe {
				_ = pr.p.nc.PublishMsg(&nats.Msg{Subject: CallSubject(id, TagPing), Reply: v.probes + "." + BoundReplyMark + id})
			}
			for _, i := range gone {
				pr.notify(PresenceEvent{Kind: PeerGone, Peer: i, Time: now})
			}
		}
	}
}

// behind reports whether messages wait in the view's subscriptions.
func (v *view) behind() bool { return queued(v.subs) }

// list returns the peers of the view that pass q and the filters.
func (v *view) list(q PeerQuery, filters []PeerFilter) []Info {
	v.pr.mu.Lock()
	out := make([]Info, 0, len(v.peers))
	for _, e := range v.peers {
		if q.Match(e.info) && matchAll(e.info, filters) {
			out = append(out, e.info)
		}
	}
	v.pr.mu.Unlock()
	sortInfos(out)
	return out
}

// PeerFilter selects peers in Peers. The filters of this package (ByGroup,
// HubsOnly, WithTag, ByID) are also sent with the query, so that only
// the matching peers answer; Where filters on the asker's side only.
type PeerFilter struct {
	q     PeerQuery
	match func(Info) bool
}

// ByGroup keeps peers of group g (every peer when g is empty).
func ByGroup(g string) PeerFilter { return PeerFilter{q: PeerQuery{Group: g}} }

// HubsOnly keeps hub peers.
func HubsOnly() PeerFilter { return PeerFilter{q: PeerQuery{Hub: true}} }

// WithTag keeps peers that offer tag.
func WithTag(tag string) PeerFilter { return PeerFilter{q: PeerQuery{Tag: tag}} }

// ByID keeps the peer with this id.
func ByID(id string) PeerFilter { return PeerFilter{q: PeerQuery{ID: id}} }

// Where keeps the peers for which f returns true.
func Where(f func(Info) bool) PeerFilter { return PeerFilter{match: f} }

func (f PeerFilter) keep(i Info) bool {
	return f.q.Match(i) && (f.match == nil || f.match(i))
}

func matchAll(i Info, filters []PeerFilter) bool {
	for _, f := range filters {
		if !f.keep(i) {
			return false
		}
	}
	return true
}

// mergeQuery is one query the answering peers can check that keeps at
// least every peer the filters keep.
func mergeQuery(filters []PeerFilter) PeerQuery {
	var q PeerQuery
	for _, f := range filters {
		if q.ID == "" {
			q.ID = f.q.ID
		}
		if q.Tag == "" {
			q.Tag = f.q.Tag
		}
		if q.Group == "" {
			q.Group = f.q.Group
		}
		q.Hub = q.Hub || f.q.Hub
	}
	return q
}

// Peers lists the live peers (this one included, unless it is a client)
// that pass every filter, sorted by name then id. While the peer has a
// live view (an open WatchPresence), the list comes from it; otherwise
// Peers asks the bus (one query, answered by the matching peers) and
// returns once no answer came for a short while.
func (p *Peer) Peers(ctx context.Context, filters ...PeerFilter) ([]Info, error) {
	q := mergeQuery(filters)
	if v := p.pres.currentView(); v != nil {
		select {
		case <-v.synced:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return v.list(q, filters), nil
	}
	as, err := p.queryPeers(ctx, q)
	out := make([]Info, 0, len(as))
	for _, a := range as {
		if matchAll(a.Info, filters) {
			out = append(out, a.Info)
		}
	}
	sortInfos(out)
	return out, err
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
// for long. While a watch is open the peer holds a live view of the
// peers: it receives every peer's heartbeat (one small message per peer
// and heartbeat interval) and probes the peers that fall silent; the
// view stops with the last watch.
func (p *Peer) WatchPresence(fn func(PresenceEvent)) *PresenceWatch {
	pr := p.pres
	pr.mu.Lock()
	id := pr.nextW
	pr.nextW++
	pr.watchers[id] = fn
	pr.mu.Unlock()
	pr.acquireView()
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
	w.pr.releaseView()
	return nil
}

// QueryPeers asks every peer on the bus reachable through nc for its
// Info and gathers the answers until no new answer came for quiet (0
// means 150ms) or ctx ends. Any NATS client can do the same: see
// docs/PROTOCOL.md.
func QueryPeers(ctx context.Context, nc *nats.Conn, quiet time.Duration) ([]Info, error) {
	return QueryPeersMatching(ctx, nc, PeerQuery{}, quiet)
}

// QueryPeersMatching is QueryPeers for the peers that match q: the
// peers check q and only the matching ones answer (peers of protocol
// version 1 answer all the same and are filtered here). A query by id
// returns at the first answer.
func QueryPeersMatching(ctx context.Context, nc *nats.Conn, q PeerQuery, quiet time.Duration) ([]Info, error) {
	as, err := queryPeers(ctx, nc, q, quiet, nil)
	out := make([]Info, len(as))
	for i, a := range as {
		out[i] = a.Info
	}
	sortInfos(out)
	return out, err
}

// DefaultQueryQuiet is how long a presence query waits after the last
// answer (and three times as long for the first one).
const DefaultQueryQuiet = 150 * time.Millisecond

// queryPeers runs a version 2 query and gathers the matching answers.
func queryPeers(ctx context.Context, nc *nats.Conn, q PeerQuery, quiet time.Duration, log *slog.Logger) ([]announcement, error) {
	return runQuery(ctx, nc, queryMsg{V: PresenceVersion, PeerQuery: q}, "", quiet, log)
}

// queryPeers is queryPeers for p: a peer with an identity takes only
// bound answers.
func (p *Peer) queryPeers(ctx context.Context, q PeerQuery) ([]announcement, error) {
	q.Bound = q.Bound || p.bound()
	return runQuery(ctx, p.nc, queryMsg{V: PresenceVersion, PeerQuery: q}, p.id, 0, p.log)
}

// bound reports whether p takes only bound presence answers.
func (p *Peer) bound() bool { return p.opts.Identity != nil }

func runQuery(ctx context.Context, nc *nats.Conn, qm queryMsg, self string, quiet time.Duration, log *slog.Logger) ([]announcement, error) {
	if quiet <= 0 {
		quiet = DefaultQueryQuiet
	}
	qm.Answer = nuid.Next()
	body, err := json.Marshal(qm)
	if err != nil {
		return nil, fmt.Errorf("peer: query peers: %w", err)
	}
	g := &gatherer{q: qm.PeerQuery, self: self, log: log, seen: map[string]announcement{}, arrived: make(chan struct{}, 1)}
	inbox := nc.NewRespInbox()
	sub, err := nc.Subscribe(inbox, g.onInbox)
	if err != nil {
		return nil, fmt.Errorf("peer: query peers: %w", err)
	}
	defer sub.Unsubscribe()
	bsub, err := nc.Subscribe(AnswerSubject(qm.Answer, "*"), g.onBound)
	if err != nil {
		return nil, fmt.Errorf("peer: query peers: %w", err)
	}
	defer bsub.Unsubscribe()
	if err := nc.PublishRequest(PresenceQuerySubject, inbox, body); err != nil {
		return nil, fmt.Errorf("peer: query peers: %w", err)
	}
	return g.wait(ctx, nc, quiet, sub, bsub)
}

// AnswerSubject is the subject on which the peer id answers the query
// with the answer token: under a policy only that peer may publish on
// it, so such an answer cannot be forged (docs/PROTOCOL.md).
func AnswerSubject(token, id string) string { return subjPresence + "ans." + token + "." + id }

// gatherer collects the answers to one query.
type gatherer struct {
	q       PeerQuery
	self    string // the asker's own peer id: its answer says nothing of the bus's load
	log     *slog.Logger
	arrived chan struct{}

	mu     sync.Mutex
	seen   map[string]announcement
	others int // answers not from self
	noone  bool
	full   bool
}

// onInbox takes an answer on the reply inbox: from a peer that does not
// bind its answers (version 1, or another implementation), or a 503.
// A query with Bound takes neither: anyone may publish there.
func (g *gatherer) onInbox(m *nats.Msg) {
	if g.q.Bound {
		return
	}
	if m.Header.Get("Status") == "503" {
		g.mu.Lock()
		g.noone = true
		g.mu.Unlock()
		g.signal()
		return
	}
	g.take(m.Data, "")
}

// onBound takes an answer on its peer's answer subject.
func (g *gatherer) onBound(m *nats.Msg) {
	g.take(m.Data, m.Subject[strings.LastIndexByte(m.Subject, '.')+1:])
}

// take records an answer; a bound answer must be of the peer its
// subject names.
func (g *gatherer) take(data []byte, id string) {
	if len(data) > MaxInfoBytes+64 {
		return
	}
	var a announcement
	if err := json.Unmarshal(data, &a); err != nil || a.ID == "" || (id != "" && a.ID != id) || len(a.Tags) > MaxTags || !g.q.Match(a.Info) {
		if g.log != nil && err != nil {
			g.log.Debug("presence: malformed query answer dropped", "err", err)
		}
		return
	}
	g.mu.Lock()
	if _, ok := g.seen[a.ID]; ok || len(g.seen) < MaxPeers {
		if !ok && a.ID != g.self {
			g.others++
		}
		g.seen[a.ID] = a
	} else {
		g.full = true
	}
	g.mu.Unlock()
	g.signal()
}

func (g *gatherer) signal() {
	select {
	case g.arrived <- struct{}{}:
	default:
	}
}

func (g *gatherer) result() ([]announcement, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]announcement, 0, len(g.seen))
	for _, a := range g.seen {
		out = append(out, a)
	}
	if g.full {
		return out, fmt.Errorf("%w: a query gathers at most %d", ErrTooManyPeers, MaxPeers)
	}
	return out, nil
}

func (g *gatherer) count() (n, others int, noone bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.seen), g.others, g.noone
}

// wait returns the answers once they stopped: no answer for the quiet
// time, stretched by what the bus shows of its load — the round trip to
// the server, the time the first answer took, the longest pause between
// answers so far — and never while answers wait in the subscriptions'
// queues.
func (g *gatherer) wait(ctx context.Context, nc *nats.Conn, quiet time.Duration, subs ...*nats.Subscription) ([]announcement, error) {
	start := time.Now()
	wait := 3 * quiet
	fctx, fcancel := context.WithTimeout(ctx, max(time.Second, 3*quiet))
	if err := nc.FlushWithContext(fctx); err == nil {
		wait = max(wait, 10*time.Since(start))
	}
	fcancel()
	timer := time.NewTimer(wait - time.Since(start))
	defer timer.Stop()
	first, last, longest := true, start, time.Duration(0)
	for {
		select {
		case <-g.arrived:
			n, others, none := g.count()
			if none && n == 0 {
				return nil, nil // no peer on the bus
			}
			if g.q.ID != "" && n > 0 {
				return g.result()
			}
			now := time.Now()
			if first && others > 0 {
				first = false
				wait = max(quiet, 2*now.Sub(start))
			}
			longest = max(longest, now.Sub(last))
			last = now
			timer.Reset(max(wait, 2*longest))
		case <-timer.C:
			// Quiet: but answers the server already sent may still sit
			// unread in the socket (a process that was descheduled wakes
			// its timers first). A PING round trip brings them in: the
			// PONG comes after them.
			n, _, _ := g.count()
			fctx, fcancel := context.WithTimeout(ctx, max(time.Second, 3*quiet))
			_ = nc.FlushWithContext(fctx)
			fcancel()
			if m, _, _ := g.count(); m != n || queued(subs) {
				timer.Reset(max(wait, 2*longest))
				continue
			}
			return g.result()
		case <-ctx.Done():
			if n, _, _ := g.count(); n == 0 {
				return nil, fmt.Errorf("peer: query peers: %w", ctx.Err())
			}
			return g.result()
		}
	}
}

// queued reports whether messages wait in any of subs.
func queued(subs []*nats.Subscription) bool {
	for _, s := range subs {
		if n, _, err := s.Pending(); err == nil && n > 0 {
			return true
		}
	}
	return false
}
