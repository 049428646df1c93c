package peer_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/peer"
)

// TestCompactReply checks the two reply forms on the wire: a request
// whose reply subject's last token starts with "pbc-" gets a result
// without headers, any other request the result with Peerbus-Peer and
// Peerbus-Status; error replies always carry the headers.
func TestCompactReply(t *testing.T) {
	n := single(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	callee := newPeer(t, n)
	if _, err := peer.Register(callee, "double", func(_ context.Context, x int) (int, error) { return 2 * x, nil }); err != nil {
		t.Fatal(err)
	}
	nc := n.Conn()
	inbox := nc.NewInbox()
	replies := make(chan *nats.Msg, 4)
	sub, err := nc.ChanSubscribe(inbox+".>", replies)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	ask := func(reply, tag string) *nats.Msg {
		t.Helper()
		if err := nc.PublishRequest(peer.CallSubject(callee.ID(), tag), reply, []byte("21")); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-replies:
			return m
		case <-ctx.Done():
			t.Fatal("no reply")
			return nil
		}
	}
	if m := ask(inbox+".pbc-7", "double"); len(m.Header) != 0 || string(m.Data) != "42" {
		t.Errorf("compact reply: headers %v, data %s", m.Header, m.Data)
	}
	if m := ask(inbox+".x7", "double"); m.Header.Get(peer.HeaderStatus) != "ok" || m.Header.Get(peer.HeaderPeer) != callee.ID() || string(m.Data) != "42" {
		t.Errorf("reply: headers %v, data %s", m.Header, m.Data)
	}
	if m := ask(inbox+".pbc-8", "nope"); m.Header.Get(peer.HeaderStatus) != "error" || m.Header.Get(peer.HeaderPeer) != callee.ID() {
		t.Errorf("compact error reply: headers %v, data %s", m.Header, m.Data)
	}
}

// TestCallOlderCallee checks that a caller understands replies with
// headers, as peers before compact replies send them, results and
// errors.
func TestCallOlderCallee(t *testing.T) {
	n := single(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc := n.Conn()
	const old = "00000000-0000-4000-8000-00000000000a"
	sub, err := nc.Subscribe(peer.CallSubject(old, ">"), func(m *nats.Msg) {
		r := &nats.Msg{Subject: m.Reply, Header: nats.Header{peer.HeaderPeer: {old}, peer.HeaderStatus: {"ok"}}, Data: m.Data}
		if m.Subject == peer.CallSubject(old, "fail") {
			r.Header.Set(peer.HeaderStatus, "error")
			r.Data = []byte(`{"tag":"fail","code":"error","message":"broken"}`)
		}
		_ = nc.PublishMsg(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	caller := newPeer(t, n, peer.AsClient())
	if out, err := caller.Call(ctx, "echo", []byte(`"x"`), peer.OnPeer(old)); err != nil || string(out) != `"x"` {
		t.Fatalf("call: %s, %v", out, err)
	}
	_, err = caller.Call(ctx, "fail", nil, peer.OnPeer(old))
	var re *peer.RemoteError
	if !errors.As(err, &re) || re.Message != "broken" || re.Peer != old {
		t.Fatalf("error reply: %v", err)
	}
}

// TestCallRepliesOnce checks that every call gets its own reply when
// two responders answer each request: the second reply of a call never
// reaches a later one.
func TestCallRepliesOnce(t *testing.T) {
	n := single(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nc := n.Conn()
	const twin = "00000000-0000-4000-8000-00000000000b"
	for range 2 {
		sub, err := nc.Subscribe(peer.CallSubject(twin, "echo"), func(m *nats.Msg) {
			_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{peer.HeaderStatus: {"ok"}}, Data: m.Data})
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
	}
	caller := newPeer(t, n, peer.AsClient())
	for i := range 300 {
		want := strconv.Itoa(i)
		if out, err := caller.Call(ctx, "echo", []byte(want), peer.OnPeer(twin)); err != nil || string(out) != want {
			t.Fatalf("call %d: %s, %v", i, out, err)
		}
	}
}

// TestCallEndsWithConnection checks that a call waiting for a reply
// ends at once, not at its deadline, when its connection closes or its
// peer closes.
func TestCallEndsWithConnection(t *testing.T) {
	n := single(t)
	const silent = "00000000-0000-4000-8000-00000000000c"
	sub, err := n.Conn().Subscribe(peer.CallSubject(silent, ">"), func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := n.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	for _, end := range []string{"connection", "peer"} {
		t.Run(end, func(t *testing.T) {
			nc, err := n.Connect()
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			caller, err := peer.New(nc, peer.AsClient())
			if err != nil {
				t.Fatal(err)
			}
			defer caller.Close()
			before, _ := sub.Delivered()
			done := make(chan error, 1)
			go func() {
				_, err := caller.Call(context.Background(), "wait", nil, peer.OnPeer(silent), peer.Timeout(time.Minute))
				done <- err
			}()
			waitFor(t, "the request", func() bool { d, _ := sub.Delivered(); return d > before })
			if end == "connection" {
				nc.Close()
			} else {
				_ = caller.Close()
			}
			select {
			case err := <-done:
				if !errors.Is(err, net.ErrClosed) || !errors.Is(err, peer.ErrClosed) {
					t.Fatalf("call: %v, want ErrClosed", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("call still waiting")
			}
		})
	}
}
