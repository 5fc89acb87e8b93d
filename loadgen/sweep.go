package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"time"
)

// Probe is one fixed-rate stage of a sweep.
type Probe struct {
	Rate         float64 `json:"rate"`
	Achieved     float64 `json:"achieved_rate"`
	Throughput   float64 `json:"requests_per_second"`
	Goodput      float64 `json:"goodput_requests_per_second"`
	Attainment   float64 `json:"slo_attainment"`
	MeetsSLO     bool    `json:"meets_slo"`
	Saturated    bool    `json:"saturated"`
	Reason       string  `json:"reason,omitempty"`
	TTFTP90      float64 `json:"ttft_p90_seconds"`
	TPOTP90      float64 `json:"tpot_p90_seconds"`
	E2EP90       float64 `json:"e2e_p90_seconds"`
	OutputTokens float64 `json:"output_tokens_per_second"`
	Sent         int64   `json:"sent"`
	Failed       int64   `json:"failed"`
}

// SweepResult is sweep.json: the highest rate meeting the SLO and the
// saturation point, bracketed by the probes that found them.
type SweepResult struct {
	Tool     string            `json:"tool"`
	Model    string            `json:"model"`
	BaseURL  string            `json:"base_url"`
	Replicas int               `json:"replicas"`
	SLO      map[string]string `json:"slo"`
	// MaxRateMeetingSLO is the highest probed rate that met the SLO (with at
	// least slo.attainment of requests meeting every objective) unsaturated.
	MaxRateMeetingSLO float64 `json:"max_rate_meeting_slo"`
	// FirstRateFailingSLO is the lowest probed rate that did not (0 = none).
	FirstRateFailingSLO float64 `json:"first_rate_failing_slo"`
	// SaturationRate is the highest probed rate the server kept up with;
	// SaturatedAt the lowest at which it did not (0 = never saturated up to
	// the highest probe).
	SaturationRate float64 `json:"saturation_rate"`
	SaturatedAt    float64 `json:"saturated_at"`
	Probes         []Probe `json:"probes"`
	// Interrupted says the sweep was stopped (Ctrl-C, an error) before it
	// finished: the figures above are what the completed probes measured.
	Interrupted string `json:"interrupted,omitempty"`
}

// SweepOptions tune a sweep.
type SweepOptions struct {
	// OnProbe is called after every probe.
	OnProbe func(Probe)
	// Window is the early-stop window (default 1s).
	Window time.Duration
	Client *Client
}

// Sweep finds the saturation point and the highest rate meeting the SLO by
// running one fixed-rate stage per probe: doubling from sweep.min_rate until
// a probe fails, then bisecting. Stages stop early when latency grows
// without bound.
func Sweep(ctx context.Context, cfg *Config, opt SweepOptions) (*SweepResult, error) {
	if err := cfg.Normalize(); err != nil {
		return nil, err
	}
	if cfg.Load.Type != LoadConstant && cfg.Load.Type != LoadPoisson {
		return nil, &FieldError{"load.type", "constant or poisson for a sweep (it varies the rate)", quote(cfg.Load.Type)}
	}
	w := cfg.Sweep
	minRate, maxRate := w.MinRate, w.MaxRate
	if minRate == 0 {
		minRate = 1
	}
	if maxRate == 0 {
		maxRate = 10000
	}
	dur := time.Duration(w.StageDuration)
	if dur == 0 {
		dur = 30 * time.Second
	}
	prec := w.Precision
	if prec == 0 {
		prec = 0.05
	}
	maxProbes := w.MaxProbes
	if maxProbes == 0 {
		maxProbes = 12
	}
	replicas := w.Replicas
	if replicas == 0 {
		replicas = 1
	}
	res := &SweepResult{Tool: "fastepp loadgen", Model: cfg.Server.ModelName, BaseURL: cfg.Server.BaseURL,
		Replicas: replicas, SLO: sloMap(cfg.SLO)}
	probe := func(rate float64) (Probe, error) {
		c := *cfg
		c.Load.Stages = []Stage{{Rate: rate, Duration: Duration(dur)}}
		c.Report.Formats = nil
		sum, err := Run(ctx, &c, Options{EarlyStop: true, EarlyStopWindow: opt.Window, Client: opt.Client})
		if err != nil {
			return Probe{}, err
		}
		p := judge(rate, sum, cfg.SLO, opt.Window)
		res.Probes = append(res.Probes, p)
		if opt.OnProbe != nil {
			opt.OnProbe(p)
		}
		return p, nil
	}
	good := func(p Probe) bool { return p.MeetsSLO && !p.Saturated }

	lo, hi := 0.0, 0.0 // SLO boundary: lo good, hi bad (0 = unknown)
	satLo, satHi := 0.0, 0.0
	// Whatever ends the sweep, the result records what the completed probes
	// measured (an interrupted sweep is still a lower bound worth keeping).
	finish := func(err error) (*SweepResult, error) {
		res.MaxRateMeetingSLO, res.FirstRateFailingSLO = lo, hi
		res.SaturationRate, res.SaturatedAt = satLo, satHi
		sort.Slice(res.Probes, func(i, j int) bool { return res.Probes[i].Rate < res.Probes[j].Rate })
		if err != nil {
			res.Interrupted = err.Error()
		}
		return res, err
	}
	note := func(p Probe) {
		if good(p) {
			lo = math.Max(lo, p.Rate)
		} else if hi == 0 || p.Rate < hi {
			hi = p.Rate
		}
		if p.Saturated {
			if satHi == 0 || p.Rate < satHi {
				satHi = p.Rate
			}
		} else {
			satLo = math.Max(satLo, p.Rate)
		}
	}
	// Phase 1: double until a probe fails the SLO or maxRate is reached.
	for r := minRate; len(res.Probes) < maxProbes; r = math.Min(2*r, maxRate) {
		p, err := probe(r)
		if err != nil {
			return finish(err)
		}
		note(p)
		if !good(p) || r >= maxRate {
			break
		}
	}
	// Phase 2: bisect the SLO boundary.
	for hi > 0 && len(res.Probes) < maxProbes && (hi-lo)/hi > prec {
		p, err := probe(bisectMid(lo, hi))
		if err != nil {
			return finish(err)
		}
		note(p)
	}
	// Phase 3: bisect the saturation boundary with the probes left.
	for satHi > 0 && len(res.Probes) < maxProbes && (satHi-satLo)/satHi > prec {
		p, err := probe(bisectMid(satLo, satHi))
		if err != nil {
			return finish(err)
		}
		note(p)
	}
	return finish(nil)
}

func bisectMid(lo, hi float64) float64 {
	if lo == 0 {
		return hi / 2
	}
	return math.Round((lo+hi)/2*1000) / 1000
}

// judge decides whether a probe met the SLO and whether the server kept up.
func judge(rate float64, sum *Summary, slo SLOConfig, window time.Duration) Probe {
	f := sum.Figures
	p := Probe{Rate: rate, Achieved: f.Rate.Achieved, Throughput: f.RequestsPerSecond, Goodput: f.GoodputRequestsPerSecond,
		TTFTP90: f.TTFT.P90, TPOTP90: f.TPOT.P90, E2EP90: f.E2E.P90, OutputTokens: f.OutputTokensPerSecond,
		Sent: f.Requests.Sent, Failed: f.Requests.Failed}
	if f.Requests.Sent > 0 {
		p.Attainment = round6(float64(f.GoodRequests) / float64(f.Requests.Sent))
	}
	switch {
	case sum.EarlyStopped:
		p.Saturated = true
		for _, st := range sum.Stages {
			if st.StopReason != "" {
				p.Reason = "stopped early: " + st.StopReason
			}
		}
	case f.Requests.Sent > 0 && float64(f.Requests.Failed) > 0.05*float64(f.Requests.Sent):
		p.Saturated = true
		p.Reason = fmt.Sprintf("%d of %d requests failed", f.Requests.Failed, f.Requests.Sent)
	default:
		if r := fallingBehind(sum.Timeline, sum.DurationSeconds, sum.Stages); r != "" {
			p.Saturated = true
			p.Reason = r
		} else if r := ttftDrift(sum.Timeline); r != "" {
			p.Saturated = true
			p.Reason = r
		}
	}
	p.MeetsSLO = p.Attainment >= slo.Attainment
	return p
}

// fallingBehind reports a server that finishes fewer requests per second
// than arrive: over the second half of the send window, completions (and
// failures) fall short of sends by more than three standard deviations of
// Poisson noise.
func fallingBehind(tl []TimelineSecond, _ float64, stages []StageSummary) string {
	if len(stages) != 1 || stages[0].DurationSeconds == 0 {
		return ""
	}
	win := 0
	if st := stages[0]; st.Rate.Requested != nil && *st.Rate.Requested > 0 {
		win = int(float64(st.Requests.Planned) / *st.Rate.Requested) // whole seconds of the send window
	}
	if win < 2 || win > len(tl) {
		return ""
	}
	var sent, done int64
	for _, s := range tl[win/2 : win] {
		sent += s.Sent
		done += s.Completed + s.Failed
	}
	if float64(done) < float64(sent)-3*math.Sqrt(float64(sent))-2 {
		secs := float64(win - win/2)
		return fmt.Sprintf("finished %.1f req/s while %.1f req/s arrived (second half of the stage)", float64(done)/secs, float64(sent)/secs)
	}
	return ""
}

// ttftDrift reports latency that kept growing through a stage: the mean
// TTFT of the last quarter of the seconds is over twice the first quarter's.
func ttftDrift(tl []TimelineSecond) string {
	if len(tl) < 4 {
		return ""
	}
	q := len(tl) / 4
	mean := func(s []TimelineSecond) float64 {
		var sum, n int64
		for _, x := range s {
			sum += x.TTFTSumUS
			n += x.TTFTCount
		}
		if n == 0 {
			return 0
		}
		return float64(sum) / float64(n)
	}
	a, b := mean(tl[:q]), mean(tl[len(tl)-q:])
	if a > 0 && b > 2*a && b-a > 50_000 {
		return fmt.Sprintf("mean TTFT grew from %.0f ms to %.0f ms during the stage", a/1000, b/1000)
	}
	return ""
}

// WriteJSON writes the sweep result as indented JSON.
func (s *SweepResult) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}

// ReadSweep reads a sweep.json.
func ReadSweep(path string) (*SweepResult, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s SweepResult
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: expected a loadgen sweep.json: %w", path, err)
	}
	if s.Replicas < 1 {
		return nil, fmt.Errorf("%s: replicas: expected >= 1, found %d", path, s.Replicas)
	}
	return &s, nil
}

// Plan is a capacity plan: replicas needed for a target rate under the SLO.
type Plan struct {
	TargetRate float64 `json:"target_rate"`
	Margin     float64 `json:"margin"`
	// PerReplicaRate is the SLO-meeting rate one replica sustains.
	PerReplicaRate float64 `json:"per_replica_rate"`
	Replicas       int     `json:"replicas"`
	// Capacity is Replicas × PerReplicaRate (or the measured rate when the
	// plan uses a sweep at exactly that replica count).
	Capacity float64 `json:"capacity"`
	// Headroom is Capacity / TargetRate − 1.
	Headroom float64 `json:"headroom"`
	Basis    string  `json:"basis"`
	// Warnings say when the plan is weaker than it looks (no probe failed,
	// so capacity is a lower bound; an interrupted sweep).
	Warnings []string `json:"warnings,omitempty"`
}

// MakePlan picks the replica count for target requests/s with the given
// margin (0.2 = 20% spare) from one or more sweeps. A sweep run at exactly
// the needed replica count is used as measured; otherwise the per-replica
// rate of the sweep with the most replicas is scaled linearly (stated in
// Basis, since routing and prefix reuse make real scaling differ).
func MakePlan(sweeps []*SweepResult, target, margin float64) (*Plan, error) {
	if !(target > 0) || math.IsInf(target, 0) {
		return nil, fmt.Errorf("--target-rate: expected a rate > 0, found %v", target)
	}
	if margin < 0 || margin >= 10 || math.IsNaN(margin) {
		return nil, fmt.Errorf("--margin: expected a share in [0, 10), found %v", margin)
	}
	if len(sweeps) == 0 {
		return nil, errors.New("expected at least one sweep result, found none")
	}
	need := target * (1 + margin)
	sorted := append([]*SweepResult(nil), sweeps...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Replicas < sorted[j].Replicas })
	for _, s := range sorted {
		if s.MaxRateMeetingSLO >= need {
			p := &Plan{TargetRate: target, Margin: margin, PerReplicaRate: s.MaxRateMeetingSLO / float64(s.Replicas),
				Replicas: s.Replicas, Capacity: s.MaxRateMeetingSLO, Headroom: round6(s.MaxRateMeetingSLO/target - 1),
				Basis: fmt.Sprintf("measured: a sweep of a fleet of %d replica(s) (as recorded by sweep --replicas) met the SLO up to %.2f req/s", s.Replicas, s.MaxRateMeetingSLO)}
			p.Warnings = sweepWarnings(s)
			return p, nil
		}
	}
	big := sorted[len(sorted)-1]
	if big.MaxRateMeetingSLO <= 0 {
		if big.Interrupted != "" {
			return nil, fmt.Errorf("sweep of %d replica(s): expected a probe meeting the SLO, found none before it was interrupted (%s)", big.Replicas, big.Interrupted)
		}
		return nil, fmt.Errorf("sweep of %d replica(s): expected a rate meeting the SLO, found none (even the lowest probe failed)", big.Replicas)
	}
	per := big.MaxRateMeetingSLO / float64(big.Replicas)
	n := int(math.Ceil(need/per - 1e-9))
	capacity := float64(n) * per
	p := &Plan{TargetRate: target, Margin: margin, PerReplicaRate: round6(per), Replicas: n, Capacity: round6(capacity),
		Headroom: round6(capacity/target - 1),
		Basis: fmt.Sprintf("extrapolated linearly from a sweep of a fleet of %d replica(s) (as recorded by sweep --replicas) meeting the SLO up to %.2f req/s",
			big.Replicas, big.MaxRateMeetingSLO)}
	p.Warnings = sweepWarnings(big)
	return p, nil
}

// sweepWarnings says when a sweep under-states capacity.
func sweepWarnings(s *SweepResult) []string {
	var w []string
	if s.FirstRateFailingSLO == 0 {
		w = append(w, fmt.Sprintf("the sweep of %d replica(s) had no probe failing the SLO (highest good probe %.2f req/s): its capacity is a lower bound and the plan may over-provision; sweep again with a higher --max-rate", s.Replicas, s.MaxRateMeetingSLO))
	}
	if s.Interrupted != "" {
		w = append(w, fmt.Sprintf("the sweep of %d replica(s) was interrupted (%s): the plan uses only its completed probes", s.Replicas, s.Interrupted))
	}
	return w
}
