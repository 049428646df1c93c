package peer_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/peer"
)

// otherJSON is JSON under another codec name.
type otherJSON struct{}

func (otherJSON) Name() string                    { return "json2" }
func (otherJSON) Marshal(v any) ([]byte, error)   { return json.Marshal(v) }
func (otherJSON) Unmarshal(d []byte, v any) error { return json.Unmarshal(d, v) }

// TestCallCodecHeader checks the request headers a call carries, and
// that a request without Peerbus-Codec is JSON, as the protocol says.
func TestCallCodecHeader(t *testing.T) {
	n := single(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	callee := newPeer(t, n)
	if _, err := peer.Register(callee, "double", func(_ context.Context, x int) (int, error) { return 2 * x, nil }); err != nil {
		t.Fatal(err)
	}
	other := newPeer(t, n, peer.WithCodec(otherJSON{}))
	if _, err := peer.Register(other, "double", func(_ context.Context, x int) (int, error) { return 2 * x, nil }); err != nil {
		t.Fatal(err)
	}
	nc := n.Conn()
	seen := make(chan *nats.Msg, 4)
	sub, err := nc.ChanSubscribe(peer.CallSubject(callee.ID(), "double"), seen)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	caller := newPeer(t, n)
	if out, err := caller.Call(ctx, "double", []byte("21"), peer.OnPeer(callee.ID())); err != nil || string(out) != "42" {
		t.Fatalf("call: %s, %v", out, err)
	}
	m := <-seen
	if _, ok := m.Header[peer.HeaderCodec]; ok {
		t.Errorf("a JSON call carries %s: %v", peer.HeaderCodec, m.Header)
	}
	if m.Header.Get(peer.HeaderCaller) != caller.ID() || m.Header.Get(peer.HeaderDeadline) == "" {
		t.Errorf("request headers %v", m.Header)
	}

	// A raw request without a codec header is JSON.
	r, err := nc.RequestWithContext(ctx, peer.CallSubject(callee.ID(), "double"), []byte("4"))
	if err != nil || r.Header.Get(peer.HeaderStatus) != "ok" || string(r.Data) != "8" {
		t.Fatalf("raw request: %v %v %s", err, r.Header, r.Data)
	}
	// ... which a peer speaking another codec refuses.
	r, err = nc.RequestWithContext(ctx, peer.CallSubject(other.ID(), "double"), []byte("4"))
	if err != nil || r.Header.Get(peer.HeaderStatus) != "error" {
		t.Fatalf("raw request to a json2 peer: %v %v %s", err, r.Header, r.Data)
	}
	var re peer.RemoteError
	if err := json.Unmarshal(r.Data, &re); err != nil || re.Code != peer.CodeBadRequest {
		t.Fatalf("error reply %s (%v)", r.Data, err)
	}
	// A peer of that codec names it, and is understood.
	caller2 := newPeer(t, n, peer.WithCodec(otherJSON{}), peer.AsClient())
	if out, err := caller2.Call(ctx, "double", []byte("5"), peer.OnPeer(other.ID())); err != nil || string(out) != "10" {
		t.Fatalf("json2 call: %s, %v", out, err)
	}
	if _, err := caller2.Call(ctx, "double", []byte("5"), peer.OnPeer(callee.ID())); err == nil {
		t.Fatal("json2 call to a JSON peer succeeded")
	}
}
