// Package plan answers "how many replicas do I need?" in virtual time, with
// the picker in the loop. It owns the fleet simulation (one simulator/engine
// per replica driven by a discrete-event loop, no sockets, no sleeping), the
// routing strategies as they run in the bench (round-robin and least-request
// as the gateway does them, epp as fastepp's own scheduler.Scheduler and
// plugins built from an EndpointPickerConfig), and the bisection over replica
// counts behind `loadgen plan --simulate`.
//
// The picker sees the simulated servers through the same data structures the
// scraper fills: each replica is "scraped" every ScrapeInterval at its own
// phase into a scheduler.Metrics (Waiting, Running, KVUsage, the cache
// configuration, UpdatedAt and InflightAtScrape read before the scrape, as
// endpoints' scraper does), and a publisher builds a scheduler.Snapshot from
// the last scrapes once per interval and publishes it. Metrics are therefore
// up to two intervals old at pick time, as in the server. In-flight counts
// live on scheduler.Handles: Pick charges them and the request's end releases
// them, as extproc does at response end. No metrics page is written or parsed.
//
// What is not modelled: network and proxy latency, GPU telemetry (plugins
// that read it see none), LoRA adapters. Plugins that read the pick's clock
// (scheduler.Cycle.Now) see the wall clock, not the virtual one. The
// scheduler's tie-breaks are seeded with Options.Seed, so a plan repeats
// exactly.
package plan

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/fastepp/fastepp/config"
	eppconfig "github.com/fastepp/fastepp/configs/epp"
	"github.com/fastepp/fastepp/loadgen"
	"github.com/fastepp/fastepp/scheduler"
	"github.com/fastepp/fastepp/simulator"
	"github.com/fastepp/fastepp/simulator/engine"
)

// Strategy names.
const (
	RoundRobin   = "round-robin"
	LeastRequest = "least-request"
	EPP          = "epp"
)

// Strategy is how the simulated gateway routes.
type Strategy struct {
	// Name is round-robin, least-request or epp.
	Name string
	// EPPConfig is the EndpointPickerConfig YAML (epp only); Source says
	// where it came from.
	EPPConfig []byte
	Source    string
}

// ParseStrategy builds a strategy. eppConfigFile, when set with epp, names
// the EndpointPickerConfig to run instead of configs/epp/recommended.yaml
// (the epp binary's default).
func ParseStrategy(name, eppConfigFile string) (Strategy, error) {
	switch name {
	case RoundRobin, LeastRequest:
		if eppConfigFile != "" {
			return Strategy{}, fmt.Errorf("--epp-config: expected only with --strategy epp, found it with %s", name)
		}
		return Strategy{Name: name}, nil
	case EPP:
		if eppConfigFile == "" {
			b, err := eppconfig.FS.ReadFile(eppconfig.Recommended)
			if err != nil {
				return Strategy{}, err
			}
			return Strategy{Name: EPP, EPPConfig: b, Source: "configs/epp/" + eppconfig.Recommended}, nil
		}
		b, err := os.ReadFile(eppConfigFile)
		if err != nil {
			return Strategy{}, fmt.Errorf("--epp-config: %w", err)
		}
		return Strategy{Name: EPP, EPPConfig: b, Source: eppConfigFile}, nil
	}
	return Strategy{}, fmt.Errorf("--strategy: expected round-robin, least-request or epp, found %q", name)
}

// SLO is an objective on percentiles: the Percentile-th TTFT and TPOT must be
// at most TTFT and TPOT (a zero objective is not checked).
type SLO struct {
	TTFT, TPOT time.Duration
	Percentile float64 // e.g. 90
}

// SLOFrom reads loadgen's slo block: percentile when given, else attainment×100.
func SLOFrom(c loadgen.SLOConfig) SLO {
	p := c.Percentile
	if p == 0 {
		p = c.Attainment * 100
	}
	if p == 0 {
		p = 90
	}
	return SLO{TTFT: time.Duration(c.TTFT), TPOT: time.Duration(c.TPOT), Percentile: p}
}

func (s SLO) String() string {
	var parts []string
	if s.TTFT > 0 {
		parts = append(parts, fmt.Sprintf("p%s TTFT ≤ %v", fmtF(s.Percentile), s.TTFT))
	}
	if s.TPOT > 0 {
		parts = append(parts, fmt.Sprintf("p%s TPOT ≤ %v", fmtF(s.Percentile), s.TPOT))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// Options describe one simulated fleet.
type Options struct {
	// Server is one replica (simulator.ServerSpec.Resolve); every replica is
	// the same. Its ModelName is what requests ask for.
	Server   simulator.Config
	Replicas int
	Strategy Strategy
	// ScrapeInterval is how often each replica's metrics are read and a
	// snapshot published (epp's --refresh-metrics-interval, default 50ms).
	ScrapeInterval time.Duration
	// StalenessThreshold is epp's --metrics-staleness-threshold (default 2s).
	StalenessThreshold time.Duration
	// SLO decides goodput, and lets a run stop as soon as it cannot meet it.
	SLO SLO
	// NoEarlyStop runs every request even when the SLO is already missed.
	NoEarlyStop bool
	// Seed seeds least-request's random draws, the scrape phases and epp's
	// tie-breaks.
	Seed uint64
	// Registry builds the EndpointPickerConfig's plugins (nil:
	// config.NewRegistry(), what epp runs); a registry with extra types
	// plans with plugins of your own.
	Registry *scheduler.Registry
}

// Figures are a run's latency percentiles, in seconds.
type Figures struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"-"`
	// At is the SLO's percentile.
	At float64 `json:"-"`
}

// Result is one simulated run.
type Result struct {
	Replicas  int
	Requests  int // arrived (sent by the client)
	Completed int
	Failed    int // refused by the picker or the server
	TTFT      Figures
	TPOT      Figures
	// GoodputRatio is the share of arrived requests that met every objective.
	GoodputRatio float64
	// OutputTokensPerSecond and RequestsPerSecond are over the run's span
	// (the start of the run to the last completion, as loadgen counts them).
	OutputTokensPerSecond float64
	RequestsPerSecond     float64
	Span                  time.Duration
	// MeetsSLO: the SLO's percentiles are within the objectives and at most
	// the allowed share of requests failed.
	MeetsSLO bool
	// StoppedEarly: the run stopped once the SLO could no longer be met; its
	// latency figures are then lower bounds (unfinished requests count with
	// their age so far).
	StoppedEarly bool
	Steps        int64 // engine steps simulated
	Picks        int64
	Publishes    int64
	// PerReplica counts the requests routed to each replica.
	PerReplica []int

	inflightLeft int64 // Σ handles' in-flight counts at the end (0 unless stopped early)
}

// Source yields a workload's requests in arrival order.
type Source interface {
	Next() (loadgen.Planned, bool)
}

type flight struct {
	r       *engine.Request
	at      time.Duration
	h       *scheduler.Handle // epp: the handle charged by Pick
	tokens  int64
	ttftOK  bool
	checked bool
}

type replica struct {
	e        *engine.Engine
	h        *scheduler.Handle
	step     *engine.Step
	active   []*flight
	inflight int64 // gateway-side count (least-request)
	nextScr  time.Duration
	m        scheduler.Metrics
	scraped  bool
}

const never = time.Duration(math.MaxInt64)

// base anchors virtual time to a wall-clock instant for the snapshot's
// UpdatedAt and BuiltAt fields (only differences matter).
var base = time.Unix(1_700_000_000, 0)

// Simulate runs src through a fleet in virtual time and returns its figures.
// expected is the number of requests src will yield (it sizes the SLO's
// allowance for early stopping; 0 disables early stopping).
func Simulate(opt Options, src Source, expected int) (*Result, error) {
	if opt.Replicas < 1 {
		return nil, fmt.Errorf("replicas: expected ≥ 1, found %d", opt.Replicas)
	}
	if opt.ScrapeInterval == 0 {
		opt.ScrapeInterval = 50 * time.Millisecond
	}
	if opt.ScrapeInterval < time.Millisecond {
		return nil, fmt.Errorf("scrape interval: expected ≥ 1ms, found %v", opt.ScrapeInterval)
	}
	if opt.StalenessThreshold == 0 {
		opt.StalenessThreshold = 2 * time.Second
	}
	model := opt.Server.ModelName
	rng := rand.New(rand.NewPCG(opt.Seed, 0x706c616e))
	reps := make([]*replica, opt.Replicas)
	byHandle := map[*scheduler.Handle]int{}
	for i := range reps {
		e, err := engine.New(opt.Server.Engine)
		if err != nil {
			return nil, err
		}
		h := scheduler.NewHandle(scheduler.Endpoint{Name: fmt.Sprintf("replica-%d", i),
			Addr: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), Port: 8000})
		reps[i] = &replica{e: e, h: h, nextScr: time.Duration(rng.Int64N(int64(opt.ScrapeInterval)))}
		byHandle[h] = i
	}
	var sched *scheduler.Scheduler
	var cycle *scheduler.Cycle
	var sreq scheduler.Request
	models := []string{model}
	switch opt.Strategy.Name {
	case RoundRobin, LeastRequest:
	case EPP:
		reg := opt.Registry
		if reg == nil {
			reg = config.NewRegistry()
		}
		l, err := config.Load(opt.Strategy.EPPConfig, reg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", opt.Strategy.Source, err)
		}
		sched = scheduler.New(l.Plan)
		sched.SetSeed(opt.Seed) // tie-breaks repeat with the plan's seed
		cycle = sched.NewCycle()
	default:
		return nil, fmt.Errorf("strategy: expected round-robin, least-request or epp, found %q", opt.Strategy.Name)
	}
	nextPub := never
	if sched == nil {
		for _, r := range reps {
			r.nextScr = never
		}
	} else {
		nextPub = 0
	}

	res := &Result{Replicas: opt.Replicas, PerReplica: make([]int, opt.Replicas)}
	// allowed is how many requests may miss each objective (TTFT, TPOT) with
	// the percentile still within it (−1: no early stop). Failed requests
	// miss both.
	allowed := -1
	if expected > 0 && !opt.NoEarlyStop && (opt.SLO.TTFT > 0 || opt.SLO.TPOT > 0) {
		allowed = int(math.Floor((1 - opt.SLO.Percentile/100) * float64(expected)))
	}
	var ttfts, tpots []float64
	var ttftMiss, tpotMiss, outTokens int
	var last time.Duration
	var times []time.Duration
	var toks []uint32
	states := make([]scheduler.EndpointState, len(reps))
	rr := 0
	nextCheck := 5 * time.Second

	finish := func(r *replica, f *flight, now time.Duration) {
		var p engine.Progress
		times, p = r.e.Progress(f.r, 0, times[:0])
		if f.h != nil {
			f.h.Release(f.tokens)
		}
		r.inflight--
		last = max(last, now)
		if len(times) == 0 || p.Reason == engine.FinishAbort {
			res.Failed++
			if !f.checked {
				ttftMiss++
			}
			tpotMiss++
			return
		}
		res.Completed++
		outTokens += len(times)
		ttft := times[0] - f.at
		ttfts = append(ttfts, ttft.Seconds())
		good := opt.SLO.TTFT == 0 || ttft <= opt.SLO.TTFT
		if !good && !f.checked {
			ttftMiss++
		}
		if n := len(times); n > 1 {
			tpot := (times[n-1] - times[0]) / time.Duration(n-1)
			tpots = append(tpots, tpot.Seconds())
			if opt.SLO.TPOT > 0 && tpot > opt.SLO.TPOT {
				good = false
				tpotMiss++
			}
		}
		if good {
			res.GoodputRatio++ // a count until the end
		}
	}
	complete := func(r *replica) {
		s := r.step
		now := s.End
		r.e.Complete(s)
		res.Steps++
		kept := r.active[:0]
		for _, f := range r.active {
			select {
			case <-f.r.Ready:
				finish(r, f, now)
			default:
				kept = append(kept, f)
			}
		}
		clear(r.active[len(kept):])
		r.active = kept
		r.step = r.e.Plan(now)
	}
	scrape := func(r *replica, now time.Duration) {
		infl := r.h.Inflight() // read before the scrape, as the scraper does
		st := r.e.Stats()
		r.m = scheduler.Metrics{Waiting: st.Waiting, Running: st.Running, KVUsage: st.KVUsage, Models: models,
			BlockSize: st.BlockSize, NumGPUBlocks: st.NumGPUBlocks, UpdatedAt: base.Add(now), InflightAtScrape: infl}
		r.scraped = true
		r.nextScr = now + opt.ScrapeInterval
	}
	publish := func(now time.Duration) {
		for i, r := range reps {
			states[i] = scheduler.EndpointState{H: r.h, M: r.m, Healthy: r.scraped}
		}
		sched.Publish(scheduler.NewSnapshot(states, base.Add(now), opt.StalenessThreshold))
		res.Publishes++
		nextPub = now + opt.ScrapeInterval
	}
	route := func(p *loadgen.Planned) (int, *scheduler.Handle, int64, error) {
		switch opt.Strategy.Name {
		case RoundRobin:
			i := rr % len(reps)
			rr++
			return i, nil, 0, nil
		case LeastRequest: // as gateway.pickDirect: two distinct draws, fewer in flight, first on a tie
			if len(reps) == 1 {
				return 0, nil, 0, nil
			}
			a := rng.IntN(len(reps))
			b := rng.IntN(len(reps) - 1)
			if b >= a {
				b++
			}
			if reps[b].inflight < reps[a].inflight {
				return b, nil, 0, nil
			}
			return a, nil, 0, nil
		}
		sreq.Reset()
		sreq.Model = model
		sreq.SetPrompt(promptBytes(p))
		out, err := sched.Pick(cycle, &sreq)
		res.Picks++
		if err != nil {
			return 0, nil, 0, err
		}
		return byHandle[out.Endpoints[0]], out.Endpoints[0], out.Tokens, nil
	}
	arrive := func(p *loadgen.Planned) {
		res.Requests++
		i, h, tokens, err := route(p)
		if err != nil {
			res.Failed++
			ttftMiss++
			tpotMiss++
			return
		}
		r := reps[i]
		res.PerReplica[i]++
		toks = tokenize(toks[:0], p)
		f := &flight{r: engine.NewRequest(toks, p.MaxTokens, false, "", uint64(p.Index)), at: p.At, h: h, tokens: tokens}
		f.r.Ready = make(chan struct{}, 1)
		r.inflight++
		if err := r.e.Submit(f.r, p.At); err != nil {
			if h != nil {
				h.Release(tokens)
			}
			r.inflight--
			res.Failed++
			ttftMiss++
			tpotMiss++
			return
		}
		r.active = append(r.active, f)
		if r.step == nil {
			r.step = r.e.Plan(p.At)
		}
	}
	// check counts requests already past the TTFT objective without a first token.
	check := func(now time.Duration) {
		if opt.SLO.TTFT == 0 {
			return
		}
		for _, r := range reps {
			for _, f := range r.active {
				if f.checked || now-f.at <= opt.SLO.TTFT {
					continue
				}
				if _, p := r.e.Progress(f.r, 1<<30, nil); p.Output == 0 {
					f.checked = true
					ttftMiss++
				}
			}
		}
	}

	if sched != nil {
		// As the bench's stack does before traffic: every replica scraped
		// once; later scrapes follow at each replica's own phase.
		for _, r := range reps {
			phase := r.nextScr
			scrape(r, 0)
			r.nextScr = phase
		}
	}
	next, more := src.Next()
	for {
		// The earliest event; on a tie: step ends, then scrapes, the
		// publisher, and arrivals last (they see everything due at their time).
		t, kind, who := never, 0, -1
		for i, r := range reps {
			if r.step != nil && r.step.End < t {
				t, kind, who = r.step.End, 1, i
			}
		}
		for i, r := range reps {
			if r.nextScr < t {
				t, kind, who = r.nextScr, 2, i
			}
		}
		if nextPub < t {
			t, kind = nextPub, 3
		}
		if more && next.At < t {
			t, kind = next.At, 4
		}
		if t == never {
			break
		}
		if kind != 1 && kind != 4 && !more && idle(reps) {
			break // only scrapes left
		}
		if allowed >= 0 && t >= nextCheck {
			check(t)
			nextCheck = t + 5*time.Second
		}
		if allowed >= 0 && (ttftMiss > allowed && opt.SLO.TTFT > 0 || tpotMiss > allowed && opt.SLO.TPOT > 0) {
			res.StoppedEarly = true
			break
		}
		switch kind {
		case 1:
			complete(reps[who])
		case 2:
			scrape(reps[who], t)
		case 3:
			publish(t)
		case 4:
			arrive(&next)
			next, more = src.Next()
		}
		if kind == 4 || kind == 1 {
			last = max(last, t)
		}
	}
	if res.StoppedEarly { // unfinished requests count with their age so far
		for _, r := range reps {
			for _, f := range r.active {
				times, _ = r.e.Progress(f.r, 0, times[:0])
				if len(times) == 0 {
					ttfts = append(ttfts, (last - f.at).Seconds())
				}
			}
		}
	}
	for _, r := range reps {
		res.inflightLeft += r.h.Inflight()
	}
	if res.Requests == 0 {
		return nil, errors.New("workload: expected at least one request, found none")
	}
	slices.Sort(ttfts)
	slices.Sort(tpots)
	pct := opt.SLO.Percentile
	if pct == 0 {
		pct = 90
	}
	res.TTFT = figures(ttfts, pct)
	res.TPOT = figures(tpots, pct)
	res.GoodputRatio = round6(res.GoodputRatio / float64(res.Requests))
	if last > 0 {
		res.Span = last
		res.OutputTokensPerSecond = round6(float64(outTokens) / res.Span.Seconds())
		res.RequestsPerSecond = round6(float64(res.Completed) / res.Span.Seconds())
	}
	failShare := float64(res.Failed) / float64(res.Requests)
	res.MeetsSLO = !res.StoppedEarly && failShare <= 1-pct/100 &&
		(opt.SLO.TTFT == 0 || res.TTFT.At <= opt.SLO.TTFT.Seconds()) &&
		(opt.SLO.TPOT == 0 || res.TPOT.At <= opt.SLO.TPOT.Seconds())
	return res, nil
}

func idle(reps []*replica) bool {
	for _, r := range reps {
		if r.step != nil || len(r.active) > 0 {
			return false
		}
	}
	return true
}

// promptBytes is the prompt as epp's body scan sees it: the completion
// prompt, or the chat messages' contents one after another.
func promptBytes(p *loadgen.Planned) []byte {
	if p.Messages == nil {
		return []byte(p.Prompt)
	}
	n := 0
	for _, m := range p.Messages {
		n += len(m.Content)
	}
	b := make([]byte, 0, n)
	for _, m := range p.Messages {
		b = append(b, m.Content...)
	}
	return b
}

// Token IDs of the simulator's chat template markers (simulator/openai.go).
const (
	tokBOS         = 128000
	tokStartHeader = 128006
	tokEndHeader   = 128007
	tokEOT         = 128009
)

// tokenize turns a request into the token IDs the simulator's server would
// compute for it (its BOS, and its Llama-3-style chat template for chat).
func tokenize(dst []uint32, p *loadgen.Planned) []uint32 {
	dst = append(dst, tokBOS)
	if p.Messages == nil {
		return engine.Tokenize(dst, p.Prompt)
	}
	for _, m := range p.Messages {
		dst = append(dst, tokStartHeader)
		dst = engine.Tokenize(dst, m.Role)
		dst = append(dst, tokEndHeader)
		dst = engine.Tokenize(dst, "\n\n"+m.Content)
		dst = append(dst, tokEOT)
	}
	dst = append(dst, tokStartHeader)
	dst = engine.Tokenize(dst, "assistant")
	dst = append(dst, tokEndHeader)
	return engine.Tokenize(dst, "\n\n")
}

// figures takes percentiles of sorted seconds (linear interpolation).
func figures(sorted []float64, at float64) Figures {
	return Figures{P50: round6(percentile(sorted, 50)), P90: round6(percentile(sorted, 90)),
		P99: round6(percentile(sorted, 99)), At: round6(percentile(sorted, at))}
}

func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	pos := q / 100 * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(sorted)-1)
	return sorted[lo] + (sorted[hi]-sorted[lo])*(pos-float64(lo))
}

func round6(f float64) float64 { return math.Round(f*1e6) / 1e6 }

func fmtF(f float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.3f", f), "0"), ".")
}

// ServerConfig resolves one replica as `simulator --gpu G --model-profile M
// --tensor-parallel-size N` would start it (simulator.DefaultSpec otherwise,
// the embedded profiles); modelName, when set, is the served model name.
func ServerConfig(gpu, modelProfile string, tp int, modelName string) (simulator.Config, error) {
	prof, err := engine.DefaultProfiles()
	if err != nil {
		return simulator.Config{}, err
	}
	sp := simulator.DefaultSpec()
	if gpu != "" {
		sp.GPU = gpu
	}
	if modelProfile != "" {
		sp.ModelProfile = modelProfile
	}
	if tp != 0 {
		sp.TensorParallelSize = tp
	}
	sp.Model = modelName
	if _, err := prof.GPU(sp.GPU); err != nil {
		return simulator.Config{}, fmt.Errorf("--gpu: %w (known: %s)", err, strings.Join(prof.GPUNames(), ", "))
	}
	if _, err := prof.Model(sp.ModelProfile); err != nil {
		return simulator.Config{}, fmt.Errorf("--model-profile: %w (known: %s)", err, strings.Join(prof.ModelNames(), ", "))
	}
	cfg, err := sp.Resolve(prof, "replica", 0)
	if err != nil {
		return simulator.Config{}, err
	}
	if cfg.ModelName == "" {
		cfg.ModelName = cfg.Engine.Model.ServedName
	}
	return cfg, nil
}
