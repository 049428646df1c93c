package peer_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/peer"
)

// rawRequest sends a request as a client in another language would and
// returns the reply.
func rawRequest(t *testing.T, nc *nats.Conn, subject string, data []byte, h nats.Header) *nats.Msg {
	t.Helper()
	m, err := nc.RequestMsg(&nats.Msg{Subject: subject, Data: data, Header: h}, 5*time.Second)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	return m
}

// TestGroupHeaderScopesFanOutOnly checks that Peerbus-Group is ignored on
// the any and direct subjects and honoured on the fan-out subject.
func TestGroupHeaderScopesFanOutOnly(t *testing.T) {
	n := single(t)
	// One worker: requests are served in the order they came.
	p := newPeer(t, n, peer.WithGroup("math"), peer.WithMaxConcurrent(1))
	if _, err := peer.Register(p, "mul", multiply); err != nil {
		t.Fatal(err)
	}
	nc := n.Conn()
	other := nats.Header{peer.HeaderGroup: []string{"shop"}}
	for _, subj := range []string{peer.AnySubject("mul"), peer.CallSubject(p.ID(), "mul")} {
		for range 8 {
			m := rawRequest(t, nc, subj, []byte(`{"A":2,"B":3}`), other)
			if m.Header.Get(peer.HeaderStatus) != "ok" || string(m.Data) != "6" {
				t.Fatalf("%s with Peerbus-Group of another group: %q %q", subj, m.Header, m.Data)
			}
		}
	}
	// On the fan-out subject the peer ignores a call for another group,
	// and answers one for its own, sent after it: served in order, the
	// first reply would be the other group's if the peer answered it.
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishMsg(&nats.Msg{Subject: peer.AllSubject("mul"), Reply: inbox, Header: other, Data: []byte(`{"A":1,"B":1}`)}); err != nil {
		t.Fatal(err)
	}
	own := nats.Header{peer.HeaderGroup: []string{"math"}}
	if err := nc.PublishMsg(&nats.Msg{Subject: peer.AllSubject("mul"), Reply: inbox, Header: own, Data: []byte(`{"A":2,"B":2}`)}); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil || string(m.Data) != "4" {
		t.Fatalf("fan-out replies: first %v %+v, want the own group's 4 only", err, m)
	}
}

// TestErrorTypes checks the type field of the errors a peer answers
// without running a function, and of undecodable arguments.
func TestErrorTypes(t *testing.T) {
	n := single(t)
	p := newPeer(t, n)
	if _, err := peer.Register(p, "mul", multiply); err != nil {
		t.Fatal(err)
	}
	nc := n.Conn()
	decode := func(m *nats.Msg) peer.RemoteError {
		t.Helper()
		var re peer.RemoteError
		if m.Header.Get(peer.HeaderStatus) != "error" || json.Unmarshal(m.Data, &re) != nil {
			t.Fatalf("not an error reply: %q %s", m.Header, m.Data)
		}
		return re
	}
	for _, tc := range []struct {
		subject, data string
		h             nats.Header
		code, typ     string
	}{
		{peer.CallSubject(p.ID(), "nosuch"), "null", nil, peer.CodeNoSuchTag, "peer.ErrNoSuchTag"},
		{peer.AnySubject("mul"), "null", nats.Header{peer.HeaderCodec: []string{"cbor"}}, peer.CodeBadRequest, "peer.ErrBadRequest"},
		{peer.AnySubject("mul"), "{bad", nil, peer.CodeBadRequest, "*json.SyntaxError"},
		{peer.AnySubject("mul"), `{"A":"x"}`, nil, peer.CodeBadRequest, "*json.UnmarshalTypeError"},
	} {
		re := decode(rawRequest(t, nc, tc.subject, []byte(tc.data), tc.h))
		if re.Code != tc.code || re.Type != tc.typ {
			t.Errorf("%s %s: code %q type %q, want %q %q", tc.subject, tc.data, re.Code, re.Type, tc.code, tc.typ)
		}
	}
	// The local pass-through reports the same type.
	_, err := p.Call(context.Background(), "nosuch", nil)
	var re *peer.RemoteError
	if !errors.As(err, &re) || re.Type != "peer.ErrNoSuchTag" {
		t.Errorf("local no_such_tag: %v", err)
	}
}

// TestFanOutToAGroupWithoutTheTag checks that a fan-out call scoped to a
// group with no live peer fails naming the group and publishes nothing,
// and that one to a group whose peers do not serve the tag fails naming
// the group.
func TestFanOutToAGroupWithoutTheTag(t *testing.T) {
	n := single(t)
	server := newPeer(t, n, peer.WithGroup("math"))
	if _, err := peer.Register(server, "mul", multiply); err != nil {
		t.Fatal(err)
	}
	caller := newPeer(t, n)
	waitPeers(t, caller, "mul", server.ID())
	nc := n.Conn()
	sub, err := nc.SubscribeSync(peer.AllSubject("mul"))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	_, err = caller.CallAll(context.Background(), "mul", []byte(`{"A":1,"B":1}`), peer.InGroup("shop"))
	if !errors.Is(err, peer.ErrNoResponders) || !strings.Contains(err.Error(), `group "shop"`) {
		t.Fatalf("CallAll in a group without the tag: %v", err)
	}
	if err := nc.Publish(peer.AllSubject("mul"), []byte("marker")); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil || string(m.Data) != "marker" {
		t.Fatalf("first message on the fan-out subject: %v %+v, want the marker (the call published nothing)", err, m)
	}

	// A group with peers, none serving the tag: the call goes out (a tag
	// registered a moment ago may not be in presence yet), nobody
	// answers, and the error names the group.
	member := newPeer(t, n, peer.WithGroup("shop"))
	waitFor(t, "the shop peer", func() bool {
		infos, _ := caller.Peers(context.Background(), peer.ByGroup("shop"))
		return len(infos) == 1 && infos[0].ID == member.ID()
	})
	_, err = caller.CallAll(context.Background(), "mul", []byte(`{"A":1,"B":1}`), peer.InGroup("shop"))
	if !errors.Is(err, peer.ErrNoResponders) || !strings.Contains(err.Error(), `group "shop"`) {
		t.Fatalf("CallAll in a group whose peers lack the tag: %v", err)
	}
}
