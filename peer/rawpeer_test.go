package peer_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/peer"
)

// rawPeer is a peer written from docs/PROTOCOL.md alone, with nothing
// but a NATS connection: it serves the tag "add" and ping, announces
// presence version 2 and answers presence queries.
type rawPeer struct {
	nc   *nats.Conn
	id   string
	info []byte // the announcement: Info with "v" and "rev"
	stop chan struct{}
	wg   sync.WaitGroup
}

func startRawPeer(t *testing.T, url string) *rawPeer {
	t.Helper()
	nc, err := nats.Connect(url, nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	rp := &rawPeer{nc: nc, id: uuid.NewString(), stop: make(chan struct{})}
	rp.info, _ = json.Marshal(map[string]any{
		"v": 2, "rev": 1, "id": rp.id, "name": "raw", "host": "elsewhere", "pid": 1,
		"started": time.Now().UTC(), "tags": []string{"add", "ping"},
	})
	serve := func(m *nats.Msg) {
		tag := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
		reply := &nats.Msg{Subject: m.Reply, Header: nats.Header{}}
		reply.Header.Set(peer.HeaderPeer, rp.id)
		reply.Header.Set(peer.HeaderStatus, "ok")
		switch tag {
		case "add":
			var in struct{ A, B int }
			if err := json.Unmarshal(m.Data, &in); err != nil {
				reply.Header.Set(peer.HeaderStatus, "error")
				reply.Data, _ = json.Marshal(map[string]any{"peer": rp.id, "tag": tag, "code": "bad_request", "message": err.Error()})
			} else {
				reply.Data, _ = json.Marshal(in.A + in.B)
			}
		case "ping":
			reply.Data = []byte("null")
		default:
			reply.Header.Set(peer.HeaderStatus, "error")
			reply.Data, _ = json.Marshal(map[string]any{"peer": rp.id, "tag": tag, "code": "no_such_tag", "tags": []string{"add", "ping"}})
		}
		_ = nc.PublishMsg(reply)
	}
	subs := []func() (*nats.Subscription, error){
		func() (*nats.Subscription, error) { return nc.Subscribe("peerbus.call."+rp.id+".>", serve) },
		func() (*nats.Subscription, error) { return nc.QueueSubscribe("peerbus.any.add", "peerbus", serve) },
		func() (*nats.Subscription, error) { return nc.Subscribe("peerbus.all.add", serve) },
		func() (*nats.Subscription, error) { return nc.Subscribe("peerbus.all.ping", serve) },
		func() (*nats.Subscription, error) {
			// Answer every query: the asker filters (allowed by the protocol).
			return nc.Subscribe("peerbus.presence.query", func(m *nats.Msg) { _ = nc.Publish(m.Reply, rp.info) })
		},
	}
	for _, s := range subs {
		if _, err := s(); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	_ = nc.Publish("peerbus.presence.join."+rp.id, rp.info)
	rp.wg.Add(1)
	go func() {
		defer rp.wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-rp.stop:
				return
			case <-tick.C:
				_ = nc.Publish("peerbus.presence.hb."+rp.id, []byte(`{"rev":1}`))
			}
		}
	}()
	t.Cleanup(rp.kill)
	return rp
}

// kill closes the raw peer's connection without a leave, as a dying
// process would.
func (rp *rawPeer) kill() {
	select {
	case <-rp.stop:
	default:
		close(rp.stop)
	}
	rp.wg.Wait()
	rp.nc.Close()
}

// TestRawPeerFromProtocol checks that a peer built from PROTOCOL.md with
// a bare NATS client is listed, called directly and through any, waited
// for by a fan-out call, seen joining by a watcher, and reported gone
// when its connection dies.
func TestRawPeerFromProtocol(t *testing.T) {
	n := single(t)
	p := newPeer(t, n)
	events := make(chan peer.PresenceEvent, 16)
	w := p.WatchPresence(func(e peer.PresenceEvent) {
		if e.Peer.Name == "raw" {
			events <- e
		}
	})
	defer w.Close()
	rp := startRawPeer(t, n.ClientURL())

	awaitKind(t, events, peer.PeerJoined)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, filter := range [][]peer.PeerFilter{nil, {peer.WithTag("add")}, {peer.ByID(rp.id)}} {
		infos, err := p.Peers(ctx, filter...)
		if err != nil || !hasPeer(infos, rp.id) {
			t.Fatalf("Peers(%d filters) from a view: %v, %v", len(filter), infos, err)
		}
	}
	// A peer with no view asks the bus.
	q := newPeer(t, n)
	infos, err := q.Peers(ctx, peer.WithTag("add"))
	if err != nil || len(infos) != 1 || infos[0].ID != rp.id {
		t.Fatalf("Peers(WithTag(add)) by query: %v, %v", infos, err)
	}
	add, err := peer.Stub[struct{ A, B int }, int](q, "add")
	if err != nil {
		t.Fatal(err)
	}
	for _, opt := range []peer.CallOption{peer.OnPeer(rp.id), peer.OnAny()} {
		if got, err := add.Call(ctx, struct{ A, B int }{2, 3}, opt); err != nil || got != 5 {
			t.Fatalf("call: %v, %v", got, err)
		}
	}
	// The fan-out waits for the raw peer and returns once it answered,
	// long before its deadline.
	replies, err := add.CallAll(ctx, struct{ A, B int }{1, 1}, peer.Timeout(8*time.Second))
	if err != nil || len(replies) != 1 || replies[0].Peer != rp.id || replies[0].Value != 2 {
		t.Fatalf("CallAll: %+v, %v", replies, err)
	}
	if ctx.Err() != nil {
		t.Fatal("CallAll waited for its deadline")
	}

	rp.kill()
	awaitKind(t, events, peer.PeerGone)
}

func awaitKind(t *testing.T, events <-chan peer.PresenceEvent, kind peer.PresenceKind) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e := <-events:
			if e.Kind == kind {
				return
			}
		case <-timeout:
			t.Fatalf("no %s event for the raw peer", kind)
		}
	}
}

func hasPeer(infos []peer.Info, id string) bool {
	for _, i := range infos {
		if i.ID == id {
			return true
		}
	}
	return false
}

// TestHeartbeatsSlowWithoutViews checks that a peer heartbeats at the
// full rate only while a live view exists somewhere on the bus.
func TestHeartbeatsSlowWithoutViews(t *testing.T) {
	n := single(t)
	nc, err := nats.Connect(n.ClientURL(), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	a, err := peer.New(nc, peer.WithPresence(25*time.Millisecond, 100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	sent := func() uint64 { return nc.Stats().OutMsgs }
	// Unwatched: its first heartbeat finds no subscriber and the next
	// ones come SlowBeats intervals (500 ms) apart: at most 3 in 1 s.
	waitFor(t, "slow heartbeats", func() bool {
		before := sent()
		time.Sleep(time.Second)
		return sent()-before <= 3
	})
	// A view on another peer: full rate again (40 per second).
	b := newPeer(t, n)
	w := b.WatchPresence(func(peer.PresenceEvent) {})
	before := sent()
	waitFor(t, "full-rate heartbeats", func() bool { return sent()-before >= 20 })
	// The view ends: slow again.
	w.Close()
	waitFor(t, "slow heartbeats after the view", func() bool {
		before := sent()
		time.Sleep(time.Second)
		return sent()-before <= 3
	})
}
