package scorers

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/fastepp/fastepp/scheduler"
)

// craftFlood returns n one-block (64-byte) prompts crafted against the
// unkeyed scheme fastepp used before its block hashes were keyed
// (h = chain(xxhash64(model), xxhash64(block)), slot = low bits of h): every
// prompt's hash has its low 16 bits below 256, so in any table of up to 65,536
// slots they all probe into one run starting near slot 0. An attacker needs
// about 256 hashes per prompt: a fraction of a second for 25,000.
func craftFlood(n int, model string) [][]byte {
	h0 := xxhash.Sum64String(model)
	out := make([][]byte, 0, n)
	block := []byte("flood flood flood flood flood flood flood flood flood flood ....")[:64]
	for ctr := uint64(0); len(out) < n; ctr++ {
		binary.LittleEndian.PutUint64(block[56:], ctr)
		if h := nonZero(chain(h0, xxhash.Sum64(block))); h&0xFFFF < 256 {
			out = append(out, append([]byte(nil), block...))
		}
	}
	return out
}

// longestRun is the longest run of occupied slots in t's current generation:
// the most probes a lookup there can take.
func longestRun(t *prefixTable) int {
	cur := t.cur.Load()
	best, run := 0, 0
	for i := range cur.slots {
		if cur.occupied(i) {
			run++
			best = max(best, run)
		} else {
			run = 0
		}
	}
	return best
}

// TestPrefixFloodKeyed replays prompts crafted against the unkeyed hash: with
// the old scheme they form one run of thousands of slots (every lookup that
// misses walks it); with the keyed hash they spread like any other prompts.
func TestPrefixFloodKeyed(t *testing.T) {
	const n = 3000
	prompts := craftFlood(n, "m")

	// The attack is real against the old scheme.
	old := newPrefixTable(defaultLRUCapacity)
	h0 := xxhash.Sum64String("m")
	for _, p := range prompts {
		old.Insert([]uint64{nonZero(chain(h0, xxhash.Sum64(p)))})
	}
	if run := longestRun(old); run < n {
		t.Fatalf("unkeyed scheme: longest run %d slots, want >= %d (the crafted prompts should pile up)", run, n)
	}

	// The same prompts through picks of the keyed scorer.
	r := newRig(t, DefaultPrefixConfig(), 1)
	for _, p := range prompts {
		r.pick(t, req("m", p))
	}
	tb := r.p.tables[r.states[0].H.ID()]
	if got := tb.stored.Load(); got != n {
		t.Fatalf("%d blocks stored, want %d", got, n)
	}
	if run := longestRun(tb); run > 100 {
		t.Errorf("keyed scheme: longest run %d slots after %d crafted prompts, want <= 100", run, n)
	}
}

// BenchmarkPrefixFlood measures a pick on one endpoint whose index holds
// 25,000 one-block prompts, random (clean) or crafted against the unkeyed
// hash (flooded), plus the 1,024 probe prompts the loop picks (each lookup
// walks from its slot to its match, so a pile-up of slots would slow it; the
// matched block is current, so nothing is inserted and the index stays as
// built). Flooded should stay within 1.5× of clean.
func BenchmarkPrefixFlood(b *testing.B) {
	const n = 25000
	for _, state := range []string{"clean", "flooded"} {
		b.Run("index="+state, func(b *testing.B) {
			var prompts [][]byte
			if state == "flooded" {
				prompts = craftFlood(n, "m")
			} else {
				for i := 0; i < n; i++ {
					prompts = append(prompts, text(64, uint64(i)+1000))
				}
			}
			p := newPrefix(b, DefaultPrefixConfig())
			plan, err := scheduler.NewPlan(NewSingleProfileHandler(), []*scheduler.Profile{{
				Name: "p", Scorers: []scheduler.WeightedScorer{{Scorer: p, Weight: 1}}, Picker: NewMaxScorePicker(1),
			}}, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			now := time.Now()
			s := scheduler.New(plan)
			s.Publish(scheduler.NewSnapshot(endpoints(now, make([]scheduler.Metrics, 1)...), now, 0))
			c := s.NewCycle()
			var rq scheduler.Request
			rq.Model = "m"
			for _, pr := range prompts {
				rq.SetPrompt(pr)
				res, err := s.Pick(c, &rq)
				if err != nil {
					b.Fatal(err)
				}
				res.Release()
			}
			probes := make([][]byte, 1024)
			for i := range probes {
				probes[i] = []byte(fmt.Sprintf("%064d", i))
				rq.SetPrompt(probes[i])
				res, err := s.Pick(c, &rq)
				if err != nil {
					b.Fatal(err)
				}
				res.Release()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				rq.SetPrompt(probes[i%len(probes)])
				res, err := s.Pick(c, &rq)
				if err != nil {
					b.Fatal(err)
				}
				res.Release()
			}
		})
	}
}
