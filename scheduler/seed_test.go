package scheduler

import "testing"

// TestSetSeedRepeats: schedulers given one seed hand their cycles the same
// random numbers (tie-breaks repeat); another seed gives others.
func TestSetSeedRepeats(t *testing.T) {
	draw := func(seed uint64) []uint64 {
		s := New(nil)
		s.SetSeed(seed)
		var out []uint64
		for range 3 {
			c := s.NewCycle()
			out = append(out, c.Uint64(), c.Uint64())
		}
		return out
	}
	a, b, c := draw(42), draw(42), draw(43)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("draw %d: %d and %d with the same seed, expected equal", i, a[i], b[i])
		}
	}
	same := 0
	for i := range a {
		if a[i] == c[i] {
			same++
		}
	}
	if same == len(a) {
		t.Fatal("seeds 42 and 43 gave the same draws")
	}
}
