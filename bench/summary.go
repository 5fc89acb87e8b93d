package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"time"

	"github.com/fastepp/fastepp/loadgen"
)

// Summary is summary.json. Its field names are relied on by other tooling:
// {"scenario", "strategies": [{"name", "ttft_seconds": {"p50","p90","p99"},
// "tpot_seconds", "e2e_seconds", "output_tokens_per_second",
// "goodput_requests_per_second", "prefix_cache_hit_ratio", "errors",
// "per_endpoint_requests", "stages"}]}. With several repeats every figure is
// the median over the repeats (runs.json has each repeat).
type Summary struct {
	Scenario   string            `json:"scenario"`
	Strategies []StrategySummary `json:"strategies"`
}

// Percentiles are latency percentiles in seconds.
type Percentiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
}

// StrategySummary is one strategy over the whole run (all stages, drain
// included).
type StrategySummary struct {
	Name                     string           `json:"name"`
	TTFT                     Percentiles      `json:"ttft_seconds"`
	TPOT                     Percentiles      `json:"tpot_seconds"`
	E2E                      Percentiles      `json:"e2e_seconds"`
	OutputTokensPerSecond    float64          `json:"output_tokens_per_second"`
	GoodputRequestsPerSecond float64          `json:"goodput_requests_per_second"`
	PrefixCacheHitRatio      float64          `json:"prefix_cache_hit_ratio"`
	Errors                   int64            `json:"errors"`
	PerEndpointRequests      map[string]int64 `json:"per_endpoint_requests"`
	Stages                   []StageSummary   `json:"stages"`
}

// StageSummary is one strategy in one stage of the ladder. Latencies and
// throughput are loadgen's for the requests sent in the stage (throughput
// over the stage's send window, or until its last request finished if
// later); the fleet figures (hit ratio, requests per server) and the machine
// figures are over the stage's time window, the last stage's window running
// to the end of the drain.
type StageSummary struct {
	Index                    int              `json:"index"`
	Rate                     float64          `json:"rate"`
	AchievedRate             float64          `json:"achieved_rate"`
	DurationSeconds          float64          `json:"duration_seconds"`
	Completed                int64            `json:"completed"`
	TTFT                     Percentiles      `json:"ttft_seconds"`
	TPOT                     Percentiles      `json:"tpot_seconds"`
	E2E                      Percentiles      `json:"e2e_seconds"`
	OutputTokensPerSecond    float64          `json:"output_tokens_per_second"`
	GoodputRequestsPerSecond float64          `json:"goodput_requests_per_second"`
	PrefixCacheHitRatio      float64          `json:"prefix_cache_hit_ratio"`
	Errors                   int64            `json:"errors"`
	ErrorsByKind             map[string]int64 `json:"errors_by_kind,omitempty"`
	PerEndpointRequests      map[string]int64 `json:"per_endpoint_requests"`
	Preemptions              int64            `json:"preemptions"`
	Machine                  Machine          `json:"machine"`
	// Spread is [min, max] over the repeats of the figures that vary most
	// (nil with one repeat).
	Spread *Spread `json:"spread,omitempty"`
}

// Machine says how busy this machine was: when it, not the simulated
// fleet, limits a run, the comparison measures the machine.
type Machine struct {
	// CPUCores is the bench process's mean CPU use in cores (fleet, picker,
	// gateway and load generator together), of Cores available.
	CPUCores float64 `json:"cpu_cores"`
	Cores    int     `json:"cores"`
	// ScheduleDelayP99 is loadgen's p99 lateness of sends against its plan.
	ScheduleDelayP99 float64 `json:"schedule_delay_p99_seconds"`
	// SimulatorLagShare is the share of the window the simulated servers
	// spent behind their model's timeline for want of CPU.
	SimulatorLagShare float64 `json:"simulator_lag_share"`
	// Limited is set when any of them says the machine was the bottleneck
	// (CPU ≥ 90% of the cores, schedule delay p99 ≥ 50 ms, lag ≥ 2%).
	Limited bool `json:"machine_limited"`
}

// Spread holds [min, max] over repeats.
type Spread struct {
	Repeats               int        `json:"repeats"`
	TTFTP90               [2]float64 `json:"ttft_p90_seconds"`
	OutputTokensPerSecond [2]float64 `json:"output_tokens_per_second"`
	PrefixCacheHitRatio   [2]float64 `json:"prefix_cache_hit_ratio"`
}

func pcts(l loadgen.Latency) Percentiles { return Percentiles{l.P50, l.P90, l.P99} }

func machineOf(w Window, servers int, schedP99 float64) Machine {
	m := Machine{CPUCores: round3(w.Cores()), Cores: runtime.NumCPU(), ScheduleDelayP99: schedP99}
	if w.Seconds > 0 && servers > 0 {
		m.SimulatorLagShare = round4(w.LagSeconds / (w.Seconds * float64(servers)))
	}
	m.Limited = m.CPUCores >= 0.9*float64(m.Cores) || schedP99 >= 0.05 || m.SimulatorLagShare >= 0.02
	return m
}

// stageOf is one run's stage.
func stageOf(rr *RunResult, i int, rate float64) StageSummary {
	var f loadgen.Figures
	if i < len(rr.Loadgen.Stages) {
		f = rr.Loadgen.Stages[i].Figures
	}
	w := rr.Stages[i]
	st := StageSummary{Index: i + 1, Rate: rate, AchievedRate: f.Rate.Achieved, DurationSeconds: f.DurationSeconds,
		Completed: f.Requests.Completed, TTFT: pcts(f.TTFT), TPOT: pcts(f.TPOT), E2E: pcts(f.E2E),
		OutputTokensPerSecond: f.OutputTokensPerSecond, GoodputRequestsPerSecond: f.GoodputRequestsPerSecond,
		PrefixCacheHitRatio: round4(w.HitRatio()), Errors: f.Requests.Failed, ErrorsByKind: f.Errors,
		PerEndpointRequests: perEndpoint(rr.Names, w.PerEndpoint), Preemptions: int64(w.Preemptions),
		Machine: machineOf(w, len(rr.Names), f.ScheduleDelay.P99)}
	if len(st.ErrorsByKind) == 0 {
		st.ErrorsByKind = nil
	}
	return st
}

func perEndpoint(names []string, n []uint64) map[string]int64 {
	m := make(map[string]int64, len(names))
	for i, name := range names {
		if i < len(n) {
			m[name] = int64(n[i])
		}
	}
	return m
}

// strategyOf is one run as a StrategySummary.
func strategyOf(rr *RunResult, rates []float64) StrategySummary {
	f := rr.Loadgen.Figures
	s := StrategySummary{Name: rr.Strategy, TTFT: pcts(f.TTFT), TPOT: pcts(f.TPOT), E2E: pcts(f.E2E),
		OutputTokensPerSecond: f.OutputTokensPerSecond, GoodputRequestsPerSecond: f.GoodputRequestsPerSecond,
		PrefixCacheHitRatio: round4(rr.Total.HitRatio()), Errors: f.Requests.Failed,
		PerEndpointRequests: perEndpoint(rr.Names, rr.Total.PerEndpoint)}
	for i, r := range rates {
		s.Stages = append(s.Stages, stageOf(rr, i, r))
	}
	return s
}

// Summarize builds summary.json: each strategy's median run figure by
// figure over its repeats.
func (res *Result) Summarize() *Summary {
	var rates []float64
	for _, st := range res.Scenario.Workload.Load.Stages {
		rates = append(rates, st.Rate)
	}
	out := &Summary{Scenario: res.Scenario.Name, Strategies: []StrategySummary{}}
	for i, st := range res.Strategies {
		runs := res.Runs[i]
		if len(runs) == 0 {
			continue
		}
		var all []StrategySummary
		for _, rr := range runs {
			all = append(all, strategyOf(rr, rates))
		}
		m := medianStrategy(all)
		m.Name = st.Name
		out.Strategies = append(out.Strategies, m)
	}
	return out
}

// medianStrategy takes the median of every figure over repeats.
func medianStrategy(all []StrategySummary) StrategySummary {
	if len(all) == 1 {
		return all[0]
	}
	get := func(f func(s *StrategySummary) float64) float64 {
		v := make([]float64, len(all))
		for i := range all {
			v[i] = f(&all[i])
		}
		return median(v)
	}
	m := StrategySummary{Name: all[0].Name,
		TTFT:                     medPcts(all, func(s *StrategySummary) Percentiles { return s.TTFT }),
		TPOT:                     medPcts(all, func(s *StrategySummary) Percentiles { return s.TPOT }),
		E2E:                      medPcts(all, func(s *StrategySummary) Percentiles { return s.E2E }),
		OutputTokensPerSecond:    get(func(s *StrategySummary) float64 { return s.OutputTokensPerSecond }),
		GoodputRequestsPerSecond: get(func(s *StrategySummary) float64 { return s.GoodputRequestsPerSecond }),
		PrefixCacheHitRatio:      round4(get(func(s *StrategySummary) float64 { return s.PrefixCacheHitRatio })),
		Errors:                   int64(math.Round(get(func(s *StrategySummary) float64 { return float64(s.Errors) }))),
		PerEndpointRequests:      medMap(all, func(s *StrategySummary) map[string]int64 { return s.PerEndpointRequests }),
	}
	for k := range all[0].Stages {
		ss := make([]StageSummary, len(all))
		for i := range all {
			ss[i] = all[i].Stages[k]
		}
		m.Stages = append(m.Stages, medianStage(ss))
	}
	return m
}

func medianStage(all []StageSummary) StageSummary {
	get := func(f func(s *StageSummary) float64) float64 {
		v := make([]float64, len(all))
		for i := range all {
			v[i] = f(&all[i])
		}
		return median(v)
	}
	span := func(f func(s *StageSummary) float64) [2]float64 {
		lo, hi := math.Inf(1), math.Inf(-1)
		for i := range all {
			v := f(&all[i])
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
		return [2]float64{lo, hi}
	}
	s := StageSummary{Index: all[0].Index, Rate: all[0].Rate,
		AchievedRate:             get(func(s *StageSummary) float64 { return s.AchievedRate }),
		DurationSeconds:          get(func(s *StageSummary) float64 { return s.DurationSeconds }),
		Completed:                int64(math.Round(get(func(s *StageSummary) float64 { return float64(s.Completed) }))),
		OutputTokensPerSecond:    get(func(s *StageSummary) float64 { return s.OutputTokensPerSecond }),
		GoodputRequestsPerSecond: get(func(s *StageSummary) float64 { return s.GoodputRequestsPerSecond }),
		PrefixCacheHitRatio:      round4(get(func(s *StageSummary) float64 { return s.PrefixCacheHitRatio })),
		Errors:                   int64(math.Round(get(func(s *StageSummary) float64 { return float64(s.Errors) }))),
		Preemptions:              int64(math.Round(get(func(s *StageSummary) float64 { return float64(s.Preemptions) }))),
	}
	n := len(all)
	ps := make([]Percentiles, n)
	for i := range all {
		ps[i] = all[i].TTFT
	}
	s.TTFT = medPctsOf(ps)
	for i := range all {
		ps[i] = all[i].TPOT
	}
	s.TPOT = medPctsOf(ps)
	for i := range all {
		ps[i] = all[i].E2E
	}
	s.E2E = medPctsOf(ps)
	maps := make([]map[string]int64, n)
	for i := range all {
		maps[i] = all[i].PerEndpointRequests
	}
	s.PerEndpointRequests = medMapOf(maps)
	s.ErrorsByKind = map[string]int64{}
	for i := range all {
		for k, v := range all[i].ErrorsByKind {
			s.ErrorsByKind[k] += v
		}
	}
	if len(s.ErrorsByKind) == 0 {
		s.ErrorsByKind = nil
	}
	s.Machine = Machine{Cores: all[0].Machine.Cores,
		CPUCores:          round3(get(func(s *StageSummary) float64 { return s.Machine.CPUCores })),
		ScheduleDelayP99:  get(func(s *StageSummary) float64 { return s.Machine.ScheduleDelayP99 }),
		SimulatorLagShare: round4(get(func(s *StageSummary) float64 { return s.Machine.SimulatorLagShare })),
	}
	for i := range all {
		s.Machine.Limited = s.Machine.Limited || all[i].Machine.Limited
	}
	if n > 1 {
		s.Spread = &Spread{Repeats: n,
			TTFTP90:               span(func(s *StageSummary) float64 { return s.TTFT.P90 }),
			OutputTokensPerSecond: span(func(s *StageSummary) float64 { return s.OutputTokensPerSecond }),
			PrefixCacheHitRatio:   span(func(s *StageSummary) float64 { return s.PrefixCacheHitRatio }),
		}
	}
	return s
}

func medPcts(all []StrategySummary, f func(s *StrategySummary) Percentiles) Percentiles {
	ps := make([]Percentiles, len(all))
	for i := range all {
		ps[i] = f(&all[i])
	}
	return medPctsOf(ps)
}

func medPctsOf(ps []Percentiles) Percentiles {
	a, b, c := make([]float64, len(ps)), make([]float64, len(ps)), make([]float64, len(ps))
	for i, p := range ps {
		a[i], b[i], c[i] = p.P50, p.P90, p.P99
	}
	return Percentiles{median(a), median(b), median(c)}
}

func medMap(all []StrategySummary, f func(s *StrategySummary) map[string]int64) map[string]int64 {
	maps := make([]map[string]int64, len(all))
	for i := range all {
		maps[i] = f(&all[i])
	}
	return medMapOf(maps)
}

func medMapOf(maps []map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for k := range maps[0] {
		v := make([]float64, len(maps))
		for i, m := range maps {
			v[i] = float64(m[k])
		}
		out[k] = int64(math.Round(median(v)))
	}
	return out
}

// median of v (mean of the middle two for an even count).
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
func round4(v float64) float64 { return math.Round(v*10000) / 10000 }

// runRecord is one repeat in runs.json.
type runRecord struct {
	Strategy       string           `json:"strategy"`
	Repeat         int              `json:"repeat"`
	Seed           int64            `json:"seed"`
	Servers        []string         `json:"servers"`
	TookSeconds    float64          `json:"took_seconds"`
	Summary        StrategySummary  `json:"summary"`
	Loadgen        *loadgen.Summary `json:"loadgen"`
	CPUSeconds     float64          `json:"cpu_seconds"`
	LagSeconds     float64          `json:"simulator_lag_seconds"`
	PrefixQueries  uint64           `json:"prefix_cache_queries"`
	PrefixHits     uint64           `json:"prefix_cache_hits"`
	PreemptionsAll uint64           `json:"preemptions"`
}

// runsFile is runs.json: the scenario and every repeat in full.
type runsFile struct {
	Scenario    string      `json:"scenario"`
	Description string      `json:"description"`
	Fleet       string      `json:"fleet"`
	Workload    string      `json:"workload"`
	Ladder      string      `json:"ladder"`
	Started     time.Time   `json:"started"`
	TookSeconds float64     `json:"took_seconds"`
	Cores       int         `json:"cores"`
	Strategies  []string    `json:"strategies"`
	Runs        []runRecord `json:"runs"`
}

// WriteFiles writes summary.json, runs.json and report.html into dir.
func (res *Result) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	sum := res.Summarize()
	if err := writeJSON(filepath.Join(dir, "summary.json"), sum); err != nil {
		return err
	}
	sc := res.Scenario
	rf := runsFile{Scenario: sc.Name, Description: sc.Description, Fleet: sc.FleetLine(), Workload: sc.WorkloadLine(),
		Ladder: sc.LadderLine(), Started: res.Started.UTC(), TookSeconds: round3(res.Took.Seconds()), Cores: runtime.NumCPU()}
	var rates []float64
	for _, st := range sc.Workload.Load.Stages {
		rates = append(rates, st.Rate)
	}
	for i, st := range res.Strategies {
		rf.Strategies = append(rf.Strategies, st.Name)
		for _, rr := range res.Runs[i] {
			rf.Runs = append(rf.Runs, runRecord{Strategy: rr.Strategy, Repeat: rr.Repeat + 1, Seed: rr.Seed, Servers: rr.Names,
				TookSeconds: round3(rr.Took.Seconds()), Summary: strategyOf(rr, rates), Loadgen: rr.Loadgen,
				CPUSeconds: round3(rr.Total.CPUSeconds), LagSeconds: round3(rr.Total.LagSeconds),
				PrefixQueries: rr.Total.PrefixQueries, PrefixHits: rr.Total.PrefixHits, PreemptionsAll: rr.Total.Preemptions})
		}
	}
	if err := writeJSON(filepath.Join(dir, "runs.json"), rf); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "report.html"))
	if err != nil {
		return err
	}
	if err := res.WriteHTML(f, sum); err != nil {
		f.Close()
		return fmt.Errorf("report.html: %w", err)
	}
	return f.Close()
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
