package peer

// Per-tag statistics of the requests a peer serves. The hot path (one
// served request) costs two clock reads and a few atomic additions on
// the tag's own counters: no lock, no map lookup, no allocation.

import (
	"math"
	"math/bits"
	"slices"
	"sync/atomic"
	"time"
)

// HistogramBuckets is the number of buckets of a Histogram.
const HistogramBuckets = 128

// Histogram counts durations in logarithmic buckets: bucket 0 holds
// durations under 1024 ns; above, each power of two is cut into four
// buckets of equal width, bucket i >= 1 holding [HistogramLower(i),
// HistogramLower(i+1)). The last bucket also holds everything longer.
// A quantile read from it is within 12.5% of the true value.
type Histogram [HistogramBuckets]uint64

// histogramBucket returns the bucket of d.
func histogramBucket(d time.Duration) int {
	if d < 1024 {
		return 0
	}
	n := uint64(d)
	e := bits.Len64(n) - 1 // 10 or more
	i := 1 + (e-10)*4 + int((n>>(e-2))&3)
	return min(i, HistogramBuckets-1)
}

// HistogramLower returns the lower bound of bucket i (0 for bucket 0).
func HistogramLower(i int) time.Duration {
	if i <= 0 {
		return 0
	}
	e, m := (i-1)/4+10, uint64((i-1)%4)
	return time.Duration((4 + m) << (e - 2))
}

// Count returns the number of durations counted.
func (h *Histogram) Count() uint64 {
	var n uint64
	for _, c := range h {
		n += c
	}
	return n
}

// Sub returns h minus prev, bucket by bucket (a bucket that went down,
// as after a restart, counts h's value).
func (h *Histogram) Sub(prev *Histogram) Histogram {
	var out Histogram
	for i := range h {
		if h[i] >= prev[i] {
			out[i] = h[i] - prev[i]
		} else {
			out[i] = h[i]
		}
	}
	return out
}

// Quantile returns the duration below which a fraction q (0 to 1) of the
// counted durations fall, interpolated within its bucket; 0 when nothing
// was counted.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.Count()
	if n == 0 {
		return 0
	}
	rank := q * float64(n)
	var seen float64
	for i, c := range h {
		if c == 0 {
			continue
		}
		if seen+float64(c) >= rank {
			lo, hi := float64(HistogramLower(i)), float64(HistogramLower(i+1))
			if i == 0 {
				lo, hi = 0, 1024
			}
			frac := (rank - seen) / float64(c)
			return time.Duration(math.Round(lo + frac*(hi-lo)))
		}
		seen += float64(c)
	}
	return HistogramLower(HistogramBuckets - 1)
}

// statCodes are the error codes counted per tag, in a fixed order.
var statCodes = [...]string{CodeError, CodePanic, CodeNoSuchTag, CodeBadRequest, CodeTooLarge,
	CodeTimeout, CodeCanceled, CodeUnavailable, CodeBusy}

// codeIndex returns the index of code in statCodes; an unknown code
// counts as error.
func codeIndex(code string) int {
	switch code {
	case CodePanic:
		return 1
	case CodeNoSuchTag:
		return 2
	case CodeBadRequest:
		return 3
	case CodeTooLarge:
		return 4
	case CodeTimeout:
		return 5
	case CodeCanceled:
		return 6
	case CodeUnavailable:
		return 7
	case CodeBusy:
		return 8
	}
	return 0
}

// tagStats are the counters of one served tag.
type tagStats struct {
	calls    atomic.Uint64
	inFlight atomic.Int64
	nanos    atomic.Uint64 // total processing time
	errs     [len(statCodes)]atomic.Uint64
	hist     [HistogramBuckets]atomic.Uint64
	lastErr  atomic.Pointer[string]
}

// begin counts a request starting and returns its start time.
func (s *tagStats) begin() time.Time {
	s.inFlight.Add(1)
	return time.Now()
}

// end counts a request that ended, with the code of its error reply
// ("" for a result).
func (s *tagStats) end(start time.Time, code, msg string) {
	d := time.Since(start)
	s.inFlight.Add(-1)
	s.calls.Add(1)
	s.nanos.Add(uint64(d))
	s.hist[histogramBucket(d)].Add(1)
	if code != "" {
		s.errs[codeIndex(code)].Add(1)
		last := msg // on the heap only for an error
		s.lastErr.Store(&last)
	}
}

// TagStats are the statistics of one tag a peer serves, counted since it
// was registered: the requests it received on the bus (local
// pass-through calls are not counted).
type TagStats struct {
	// Tag is the tag.
	Tag string `json:"tag"`
	// Calls counts the requests that ended (with a result or an error).
	Calls uint64 `json:"calls"`
	// Errors counts the requests answered with an error.
	Errors uint64 `json:"errors"`
	// ErrorsByCode counts the errors by code (only codes seen).
	ErrorsByCode map[string]uint64 `json:"errors_by_code,omitempty"`
	// InFlight is the number of requests being served.
	InFlight int64 `json:"in_flight"`
	// Time is the total processing time of the requests that ended.
	Time time.Duration `json:"time_ns"`
	// LastError is the message of the last error reply.
	LastError string `json:"last_error,omitempty"`
	// Latency counts the processing times.
	Latency Histogram `json:"-"`
}

// Mean returns the mean processing time.
func (s TagStats) Mean() time.Duration {
	if s.Calls == 0 {
		return 0
	}
	return s.Time / time.Duration(s.Calls)
}

// snapshot reads the counters (each atomically, not all at one instant).
func (s *tagStats) snapshot(tag string) TagStats {
	out := TagStats{Tag: tag, Calls: s.calls.Load(), InFlight: s.inFlight.Load(), Time: time.Duration(s.nanos.Load())}
	for i := range s.errs {
		if n := s.errs[i].Load(); n > 0 {
			if out.ErrorsByCode == nil {
				out.ErrorsByCode = map[string]uint64{}
			}
			out.ErrorsByCode[statCodes[i]] = n
			out.Errors += n
		}
	}
	for i := range s.hist {
		out.Latency[i] = s.hist[i].Load()
	}
	if m := s.lastErr.Load(); m != nil {
		out.LastError = *m
	}
	return out
}

// Stats returns the statistics of every tag the peer serves, sorted by
// tag.
func (p *Peer) Stats() []TagStats {
	p.mu.RLock()
	out := make([]TagStats, 0, len(p.handlers))
	for tag, h := range p.handlers {
		out = append(out, h.stats.snapshot(tag))
	}
	p.mu.RUnlock()
	slices.SortFunc(out, func(a, b TagStats) int {
		switch {
		case a.Tag < b.Tag:
			return -1
		case a.Tag > b.Tag:
			return 1
		}
		return 0
	})
	return out
}
