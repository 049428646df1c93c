package peer_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/peer"
)

// 1,000 requests to a tag whose function hangs: the tag's limit runs,
// the excess is answered busy at once, and ping still answers.
func TestOverloadedTagAnswersBusy(t *testing.T) {
	n := single(t)
	p := newPeer(t, n, peer.WithCallTimeout(time.Minute))
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	if _, err := peer.Register(p, "hang", func(ctx context.Context, _ struct{}) (int, error) {
		select {
		case <-release:
			return 1, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}); err != nil {
		t.Fatal(err)
	}
	// The server has the peer's subscriptions once its connection flushed;
	// only then can another connection's request find them.
	if err := n.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	nc, err := n.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	const total = 1000
	inbox := nats.NewInbox()
	replies := make(chan *nats.Msg, total)
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	for i := 0; i < total; i++ {
		// No Peerbus-Deadline: the peer bounds the call itself.
		if err := nc.PublishRequest(peer.AnySubject("hang"), inbox, nil); err != nil {
			t.Fatal(err)
		}
	}
	busy := 0
	for busy < total-peer.DefaultTagConcurrency {
		select {
		case m := <-replies:
			var re peer.RemoteError
			if m.Header.Get(peer.HeaderStatus) != "error" || json.Unmarshal(m.Data, &re) != nil || !errors.Is(&re, peer.ErrBusy) {
				t.Fatalf("reply %d: %s %s", busy, m.Header, m.Data)
			}
			busy++
		case <-time.After(30 * time.Second):
			t.Fatalf("%d busy replies, want %d", busy, total-peer.DefaultTagConcurrency)
		}
	}
	// ping is served while the tag is saturated.
	caller := newPeer(t, n, peer.AsClient())
	if _, err := caller.Call(context.Background(), peer.TagPing, nil, peer.OnPeer(p.ID())); err != nil {
		t.Fatalf("ping while hang is saturated: %v", err)
	}
	// A call through the API gets ErrBusy too.
	if _, err := caller.Call(context.Background(), "hang", nil, peer.OnAny()); !errors.Is(err, peer.ErrBusy) {
		t.Fatalf("call of a saturated tag: %v, want ErrBusy", err)
	}
	// The stats count the rejections under their own code, and the
	// running calls as in flight.
	var hang peer.TagStats
	for _, st := range p.Stats() {
		if st.Tag == "hang" {
			hang = st
		}
	}
	if want := uint64(total - peer.DefaultTagConcurrency + 1); hang.ErrorsByCode[peer.CodeBusy] != want || hang.InFlight != int64(peer.DefaultTagConcurrency) {
		t.Fatalf("stats of hang: busy %d in flight %d, want %d and %d", hang.ErrorsByCode[peer.CodeBusy], hang.InFlight, want, peer.DefaultTagConcurrency)
	}
	once.Do(func() { close(release) })
	for ok := 0; ok < peer.DefaultTagConcurrency; ok++ {
		select {
		case m := <-replies:
			if m.Header.Get(peer.HeaderStatus) != "ok" {
				t.Fatalf("after release: %s %s", m.Header, m.Data)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%d of %d running calls answered after release", ok, peer.DefaultTagConcurrency)
		}
	}
}

// A request without Peerbus-Deadline runs no longer than the peer's call
// timeout.
func TestRequestWithoutDeadlineIsBounded(t *testing.T) {
	n := single(t)
	p := newPeer(t, n, peer.WithCallTimeout(200*time.Millisecond))
	if _, err := peer.Register(p, "wait", func(ctx context.Context, _ struct{}) (int, error) {
		<-ctx.Done()
		return 0, ctx.Err()
	}); err != nil {
		t.Fatal(err)
	}
	if err := p.SetTagConcurrency("wait", 1); err != nil {
		t.Fatal(err)
	}
	if err := p.SetTagConcurrency("none", 1); !errors.Is(err, peer.ErrNoSuchTag) {
		t.Fatalf("SetTagConcurrency of an unknown tag: %v", err)
	}
	// The server has the peer's subscriptions once its connection flushed;
	// only then can another connection's request find them.
	if err := n.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	nc, err := n.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	m, err := nc.Request(peer.AnySubject("wait"), nil, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var re peer.RemoteError
	if err := json.Unmarshal(m.Data, &re); err != nil || re.Code != peer.CodeTimeout {
		t.Fatalf("reply %s %s, want code timeout", m.Header, m.Data)
	}
}
