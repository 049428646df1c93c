package eventlog

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"
)

// TestTransientEnvelope round-trips the envelope of JSON transient
// events, with ids that need escaping, and reads envelopes written by
// other JSON encoders.
func TestTransientEnvelope(t *testing.T) {
	now := time.Date(2026, 11, 21, 7, 50, 30, 123456789, time.UTC)
	for _, id := range []string{newEventID(), `a"b`, `back\slash`, "ünïcode", "<&>", "x"} {
		for _, data := range []string{`{"N":12345}`, `null`, `"s"`, `[1,{"a":[]}]`, `-1.5e3`} {
			env := appendEnvelope(nil, id, now, []byte(data))
			if !json.Valid(env) {
				t.Fatalf("envelope %s is not JSON", env)
			}
			gotID, gotT, gotData, err := parseEnvelope(env)
			if err != nil || gotID != id || !gotT.Equal(now) || string(gotData) != data {
				t.Fatalf("%s: got %q %v %s %v", env, gotID, gotT, gotData, err)
			}
		}
	}
	// Another layout of the same object.
	other := []byte(` { "data" : {"N": 1}, "time": "2026-11-21T08:50:30.5+01:00", "id": "e1" } `)
	id, tm, data, err := parseEnvelope(other)
	if err != nil || id != "e1" || !tm.Equal(time.Date(2026, 11, 21, 7, 50, 30, 5e8, time.UTC)) || !bytes.Equal(bytes.TrimSpace(data), []byte(`{"N": 1}`)) {
		t.Fatalf("other layout: %q %v %s %v", id, tm, data, err)
	}
	for _, bad := range []string{``, `{}`, `{"id":"x","time":"2026-11-21T07:50:30Z"}`, `{"id":"x"`, `[1]`, `{"id":"x","time":"nope","data":1`} {
		if _, _, _, err := parseEnvelope([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestParseTime compares the fast time parser with time.Parse.
func TestParseTime(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		tm := time.Unix(r.Int64N(1<<36)-1<<35, r.Int64N(1e9)).UTC()
		if r.IntN(4) == 0 {
			tm = tm.Truncate(time.Second)
		}
		s := formatTime(tm)
		got, ok := parseTime([]byte(s))
		if !ok || !got.Equal(tm) {
			t.Fatalf("%s: %v %v, want %v", s, got, ok, tm)
		}
	}
	for _, s := range []string{"2026-02-31T00:00:00Z", "2026-13-01T00:00:00Z", "2026-01-01T24:00:00Z",
		"2026-01-01T00:00:00.Z", "2026-01-01T00:00:00.1234567890Z", "2026-01-01T00:00:0xZ", "", "Z"} {
		want, err := time.Parse(time.RFC3339Nano, s)
		got, ok := parseTime([]byte(s))
		if ok != (err == nil) || (ok && !got.Equal(want)) {
			t.Errorf("%q: %v %v, time.Parse %v %v", s, got, ok, want, err)
		}
	}
	if got, ok := parseTime([]byte("2026-11-21T08:50:30.25+01:00")); !ok || !got.Equal(time.Date(2026, 11, 21, 7, 50, 30, 25e7, time.UTC)) {
		t.Errorf("offset time: %v %v", got, ok)
	}
}

// FuzzTransientEnvelope feeds arbitrary payloads to the envelope
// parser: it never panics, and what it reads from its own layout comes
// back unchanged.
func FuzzTransientEnvelope(f *testing.F) {
	f.Add([]byte(`{"id":"0b6a3f5e-1d2c-4e8a-9f00-5a1b2c3d4e5f","time":"2026-11-21T07:50:30.123456789Z","data":{"N":1}}`))
	f.Add([]byte(`{"id":"a\"b","time":"2026-11-21T07:50:30Z","data":null}`))
	f.Add([]byte(`{"data":1,"id":"x","time":"2026-11-21T07:50:30Z"}`))
	f.Add([]byte(`{"id":"x","time":"2026-11-21T07:50:30Z","data":}`))
	f.Add([]byte(`{"id":"`))
	f.Fuzz(func(t *testing.T, p []byte) {
		id, tm, data, err := parseEnvelope(p)
		if err != nil {
			return
		}
		env := appendEnvelope(nil, id, tm, data)
		id2, tm2, data2, err := parseEnvelope(env)
		if err != nil || id2 != id || !tm2.Equal(tm) || !bytes.Equal(data2, data) {
			if json.Valid(data) && tm.Year() >= 0 && tm.Year() <= 9999 {
				t.Fatalf("round trip of %q: %q %v %q %v", p, id2, tm2, data2, err)
			}
		}
	})
}
