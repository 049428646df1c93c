package eventlog

import (
	"strconv"
	"testing"
	"time"
)

func TestRecentIDs(t *testing.T) {
	now := time.Unix(1000, 0)
	r := newRecentIDs(time.Minute, 3)
	if r.seen("a", now) || !r.seen("a", now.Add(59*time.Second)) {
		t.Fatal("a second copy within the window was not seen")
	}
	if r.seen("a", now.Add(61*time.Second)) {
		t.Fatal("a copy after the window was dropped")
	}
	// Full: the oldest id is forgotten first.
	r = newRecentIDs(time.Minute, 3)
	for _, id := range []string{"a", "b", "c", "d"} {
		if r.seen(id, now) {
			t.Fatalf("%s seen before", id)
		}
	}
	if r.seen("a", now) {
		t.Fatal("a should have been forgotten when d came")
	}
	if !r.seen("c", now) || !r.seen("d", now) {
		t.Fatal("c and d should be remembered")
	}
	// Many ids over time: memory stays bounded.
	r = newRecentIDs(time.Second, 100)
	for i := range 100000 {
		r.seen(strconv.Itoa(i), now.Add(time.Duration(i)*time.Millisecond))
	}
	if len(r.exp) > 100 || len(r.ring) > 2*100+1 {
		t.Fatalf("%d ids, ring of %d", len(r.exp), len(r.ring))
	}
}
