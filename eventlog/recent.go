package eventlog

import "time"

// maxRecentIDs bounds the event ids a live subscription remembers to
// drop a retried emit's second copy.
const maxRecentIDs = 65536

// recentIDs remembers the ids of the persisted events a live
// subscription delivered, each for the dedupe window, at most
// maxRecentIDs of them (the oldest are forgotten first). It is not safe
// for concurrent use.
type recentIDs struct {
	window time.Duration
	max    int
	exp    map[string]int64 // id -> expiry (unix nanoseconds)
	ring   []recentID       // in delivery order, from head
	head   int
}

type recentID struct {
	id  string
	exp int64
}

func newRecentIDs(window time.Duration, max int) *recentIDs {
	return &recentIDs{window: window, max: max, exp: make(map[string]int64)}
}

// seen reports whether id was delivered within the window, and
// remembers it when not.
func (r *recentIDs) seen(id string, now time.Time) bool {
	t := now.UnixNano()
	if exp, ok := r.exp[id]; ok && t < exp {
		return true
	}
	// Forget what expired, oldest first, and the oldest when full.
	for r.head < len(r.ring) {
		old := r.ring[r.head]
		if old.exp > t && len(r.exp) < r.max {
			break
		}
		if r.exp[old.id] == old.exp {
			delete(r.exp, old.id)
		}
		r.ring[r.head] = recentID{}
		r.head++
	}
	if r.head > 0 && r.head >= len(r.ring)/2 {
		// Move the live part down so that the ring does not grow.
		n := copy(r.ring, r.ring[r.head:])
		clear(r.ring[n:])
		r.ring, r.head = r.ring[:n], 0
	}
	e := t + int64(r.window)
	r.exp[id] = e
	r.ring = append(r.ring, recentID{id: id, exp: e})
	return false
}
