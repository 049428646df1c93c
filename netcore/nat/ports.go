package nat

// MaxSequentialDelta is the largest port delta between consecutive
// mappings that PortBehavior still calls sequential.
const MaxSequentialDelta = 16

// PortBehavior derives the port allocation behaviour from mappings made
// one after another by fresh local sockets, in the order they were made.
// It needs at least one sample to see port preservation and three (two
// deltas) to tell sequential from random allocation. The delta is the
// most common difference between consecutive external ports; it is zero
// unless the allocation is sequential.
func PortBehavior(samples []PortSample) (PortAllocation, int) {
	if len(samples) == 0 {
		return PortUnknown, 0
	}
	preserving := true
	for _, s := range samples {
		if s.Local != s.Mapped {
			preserving = false
			break
		}
	}
	if preserving {
		return PortPreserving, 0
	}
	if len(samples) < 3 {
		return PortUnknown, 0
	}
	counts := make(map[int]int)
	sign := 0
	for i := 1; i < len(samples); i++ {
		d := int(samples[i].Mapped) - int(samples[i-1].Mapped)
		// Wrap around the port space: 65535 -> 1024 is a small step.
		if d > 1<<15 {
			d -= 1 << 16
		} else if d < -(1 << 15) {
			d += 1 << 16
		}
		if d == 0 || d > MaxSequentialDelta || d < -MaxSequentialDelta {
			return PortRandom, 0
		}
		s := 1
		if d < 0 {
			s = -1
		}
		if sign != 0 && s != sign {
			return PortRandom, 0
		}
		sign = s
		counts[d]++
	}
	best, bestN := 0, 0
	for d, n := range counts {
		if n > bestN || n == bestN && abs(d) < abs(best) {
			best, bestN = d, n
		}
	}
	return PortSequential, best
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
