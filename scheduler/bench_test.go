package scheduler_test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/fastepp/fastepp/config"
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

// Prompt shape of the benchmarks: 2 KB, the first 90% shared within a group.
const promptSize, promptShared = 2048, 2048 * 9 / 10

// prompts returns 2 KB prompts from groups shared-prefix groups, 90% shared.
func prompts(groups, perGroup int) [][]byte {
	r := rand.New(rand.NewPCG(7, 7))
	const size, shared = promptSize, promptShared
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
		p, err := f.New("", scheduler.MapParams(nil))
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

func defaultPlan(tb testing.TB) *scheduler.Plan {
	p, err := config.DefaultPlan()
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// benchSetup returns a scheduler over n endpoints, a cycle, and a warmed-up
// request stream (every prompt picked once so the prefix index is populated).
func benchSetup(tb testing.TB, plan *scheduler.Plan, n int) (*scheduler.Scheduler, *scheduler.Cycle, [][]byte) {
	return benchSetupStates(tb, plan, pool(n, time.Now()))
}

// benchSetupStates is benchSetup over the endpoints st.
func benchSetupStates(tb testing.TB, plan *scheduler.Plan, st []scheduler.EndpointState) (*scheduler.Scheduler, *scheduler.Cycle, [][]byte) {
	s := scheduler.New(plan)
	s.Publish(scheduler.NewSnapshot(st, time.Now(), 0))
	c := s.NewCycle()
	ps := prompts(32, 32)
	var req scheduler.Request
	req.Model = "meta-llama/Llama-3.1-8B-Instruct"
	pickAll(tb, s, c, &req, ps)
	return s, c, ps
}

// benchSetupIdle is benchSetup over an idle pool: every endpoint with no
// queue, nothing running and no KV use, so all of them tie on load.
func benchSetupIdle(tb testing.TB, plan *scheduler.Plan, n int) (*scheduler.Scheduler, *scheduler.Cycle, [][]byte) {
	st := pool(n, time.Now())
	for i := range st {
		st[i].M.Waiting, st[i].M.Running, st[i].M.KVUsage = 0, 0, 0
	}
	return benchSetupStates(tb, plan, st)
}

// pickAll picks (and releases) every prompt of ps once with req.
func pickAll(tb testing.TB, s *scheduler.Scheduler, c *scheduler.Cycle, req *scheduler.Request, ps [][]byte) {
	for _, p := range ps {
		req.SetPrompt(p)
		pickRelease(tb, s, c, req)
	}
}

// pickRelease picks with req and releases the result at once; an error
// fails the test.
func pickRelease(tb testing.TB, s *scheduler.Scheduler, c *scheduler.Cycle, req *scheduler.Request) {
	res, err := s.Pick(c, req)
	if err != nil {
		tb.Fatal(err)
	}
	res.Release()
}

// commonPrompt is the 1 KB system prompt of the default-common cases.
func commonPrompt() []byte {
	r := rand.New(rand.NewPCG(11, 11))
	b := make([]byte, 1024)
	for i := range b {
		b[i] = byte('a' + r.IntN(26))
	}
	return b
}

// benchSetupCommon is benchSetup with the 1 KB system prompt in front of
// every prompt, first sent to every endpoint (one subset-hinted pick each,
// with a tail of its own), so that the whole pool holds the common prefix
// and the prefix index declines to list its holders.
func benchSetupCommon(tb testing.TB, plan *scheduler.Plan, n int) (*scheduler.Scheduler, *scheduler.Cycle, [][]byte) {
	now := time.Now()
	s := scheduler.New(plan)
	s.Publish(scheduler.NewSnapshot(pool(n, now), now, 0))
	c := s.NewCycle()
	common := commonPrompt0
	var req scheduler.Request
	req.Model = "meta-llama/Llama-3.1-8B-Instruct"
	for i, e := range s.Snapshot().Endpoints {
		p := append(slices.Clone(common), fmt.Sprintf("endpoint %d: warm-up", i)...)
		req.SetPrompt(p)
		req.Subset, req.HasSubset = []netip.Addr{e.H.Addr}, true
		pickRelease(tb, s, c, &req)
	}
	req.Subset, req.HasSubset = nil, false
	var ps [][]byte
	for _, p := range prompts(32, 32) {
		ps = append(ps, append(slices.Clone(common), p...))
	}
	pickAll(tb, s, c, &req, ps)
	return s, c, ps
}

// BenchmarkPick measures one scheduling decision, prompt hashing included:
// 2 KB prompts from 32 shared-prefix groups (90% shared), varied metrics.
//
//   - default, queue-kv: the prompts repeat, so the prefix index only looks up.
//
//   - default-unique: every prompt gets a unique tail (a counter written where
//     the shared prefix ends), so the chosen endpoint's index inserts the last
//     four blocks on every pick and rotates generations as it fills.
//
//   - default-churn: as default-unique, and a snapshot (same endpoints and
//     metrics, as after a scrape; eight built beforehand, published in turn)
//     is published every 200 picks, inside the timed loop: what a new
//     snapshot costs the picks that follow it, plus the Publish itself
//     (the publisher goroutine's work in epp, amortised here over 200 picks;
//     its few allocations per publish round to 0 allocs/op, while
//     TestFirstPickAfterPublishAllocs keeps the picks themselves at 0).
//
//   - default-common: a 1 KB system prompt common to all in front of each
//     2 KB prompt, held by every endpoint (benchSetupCommon): the prefix
//     index declines to list the holders of the first block (more than an
//     eighth of the pool) and the fast path probes (ProbeScorer).
//
//   - default-common-unique: default-common with a unique tail on every
//     prompt (as default-unique, after the common prompt): the chosen
//     endpoint never holds the whole prompt, so the probing search must
//     look further.
//
//   - default-idle-unique: an idle pool (benchSetupIdle: every endpoint ties
//     on load) and a unique tail on every prompt, so most picks have no
//     prefix hit and the tied best set is the whole pool: the search takes
//     whole subtrees of look-alike endpoints as runs (O(log N)) instead of
//     listing every endpoint.
//
//   - default-plain: the default plan with the fast path turned off (the plain
//     O(N) loop, what every pick cost before it; see scheduler/fastpath.go).
//     From 16 live endpoints on, the default plan takes the fast path.
//
// These case names are relied on by other tooling; add cases, do not rename.
func BenchmarkPick(b *testing.B) {
	cases := []struct {
		profile string
		n       int
		plan    func(testing.TB) *scheduler.Plan
		unique  bool
		churn   int  // publish a new snapshot every churn picks (0: never)
		plain   bool // fast path off
		common  bool // benchSetupCommon
		idle    bool // benchSetupIdle
	}{
		{"default", 16, defaultPlan, false, 0, false, false, false},
		{"default", 128, defaultPlan, false, 0, false, false, false},
		{"default", 1024, defaultPlan, false, 0, false, false, false},
		{"queue-kv", 16, queueKVPlan, false, 0, false, false, false},
		{"default-unique", 16, defaultPlan, true, 0, false, false, false},
		{"default-churn", 16, defaultPlan, true, 200, false, false, false},
		{"default-unique", 1024, defaultPlan, true, 0, false, false, false},
		{"default-churn", 1024, defaultPlan, true, 200, false, false, false},
		{"default-plain", 1024, defaultPlan, false, 0, true, false, false},
		{"default-common", 16, defaultPlan, false, 0, false, true, false},
		{"default-common", 1024, defaultPlan, false, 0, false, true, false},
		{"default-common-unique", 16, defaultPlan, true, 0, false, true, false},
		{"default-common-unique", 1024, defaultPlan, true, 0, false, true, false},
		{"default-idle-unique", 16, defaultPlan, true, 0, false, false, true},
		{"default-idle-unique", 1024, defaultPlan, true, 0, false, false, true},
	}
	for _, tc := range cases {
		b.Run(fmt.Sprintf("profile=%s/endpoints=%d", tc.profile, tc.n), func(b *testing.B) {
			setup := benchSetup
			if tc.common {
				setup = benchSetupCommon
			} else if tc.idle {
				setup = benchSetupIdle
			}
			s, c, ps := setup(b, tc.plan(b), tc.n)
			if tc.plain {
				scheduler.SetFastMin(s, 0)
				s.Publish(s.Snapshot())
			}
			churn := newChurner(s.Snapshot())
			var snaps []*scheduler.Snapshot
			for range 8 {
				snaps = append(snaps, churn.next())
			}
			buf := make([]byte, len(ps[0]))
			var req scheduler.Request
			req.Model = "meta-llama/Llama-3.1-8B-Instruct"
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p := ps[i%len(ps)]
				if tc.unique && tc.common {
					p = uniqueTailAt(buf, p, len(commonPrompt0)+promptShared, uint64(i))
				} else if tc.unique {
					p = uniqueTail(buf, p, uint64(i))
				}
				if tc.churn > 0 && i%tc.churn == tc.churn-1 {
					s.Publish(snaps[(i/tc.churn)%len(snaps)])
				}
				req.SetPrompt(p)
				res, err := s.Pick(c, &req)
				if err != nil {
					b.Fatal(err)
				}
				res.Release()
			}
		})
	}
}

// commonPrompt0 is commonPrompt(), for its length.
var commonPrompt0 = commonPrompt()

// uniqueTailAt is uniqueTail with the shared prefix ending at off.
func uniqueTailAt(buf, p []byte, off int, n uint64) []byte {
	copy(buf, p)
	binary.LittleEndian.PutUint64(buf[off:], n)
	return buf
}

// uniqueTail copies p into buf and writes n where the shared prefix ends, so
// every block from there on is new to the prefix index.
func uniqueTail(buf, p []byte, n uint64) []byte {
	copy(buf, p)
	binary.LittleEndian.PutUint64(buf[promptShared:], n)
	return buf
}

// churner makes new snapshots of one set of endpoints: same handles, same
// metrics, a new scrape time, as a scrape of unchanged servers gives. The
// metrics stay put so that the figure is the cost of a new snapshot, not of
// picks moving to other endpoints (and inserting whole prompts there).
type churner struct{ states []scheduler.EndpointState }

func newChurner(cur *scheduler.Snapshot) *churner {
	return &churner{states: slices.Clone(cur.Endpoints)}
}

func (c *churner) next() *scheduler.Snapshot {
	now := time.Now()
	for i := range c.states {
		c.states[i].M.UpdatedAt = now
	}
	return scheduler.NewSnapshot(c.states, now, 0)
}

// BenchmarkPublish measures what the pool's publisher goroutine pays per new
// snapshot with the default plan: NewSnapshot plus Publish (which runs the
// plugins' PrepareSnapshot: the prefix index aligns its tables).
func BenchmarkPublish(b *testing.B) {
	for _, n := range []int{16, 1024} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			s, _, _ := benchSetup(b, defaultPlan(b), n)
			churn := newChurner(s.Snapshot())
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s.Publish(churn.next())
			}
		})
	}
}
