package eventlog_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/peer"
)

// otherJSON is JSON under another codec name.
type otherJSON struct{}

func (otherJSON) Name() string                    { return "json2" }
func (otherJSON) Marshal(v any) ([]byte, error)   { return json.Marshal(v) }
func (otherJSON) Unmarshal(d []byte, v any) error { return json.Unmarshal(d, v) }

// TestTransientWire checks the wire form of transient events (a JSON
// envelope without headers; headers for ids that are not UTF-8 and for
// other codecs) and that subscribers read events other clients publish
// in either form.
func TestTransientWire(t *testing.T) {
	n := single(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc := n.Conn()
	raw := make(chan *nats.Msg, 16)
	rs, err := nc.ChanSubscribe(eventlog.TransientSubjects, raw)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Unsubscribe()
	watcher := newPeer(t, n, peer.AsClient())
	got := make(chan eventlog.Event, 16)
	sub, err := watcher.Subscribe("wire.>", func(_ context.Context, e eventlog.Event) error {
		got <- e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	next := func() eventlog.Event {
		t.Helper()
		select {
		case e := <-got:
			return e
		case <-ctx.Done():
			t.Fatal("no event")
		}
		return eventlog.Event{}
	}
	nextRaw := func() *nats.Msg {
		t.Helper()
		select {
		case m := <-raw:
			return m
		case <-ctx.Done():
			t.Fatal("no message")
		}
		return nil
	}

	emitter := newPeer(t, n, peer.WithGroup("g"))
	for _, id := range []string{"", `q"uote\`, "\xffnot-utf8"} {
		var opts []eventlog.EmitOption
		if id != "" {
			opts = append(opts, eventlog.WithEventID(id))
		}
		ack, err := emitter.EmitTransient(ctx, "wire.a", num{7}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		m := nextRaw()
		if m.Subject != eventlog.TransientSubject("g", emitter.ID(), "wire.a") {
			t.Fatalf("subject %q", m.Subject)
		}
		if id == "\xffnot-utf8" {
			if m.Header.Get(eventlog.HeaderEventID) != id || m.Header.Get(eventlog.HeaderTime) == "" || string(m.Data) != `{"N":7}` {
				t.Fatalf("header form: %v %s", m.Header, m.Data)
			}
		} else {
			var env struct {
				ID   string          `json:"id"`
				Time time.Time       `json:"time"`
				Data json.RawMessage `json:"data"`
			}
			if len(m.Header) != 0 || json.Unmarshal(m.Data, &env) != nil || env.ID != ack.ID ||
				!env.Time.Equal(ack.Time) || string(env.Data) != `{"N":7}` {
				t.Fatalf("envelope: headers %v, payload %s", m.Header, m.Data)
			}
		}
		e := next()
		var v num
		if e.ID != ack.ID || !e.Time.Equal(ack.Time) || !e.Transient || e.Group != "g" || e.Peer != emitter.ID() ||
			e.Name != "wire.a" || e.Decode(&v) != nil || v.N != 7 {
			t.Fatalf("event %+v (ack %+v)", e, ack)
		}
	}

	// Another codec: headers, the payload is the value.
	other := newPeer(t, n, peer.WithCodec(otherJSON{}), peer.AsClient())
	ack, err := other.EmitTransient(ctx, "wire.b", num{8})
	if err != nil {
		t.Fatal(err)
	}
	if m := nextRaw(); m.Header.Get(peer.HeaderCodec) != "json2" || m.Header.Get(eventlog.HeaderEventID) != ack.ID || string(m.Data) != `{"N":8}` {
		t.Fatalf("json2 transient event: %v %s", m.Header, m.Data)
	}
	if e := next(); e.ID != ack.ID || string(e.Data) != `{"N":8}` {
		t.Fatalf("json2 event %+v", e)
	}

	// Events other clients publish: an envelope of another layout, and
	// one in the header form.
	if err := nc.Publish("peerbus.tevt._.rawpeer.wire.c", []byte(`{"data": [1, 2], "time": "2026-11-21T07:50:30Z", "id": "raw-1"}`)); err != nil {
		t.Fatal(err)
	}
	nextRaw()
	if e := next(); e.ID != "raw-1" || e.Peer != "rawpeer" || e.Group != "" || string(e.Data) != "[1, 2]" ||
		!e.Time.Equal(time.Date(2026, 11, 21, 7, 50, 30, 0, time.UTC)) {
		t.Fatalf("raw envelope event %+v", e)
	}
	hm := &nats.Msg{Subject: "peerbus.tevt._.rawpeer.wire.d", Data: []byte(`3`),
		Header: nats.Header{eventlog.HeaderEventID: {"raw-2"}, eventlog.HeaderTime: {"2026-11-21T07:50:31Z"}}}
	if err := nc.PublishMsg(hm); err != nil {
		t.Fatal(err)
	}
	nextRaw()
	if e := next(); e.ID != "raw-2" || string(e.Data) != "3" || e.Time.Second() != 31 {
		t.Fatalf("raw header event %+v", e)
	}
	// A payload that is no envelope is a subscription error.
	if err := nc.Publish("peerbus.tevt._.rawpeer.wire.e", []byte(`{"N":1}`)); err != nil {
		t.Fatal(err)
	}
	nextRaw()
	deadline := time.Now().Add(5 * time.Second)
	for sub.Errors() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if sub.Errors() != 1 {
		t.Fatalf("%d subscription errors, want 1", sub.Errors())
	}
}
