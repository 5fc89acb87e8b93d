package scorers

// Helpers shared by several scorers. Each runs inside Score: no allocation,
// in place on the slice it is given.

// minMaxInvert maps each v to (max − v)/(max − min), or 1 for all when they
// are equal: the least loaded candidate scores 1, the most loaded 0 (GIE's
// queue and running-requests math).
func minMaxInvert(v []float64) {
	if len(v) == 0 {
		return
	}
	lo, hi := v[0], v[0]
	for _, x := range v[1:] {
		// Plain compares, not the min/max builtins: those order NaN and
		// ±0, which costs ~2 ns per candidate here (queue-kv pick +25%).
		if x < lo {
			lo = x
		}
		if x > hi {
			hi = x
		}
	}
	if hi == lo {
		for i := range v {
			v[i] = 1
		}
		return
	}
	inv := 1 / (hi - lo)
	for i, x := range v {
		v[i] = (hi - x) * inv
	}
}
