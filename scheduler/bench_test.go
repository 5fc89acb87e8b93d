package scheduler_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/fastepp/fastepp/scheduler"
	"github.com/fastepp/fastepp/scorers"
)

// pool builds n endpoints with varied metrics (deterministic).
func pool(n int, now time.Time) []scheduler.EndpointState {
	r := rand.New(rand.NewPCG(1, uint64(n)))
	states := make([]scheduler.EndpointState, n)
	for i := range states {
		ep := scheduler.Endpoint{
			Name: fmt.Sprintf("pod-%d", i),
			Addr: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
			Port: 8000,
		}
		states[i] = scheduler.EndpointState{
			H:       scheduler.NewHandle(ep),
			Healthy: true,
			M: scheduler.Metrics{
				Waiting:   r.IntN(10),
				Running:   r.IntN(64),
				KVUsage:   r.Float64(),
				UpdatedAt: now,
			},
		}
	}
	return states
}

// prompts returns 2 KB prompts from groups shared-prefix groups, 90% shared.
func prompts(groups, perGroup int) [][]byte {
	r := rand.New(rand.NewPCG(7, 7))
	const size, shared = 2048, 2048 * 9 / 10
	letters := []byte("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,")
	fill := func(b []byte) {
		for i := range b {
			b[i] = letters[r.IntN(len(letters))]
		}
	}
	var out [][]byte
	for g := 0; g < groups; g++ {
		prefix := make([]byte, shared)
		fill(prefix)
		for k := 0; k < perGroup; k++ {
			p := make([]byte, size)
			copy(p, prefix)
			fill(p[shared:])
			out = append(out, p)
		}
	}
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func queueKVPlan(tb testing.TB) *scheduler.Plan {
	reg := scorers.NewRegistry()
	mk := func(typ string) scheduler.Plugin {
		f, _ := reg.Lookup(typ)
		p, err := f.New("", noParams{})
		if err != nil {
			tb.Fatal(err)
		}
		return p
	}
	q, kv := mk(scorers.QueueScorerType), mk(scorers.KVCacheScorerType)
	pk, h := mk(scorers.MaxScorePickerType), mk(scorers.SingleProfileHandlerType)
	plan, err := scheduler.NewPlan(h.(scheduler.ProfileHandler), []*scheduler.Profile{{
		Name:    "queue-kv",
		Scorers: []scheduler.WeightedScorer{{Scorer: q.(scheduler.Scorer), Weight: 2}, {Scorer: kv.(scheduler.Scorer), Weight: 2}},
		Picker:  pk.(scheduler.Picker),
	}}, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return plan
}

// noParams gives every parameter its default.
type noParams struct{}

func (noParams) Int(_ string, d int) (int, error)                          { return d, nil }
func (noParams) Float(_ string, d float64) (float64, error)                { return d, nil }
func (noParams) Bool(_ string, d bool) (bool, error)                       { return d, nil }
func (noParams) String(_ string, d string) (string, error)                 { return d, nil }
func (noParams) Duration(_ string, d time.Duration) (time.Duration, error) { return d, nil }
func (noParams) Has(string) bool                                           { return false }

func defaultPlan(tb testing.TB) *scheduler.Plan {
	p, err := scorers.DefaultPlan()
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// benchSetup returns a scheduler over n endpoints, a cycle, and a warmed-up
// request stream (every prompt picked once so the prefix index is populated).
func benchSetup(tb testing.TB, plan *scheduler.Plan, n int) (*scheduler.Scheduler, *scheduler.Cycle, [][]byte) {
	now := time.Now()
	s := scheduler.New(plan)
	s.Publish(scheduler.NewSnapshot(pool(n, now), now, 0))
	c := s.NewCycle()
	ps := prompts(32, 32)
	var req scheduler.Request
	req.Model = "meta-llama/Llama-3.1-8B-Instruct"
	for _, p := range ps {
		req.SetPrompt(p)
		res, err := s.Pick(c, &req)
		if err != nil {
			tb.Fatal(err)
		}
		res.Release()
	}
	return s, c, ps
}

// BenchmarkPick measures one scheduling decision, prompt hashing included:
// 2 KB prompts from 32 shared-prefix groups (90% shared), varied metrics.
func BenchmarkPick(b *testing.B) {
	cases := []struct {
		profile string
		n       int
		plan    func(testing.TB) *scheduler.Plan
	}{
		{"default", 16, defaultPlan},
		{"default", 128, defaultPlan},
		{"default", 1024, defaultPlan},
		{"queue-kv", 16, queueKVPlan},
	}
	for _, tc := range cases {
		b.Run(fmt.Sprintf("profile=%s/endpoints=%d", tc.profile, tc.n), func(b *testing.B) {
			s, c, ps := benchSetup(b, tc.plan(b), tc.n)
			var req scheduler.Request
			req.Model = "meta-llama/Llama-3.1-8B-Instruct"
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				req.SetPrompt(ps[i%len(ps)])
				res, err := s.Pick(c, &req)
				if err != nil {
					b.Fatal(err)
				}
				res.Release()
			}
		})
	}
}
