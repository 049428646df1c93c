package eventlog

// The wire form of events: the envelope of JSON transient events, the
// event time format, event ids.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// maxEnvelope bounds the envelope buffer a pooled eventBuf keeps.
const maxEnvelope = 64 << 10

// appendEnvelope appends the envelope of a JSON transient event:
// {"id":<id>,"time":<time>,"data":<data>}, data being JSON already.
func appendEnvelope(b []byte, id string, t time.Time, data []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, id)
	b = append(b, `,"time":"`...)
	b = appendTime(b, t)
	b = append(b, `","data":`...)
	b = append(b, data...)
	return append(b, '}')
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	for i := range len(s) {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7f {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// parseEnvelope splits the envelope of a JSON transient event. The
// layout peerbus writes is read without a JSON decoder; any other
// layout of the same object is decoded.
func parseEnvelope(p []byte) (id string, t time.Time, data []byte, err error) {
	if rest, ok := bytes.CutPrefix(p, []byte(`{"id":"`)); ok {
		if i := bytes.IndexByte(rest, '"'); i >= 0 && plainJSONString(rest[:i]) {
			idb := rest[:i]
			if rest, ok := bytes.CutPrefix(rest[i+1:], []byte(`,"time":"`)); ok {
				if j := bytes.IndexByte(rest, '"'); j >= 0 {
					ts := rest[:j]
					if d, ok := bytes.CutPrefix(rest[j+1:], []byte(`,"data":`)); ok && len(d) > 1 && d[len(d)-1] == '}' {
						if t, ok := parseTime(ts); ok {
							return string(idb), t, d[:len(d)-1], nil
						}
					}
				}
			}
		}
	}
	var env struct {
		ID   string          `json:"id"`
		Time time.Time       `json:"time"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(p, &env); err != nil {
		return "", time.Time{}, nil, fmt.Errorf("eventlog: transient event envelope: %w", err)
	}
	if env.Data == nil {
		return "", time.Time{}, nil, errors.New("eventlog: transient event envelope without data")
	}
	return env.ID, env.Time, env.Data, nil
}

// plainJSONString reports whether b is the content of a JSON string as
// it is, with nothing escaped: UTF-8 without '\\' and control
// characters.
func plainJSONString(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == '\\' {
			return false
		}
	}
	return utf8.Valid(b)
}

// parseTime parses the RFC 3339 time formatTime writes
// ("2006-01-02T15:04:05.999999999Z"), quickly, and any other RFC 3339
// time with time.Parse.
func parseTime(b []byte) (time.Time, bool) {
	num := func(s []byte) (int, bool) {
		n := 0
		for _, c := range s {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	if len(b) >= 20 && b[4] == '-' && b[7] == '-' && b[10] == 'T' && b[13] == ':' && b[16] == ':' && b[len(b)-1] == 'Z' {
		y, ok1 := num(b[0:4])
		mo, ok2 := num(b[5:7])
		d, ok3 := num(b[8:10])
		h, ok4 := num(b[11:13])
		mi, ok5 := num(b[14:16])
		sec, ok6 := num(b[17:19])
		frac := b[19 : len(b)-1]
		ns, ok7 := 0, true
		if len(frac) > 0 {
			ok7 = frac[0] == '.' && len(frac) >= 2 && len(frac) <= 10
			if ok7 {
				ns, ok7 = num(frac[1:])
				for range 10 - len(frac) {
					ns *= 10
				}
			}
		}
		if ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && ok7 && mo >= 1 && mo <= 12 && d >= 1 && d <= 31 && h < 24 && mi < 60 && sec < 60 {
			t := time.Date(y, time.Month(mo), d, h, mi, sec, ns, time.UTC)
			if t.Day() == d { // not a 31st of a shorter month
				return t, true
			}
		}
	}
	t, err := time.Parse(time.RFC3339Nano, string(b))
	return t, err == nil
}

// formatTime formats t in UTC as RFC 3339 with nanoseconds, trailing
// zeros of the fraction removed (time.RFC3339Nano), without the cost of
// the general formatter.
func formatTime(t time.Time) string {
	var b [32]byte
	return string(appendTime(b[:0], t))
}

// appendTime appends formatTime(t) to b.
func appendTime(b []byte, t time.Time) []byte {
	var a [30]byte
	sec := t.Unix()
	if st := lastSecond.Load(); st != nil && st.sec == sec {
		a = st.text
	} else {
		t := t.UTC()
		y, mo, d := t.Date()
		if y < 0 || y > 9999 {
			return t.AppendFormat(b, time.RFC3339Nano)
		}
		h, mi, s := t.Clock()
		two := func(v int) (byte, byte) { return byte('0' + v/10), byte('0' + v%10) }
		a[0], a[1] = two(y / 100)
		a[2], a[3] = two(y % 100)
		a[4] = '-'
		a[5], a[6] = two(int(mo))
		a[7] = '-'
		a[8], a[9] = two(d)
		a[10] = 'T'
		a[11], a[12] = two(h)
		a[13] = ':'
		a[14], a[15] = two(mi)
		a[16] = ':'
		a[17], a[18] = two(s)
		lastSecond.Store(&secondText{sec: sec, text: a})
	}
	n := 19
	if ns := t.Nanosecond(); ns != 0 {
		a[19] = '.'
		for i := 28; i >= 20; i-- {
			a[i] = byte('0' + ns%10)
			ns /= 10
		}
		n = 29
		for a[n-1] == '0' {
			n--
		}
	}
	a[n] = 'Z'
	return append(b, a[:n+1]...)
}

// secondText is the text of a second's time up to the seconds
// ("2006-01-02T15:04:05", UTC).
type secondText struct {
	sec  int64 // Unix time
	text [30]byte
}

// lastSecond is the text of the second formatted last: the events of
// one second format only their fraction.
var lastSecond atomic.Pointer[secondText]

// newEventID returns a random (version 4) uuid. Its bits come from the
// runtime's ChaCha8 generator, seeded by the system: ids are unique and
// unpredictable, and much cheaper than reading the system's generator
// for every event.
func newEventID() string {
	var u uuid.UUID
	binary.LittleEndian.PutUint64(u[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(u[8:], rand.Uint64())
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return u.String()
}
