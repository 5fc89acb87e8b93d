package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Figures are the measurements of a stage or of the whole run.
type Figures struct {
	Requests                 RequestCounts    `json:"requests"`
	Rate                     RateFigures      `json:"rate"`
	DurationSeconds          float64          `json:"duration_seconds"`
	TTFT                     Latency          `json:"ttft_seconds"`
	TPOT                     Latency          `json:"tpot_seconds"`
	ITL                      Latency          `json:"itl_seconds"`
	NTPOT                    Latency          `json:"ntpot_seconds"`
	E2E                      Latency          `json:"e2e_seconds"`
	RequestsPerSecond        float64          `json:"requests_per_second"`
	OutputTokensPerSecond    float64          `json:"output_tokens_per_second"`
	InputTokensPerSecond     float64          `json:"input_tokens_per_second"`
	GoodputRequestsPerSecond float64          `json:"goodput_requests_per_second"`
	GoodRequests             int64            `json:"good_requests"`
	ScheduleDelay            Latency          `json:"schedule_delay_seconds"`
	Errors                   map[string]int64 `json:"errors"`
	Tokens                   TokenCounts      `json:"tokens"`
}

// RequestCounts counts requests by outcome.
type RequestCounts struct {
	// Planned is how many sends the schedule made (Poisson counts vary
	// around rate × duration); Sent falls short only when a stage stopped
	// early or the run was interrupted.
	Planned   int64 `json:"planned"`
	Sent      int64 `json:"sent"`
	Completed int64 `json:"completed"`
	Failed    int64 `json:"failed"`
}

// RateFigures compare the planned and the achieved send rate (requests/s).
// Requested is null for closed loop (concurrent) stages.
type RateFigures struct {
	Requested *float64 `json:"requested"`
	Achieved  float64  `json:"achieved"`
}

// TokenCounts sums tokens. Estimated counts requests whose counts were
// estimated because the server sent no usage.
type TokenCounts struct {
	Input             int64 `json:"input"`
	Output            int64 `json:"output"`
	EstimatedRequests int64 `json:"estimated_requests"`
	Estimated         bool  `json:"estimated"`
}

// StageSummary is one stage's figures.
type StageSummary struct {
	Index        int    `json:"index"`
	Concurrency  int    `json:"concurrency,omitempty"`
	EarlyStopped bool   `json:"early_stopped,omitempty"`
	StopReason   string `json:"stop_reason,omitempty"`
	Figures
}

// Summary is summary.json.
type Summary struct {
	Tool      string            `json:"tool"`
	StartedAt time.Time         `json:"started_at"`
	LoadType  string            `json:"load_type"`
	APIType   string            `json:"api_type"`
	Streaming bool              `json:"streaming"`
	Model     string            `json:"model"`
	BaseURL   string            `json:"base_url"`
	SLO       map[string]string `json:"slo,omitempty"`
	Figures
	EarlyStopped bool              `json:"early_stopped"`
	Stages       []StageSummary    `json:"stages"`
	Definitions  map[string]string `json:"definitions"`
	// Timeline is per-second activity for charts (not part of the stable schema).
	Timeline []TimelineSecond `json:"-"`
	// Dists keeps latency distributions for charts.
	Dists map[string][][2]float64 `json:"-"`
}

// Definitions of every metric; written into summary.json and the report.
var Definitions = map[string]string{
	"ttft":           "time to first token: request sent → first content token received",
	"itl":            "inter-token latency: gap between consecutive content chunks of a stream",
	"tpot":           "time per output token: (e2e − TTFT) / (output tokens − 1), per request",
	"ntpot":          "normalized time per output token: e2e / output tokens, per request",
	"e2e":            "end-to-end latency: request sent → last byte of the response",
	"schedule_delay": "actual send time − planned send time (the generator's own accuracy)",
	"rate":           "requested = the stage's configured rate (trace_replay: records in the window / window); achieved = sends / max(stage duration, time of last send); requests.planned = sends the schedule made (Poisson counts vary around rate × duration)",
	"throughput":     "completed requests (or their output tokens) / (stage start → last completion of the stage's requests)",
	"goodput":        "completed requests meeting every SLO / the same window",
	"tokens":         "from the server's usage (stream_options.include_usage); when absent, one token per content chunk (streaming) or per word, flagged estimated",
	"percentiles":    "from HDR histograms at 3 significant digits (0.1%), microsecond resolution",
}

type stageMeta struct {
	start        time.Time
	planned      time.Duration // planned send window; 0 for closed loop
	requested    float64       // requests/s; <0 when not applicable
	concurrency  int
	earlyStopped bool
	stopReason   string
	stoppedAt    time.Time // when an early stop ended the stage's sends
}

func figuresOf(s *stageStats, start time.Time, planned time.Duration, requested float64, pcts []float64) Figures {
	f := Figures{Requests: RequestCounts{Planned: s.planned, Sent: s.sent, Completed: s.completed, Failed: s.failed},
		TTFT: latencyOf(s.ttft, pcts), TPOT: latencyOf(s.tpot, pcts), ITL: latencyOf(s.itl, pcts),
		NTPOT: latencyOf(s.ntpot, pcts), E2E: latencyOf(s.e2e, pcts), ScheduleDelay: latencyOf(s.sched, pcts),
		Errors: map[string]int64{}, GoodRequests: s.good,
		Tokens: TokenCounts{Input: s.inputTokens, Output: s.outputTokens, EstimatedRequests: s.estimated, Estimated: s.estimated > 0}}
	for k, v := range s.errors {
		f.Errors[k] = v
	}
	if requested >= 0 {
		r := round6(requested)
		f.Rate.Requested = &r
	}
	sendWin := planned
	if !s.lastSend.IsZero() && s.lastSend.Sub(start) > sendWin {
		sendWin = s.lastSend.Sub(start)
	}
	if sendWin > 0 {
		f.Rate.Achieved = round6(float64(s.sent) / sendWin.Seconds())
	}
	win := s.lastDone.Sub(start)
	if win < planned {
		win = planned
	}
	if win > 0 {
		sec := win.Seconds()
		f.DurationSeconds = round6(sec)
		f.RequestsPerSecond = round6(float64(s.completed) / sec)
		f.OutputTokensPerSecond = round6(float64(s.outputTokens) / sec)
		f.InputTokensPerSecond = round6(float64(s.inputTokens) / sec)
		f.GoodputRequestsPerSecond = round6(float64(s.good) / sec)
	}
	return f
}

// buildSummary turns the recorder into a Summary.
func buildSummary(cfg *Config, rec *Recorder, metas []stageMeta) *Summary {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	pcts := cfg.Report.Percentiles
	sum := &Summary{Tool: "fastepp loadgen", StartedAt: rec.start.UTC(), LoadType: cfg.Load.Type, APIType: cfg.API.Type,
		Streaming: cfg.API.StreamingOn(), Model: cfg.Server.ModelName, BaseURL: cfg.Server.BaseURL,
		Definitions: Definitions, Stages: []StageSummary{}}
	sum.SLO = sloMap(cfg.SLO)
	total := newStageStats()
	var planned time.Duration
	var plannedSends float64
	closed := false
	for i, s := range rec.stages {
		m := metas[i]
		if !m.stoppedAt.IsZero() && m.stoppedAt.Sub(m.start) < m.planned {
			// rates of a stage stopped early are over the time it ran
			m.planned = max(m.stoppedAt.Sub(m.start), time.Millisecond)
		}
		total.merge(s)
		planned += m.planned
		if m.requested < 0 {
			closed = true
		} else {
			plannedSends += m.requested * m.planned.Seconds()
		}
		st := StageSummary{Index: i, Concurrency: m.concurrency, EarlyStopped: m.earlyStopped, StopReason: m.stopReason,
			Figures: figuresOf(s, m.start, m.planned, m.requested, pcts)}
		if m.earlyStopped {
			sum.EarlyStopped = true
		}
		sum.Stages = append(sum.Stages, st)
	}
	req := -1.0
	if !closed && planned > 0 {
		req = plannedSends / planned.Seconds()
	}
	sum.Figures = figuresOf(total, rec.start, planned, req, pcts)
	sum.Timeline = append([]TimelineSecond(nil), rec.timeline...)
	sum.Dists = map[string][][2]float64{}
	sum.Dists["ttft"] = cdf(total.ttft)
	sum.Dists["e2e"] = cdf(total.e2e)
	sum.Dists["itl"] = cdf(total.itl)
	sum.Dists["tpot"] = cdf(total.tpot)
	return sum
}

func sloMap(o SLOConfig) map[string]string {
	m := map[string]string{}
	for _, x := range []struct {
		k string
		v Duration
	}{{"ttft", o.TTFT}, {"tpot", o.TPOT}, {"itl", o.ITL}, {"e2e", o.E2E}, {"ntpot", o.NTPOT}} {
		if x.v > 0 {
			m[x.k] = time.Duration(x.v).String()
		}
	}
	if len(m) == 0 {
		return nil
	}
	m["attainment"] = fmtF(o.Attainment)
	return m
}

// WriteJSON writes the summary as indented JSON.
func (s *Summary) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}

// WriteFile writes summary.json into dir.
func (s *Summary) WriteFile(dir string) error {
	f, err := os.Create(filepath.Join(dir, "summary.json"))
	if err != nil {
		return err
	}
	if err := s.WriteJSON(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadSummary reads a summary.json.
func ReadSummary(path string) (*Summary, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s Summary
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: expected a loadgen summary.json: %w", path, err)
	}
	return &s, nil
}

// Table renders a human summary table.
func (s *Summary) Table(w io.Writer) {
	ms := func(v float64) string { return fmt.Sprintf("%9.1f", v*1000) }
	fmt.Fprintf(w, "%-6s %8s %8s %8s %9s %9s %9s %9s %9s %9s %9s %10s\n", "stage", "req/s", "achieved", "failed",
		"ttft p50", "ttft p99", "tpot p50", "tpot p99", "itl p50", "e2e p99", "goodput", "out tok/s")
	row := func(name string, f Figures) {
		req := "closed"
		if f.Rate.Requested != nil {
			req = fmt.Sprintf("%.2f", *f.Rate.Requested)
		}
		fmt.Fprintf(w, "%-6s %8s %8.2f %8d %s %s %s %s %s %s %9.2f %10.1f\n", name, req, f.Rate.Achieved, f.Requests.Failed,
			ms(f.TTFT.P50), ms(f.TTFT.P99), ms(f.TPOT.P50), ms(f.TPOT.P99), ms(f.ITL.P50), ms(f.E2E.P99),
			f.GoodputRequestsPerSecond, f.OutputTokensPerSecond)
	}
	for _, st := range s.Stages {
		row(fmt.Sprint(st.Index), st.Figures)
	}
	row("all", s.Figures)
	fmt.Fprintf(w, "latencies in ms; schedule delay p50/p99 %.3f/%.3f ms; planned %d, sent %d, completed %d, failed %d",
		s.ScheduleDelay.P50*1000, s.ScheduleDelay.P99*1000, s.Requests.Planned, s.Requests.Sent, s.Requests.Completed, s.Requests.Failed)
	if len(s.Errors) > 0 {
		var parts []string
		for _, k := range sortedKeys(s.Errors) {
			parts = append(parts, fmt.Sprintf("%s=%d", k, s.Errors[k]))
		}
		fmt.Fprintf(w, " (%s)", strings.Join(parts, ", "))
	}
	if s.Tokens.Estimated {
		fmt.Fprintf(w, "\nnote: %d requests had no usage from the server; their token counts are estimated", s.Tokens.EstimatedRequests)
	}
	if s.EarlyStopped {
		fmt.Fprint(w, "\nnote: a stage was stopped early because latency grew without bound")
	}
	fmt.Fprintln(w)
}

// cdf samples a histogram's percentile curve as (percentile, seconds) pairs.
func cdf(h interface {
	TotalCount() int64
	ValueAtQuantile(float64) int64
}) [][2]float64 {
	if h.TotalCount() == 0 {
		return nil
	}
	var out [][2]float64
	for _, p := range []float64{1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 97, 99, 99.5, 99.9, 100} {
		out = append(out, [2]float64{p, float64(h.ValueAtQuantile(p)) / 1e6})
	}
	return out
}
