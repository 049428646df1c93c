package eventlog

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// FuzzLogAckReply feeds arbitrary reply subjects to the parser of
// JetStream ack subjects (an event's log position): it never panics,
// and what it accepts is consistent and survives a round trip.
func FuzzLogAckReply(f *testing.F) {
	f.Add("$JS.ACK.PEERBUS_EVENTS.billing.1.42.7.1763711700123456789.3")
	f.Add("$JS.ACK._.ACCHASH.PEERBUS_EVENTS.billing.2.42.7.1763711700123456789.0.XyZ")
	f.Add("$JS.ACK.hub.ACCHASH.PEERBUS_EVENTS.c_1.1.1.1.0.0")
	f.Add("$JS.ACK.S.C.1.0.1.1.0")
	f.Add("$JS.ACK.S.C.x.1.1.1.0")
	f.Add("$JS.ACK..C.1.1.1.1.0")
	f.Add("$JS.ACK.S.C.1.1.1.99999999999999999999.0")
	f.Add("_INBOX.abc")
	f.Add("")
	f.Fuzz(func(t *testing.T, reply string) {
		m, err := parseAckReply(reply)
		if err != nil {
			return
		}
		if m.stream == "" || m.consumer == "" || m.streamSeq == 0 || m.delivered == 0 ||
			strings.Contains(m.stream, ".") || strings.Contains(m.consumer, ".") {
			t.Fatalf("inconsistent %+v from %q", m, reply)
		}
		v1 := fmt.Sprintf("$JS.ACK.%s.%s.%d.%d.%d.%d.%d", m.stream, m.consumer, m.delivered, m.streamSeq,
			m.consumerSeq, m.stored.UnixNano(), m.pending)
		again, err := parseAckReply(v1)
		if err != nil || again != m {
			t.Fatalf("round trip of %q: %+v %v, want %+v", v1, again, err, m)
		}
	})
}

// FuzzLogMsgEvent feeds arbitrary messages to the decoder of events read
// from the log.
func FuzzLogMsgEvent(f *testing.F) {
	f.Add("peerbus.evt._.p1.order.created", "$JS.ACK.PEERBUS_EVENTS.d.1.5.5.1763711700123456789.0",
		"0b6a3f5e-1d2c-4e8a-9f00-5a1b2c3d4e5f", "2026-11-21T07:50:30.123456789Z", []byte(`{"n":1}`))
	f.Add("peerbus.evt.g.p.x", "$JS.ACK._.H.PEERBUS_EVENTS.d.3.9.9.1.0.r", "", "bad time", []byte(nil))
	f.Add("peerbus.tevt.g.p.x", "$JS.ACK.S.C.1.1.1.1.0", "id", "", []byte("x"))
	f.Add("peerbus.evt.g.p.x", "_INBOX.1", "id", "", []byte("x"))
	f.Fuzz(func(t *testing.T, subject, reply, id, tm string, data []byte) {
		h := nats.Header{}
		h.Set(HeaderEventID, id)
		h.Set(HeaderTime, tm)
		e, err := msgEvent(subject, reply, h, data)
		if err != nil {
			return
		}
		if e.Seq == 0 || e.Deliveries < 1 || e.Transient || e.Name == "" || e.Peer == "" ||
			Subject(e.Group, e.Peer, e.Name) != subject || string(e.Data) != string(data) || e.Time.IsZero() {
			t.Fatalf("inconsistent event %+v from %q %q", e, subject, reply)
		}
	})
}

// FuzzProjectionSnapshot feeds arbitrary bytes to the snapshot decoder:
// it never panics, and what it accepts encodes back to an equal
// snapshot.
func FuzzProjectionSnapshot(f *testing.F) {
	f.Add([]byte(`{"v":1,"name":"balance","seq":42,"time":"2026-11-21T07:50:30Z","filters":["peerbus.evt.*.*.acct.deposit"],"codec":"json","state":{"total":45}}`))
	f.Add([]byte(`{"v":1,"name":"b","seq":1,"codec":"msgpack","state_bytes":"AAEC"}`))
	f.Add([]byte(`{"v":1,"name":"b","seq":1,"codec":"json","state":null}`))
	f.Add([]byte(`{"v":2,"codec":"json","state":1}`))
	f.Add([]byte(`{"v":1,"codec":"json"}`))
	f.Add([]byte(`{"v":1,"codec":"json","state":1,"state_bytes":"AA=="}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := decodeSnapshot(data)
		if err != nil {
			return
		}
		if d.V != snapshotVersion || d.Codec == "" || len(d.stateBytes()) == 0 {
			t.Fatalf("inconsistent snapshot %+v", d)
		}
		out, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodeSnapshot(out)
		if err != nil || again.Seq != d.Seq || again.Name != d.Name || again.Codec != d.Codec ||
			string(again.stateBytes()) != string(d.stateBytes()) {
			t.Fatalf("round trip: %+v %v, want %+v", again, err, d)
		}
	})
}

// FuzzLogTimeFormat checks the event time formatter against the
// standard library's RFC 3339 formatting.
func FuzzLogTimeFormat(f *testing.F) {
	f.Add(int64(1763711430), int64(123456789))
	f.Add(int64(0), int64(0))
	f.Add(int64(1763711430), int64(100000000))
	f.Add(int64(-62135596800), int64(1))
	f.Add(int64(253402300799), int64(999999999))
	f.Add(int64(253402300800), int64(0))
	f.Fuzz(func(t *testing.T, sec, nsec int64) {
		tm := time.Unix(sec, nsec)
		if got, want := formatTime(tm), tm.UTC().Format(time.RFC3339Nano); got != want {
			t.Fatalf("formatTime(%d, %d) = %q, want %q", sec, nsec, got, want)
		}
		// Another time of the same second (the formatter remembers the
		// last second's text).
		same := time.Unix(tm.Unix(), int64(tm.Nanosecond()/3))
		if got, want := formatTime(same), same.UTC().Format(time.RFC3339Nano); got != want {
			t.Fatalf("formatTime of %v after %v = %q, want %q", same, tm, got, want)
		}
	})
}

// FuzzParseEvent feeds arbitrary subjects and headers to the event
// decoder.
func FuzzParseEvent(f *testing.F) {
	f.Add("peerbus.evt._.abc.order.created", "2026-01-02T03:04:05.123456789Z", []byte(`{"n":1}`))
	f.Add("peerbus.evt.g.p.x", "bad time", []byte(nil))
	f.Add("peerbus.evt..", "", []byte(nil))
	f.Add("other.subject", "", []byte(nil))
	f.Fuzz(func(t *testing.T, subject, tm string, data []byte) {
		m := nats.NewMsg(subject)
		m.Header.Set(HeaderTime, tm)
		m.Data = data
		e, err := ParseEvent(m)
		if err != nil {
			return
		}
		if e.Peer == "" || e.Name == "" || Subject(e.Group, e.Peer, e.Name) != subject {
			t.Fatalf("inconsistent event %+v from %q", e, subject)
		}
	})
}
