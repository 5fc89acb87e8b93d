package loadgen

import (
	"math"
	"sort"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Histograms record microseconds from 1 µs to 1 hour at 3 significant
// digits (0.1% resolution), so memory is fixed however long a run is.
const (
	histMin    = 1
	histMax    = int64(time.Hour / time.Microsecond)
	histDigits = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histDigits) }

func recordDur(h *hdrhistogram.Histogram, d time.Duration) {
	v := int64(d / time.Microsecond)
	if v < histMin {
		v = histMin
	}
	if v > histMax {
		v = histMax
	}
	_ = h.RecordValue(v)
}

// stageStats accumulates one stage (or the whole run).
type stageStats struct {
	ttft, itl, tpot, ntpot, e2e, sched *hdrhistogram.Histogram

	planned, sent, completed, failed, good int64
	inputTokens, outputTokens              int64
	estimated                              int64
	errors                                 map[string]int64
	firstSend, lastSend, lastDone          time.Time
}

func newStageStats() *stageStats {
	return &stageStats{ttft: newHist(), itl: newHist(), tpot: newHist(), ntpot: newHist(), e2e: newHist(),
		sched: newHist(), errors: map[string]int64{}}
}

func (s *stageStats) merge(o *stageStats) {
	s.ttft.Merge(o.ttft)
	s.itl.Merge(o.itl)
	s.tpot.Merge(o.tpot)
	s.ntpot.Merge(o.ntpot)
	s.e2e.Merge(o.e2e)
	s.sched.Merge(o.sched)
	s.planned += o.planned
	s.sent += o.sent
	s.completed += o.completed
	s.failed += o.failed
	s.good += o.good
	s.inputTokens += o.inputTokens
	s.outputTokens += o.outputTokens
	s.estimated += o.estimated
	for k, v := range o.errors {
		s.errors[k] += v
	}
	if s.firstSend.IsZero() || (!o.firstSend.IsZero() && o.firstSend.Before(s.firstSend)) {
		s.firstSend = o.firstSend
	}
	if o.lastSend.After(s.lastSend) {
		s.lastSend = o.lastSend
	}
	if o.lastDone.After(s.lastDone) {
		s.lastDone = o.lastDone
	}
}

// TimelineSecond is one second of the run's timeline (for the report's charts).
type TimelineSecond struct {
	Sent, Completed, Failed int64
	OutputTokens            int64
	TTFTSumUS               int64
	TTFTCount               int64
	InFlight                int64
}

// maxTimeline bounds the per-second timeline (one day).
const maxTimeline = 86400

// Recorder collects results. It is safe for concurrent use.
type Recorder struct {
	mu       sync.Mutex
	slo      SLOConfig
	start    time.Time
	stages   []*stageStats
	timeline []TimelineSecond
	inFlight int64
	// window feeds the early-stop detector and live progress.
	winTTFTSum, winTTFTN, winDone, winFail int64
}

// NewRecorder makes a recorder for n stages starting at start.
func NewRecorder(n int, slo SLOConfig, start time.Time) *Recorder {
	r := &Recorder{slo: slo, start: start}
	for i := 0; i < n; i++ {
		r.stages = append(r.stages, newStageStats())
	}
	return r
}

func (r *Recorder) sec(t time.Time) *TimelineSecond {
	i := int(t.Sub(r.start) / time.Second)
	if i < 0 || i >= maxTimeline {
		return nil
	}
	for len(r.timeline) <= i {
		r.timeline = append(r.timeline, TimelineSecond{})
	}
	return &r.timeline[i]
}

// Sent notes a request leaving (call before Record).
func (r *Recorder) Sent(stage int, at time.Time) {
	r.mu.Lock()
	s := r.stages[stage]
	s.sent++
	if s.firstSend.IsZero() {
		s.firstSend = at
	}
	if at.After(s.lastSend) {
		s.lastSend = at
	}
	r.inFlight++
	if sc := r.sec(at); sc != nil {
		sc.Sent++
		if r.inFlight > sc.InFlight {
			sc.InFlight = r.inFlight
		}
	}
	r.mu.Unlock()
}

// meetsSLO reports whether a completed result meets every configured SLO.
func (r *Recorder) meetsSLO(res *Result, tpot, ntpot time.Duration, tpotOK, ntpotOK bool) bool {
	o := r.slo
	if o.TTFT > 0 && (res.TTFT <= 0 || res.TTFT > time.Duration(o.TTFT)) {
		return false
	}
	if o.TPOT > 0 && tpotOK && tpot > time.Duration(o.TPOT) {
		return false
	}
	if o.NTPOT > 0 && ntpotOK && ntpot > time.Duration(o.NTPOT) {
		return false
	}
	if o.E2E > 0 && res.E2E > time.Duration(o.E2E) {
		return false
	}
	if o.ITL > 0 {
		for _, g := range res.ITLs {
			if g > time.Duration(o.ITL) {
				return false
			}
		}
	}
	return true
}

// Record adds a finished request (sent earlier with Sent).
func (r *Recorder) Record(res *Result) {
	done := res.Sent.Add(res.E2E)
	tpot, tpotOK := res.TPOT()
	ntpot, ntpotOK := res.NTPOT()
	good := res.OK() && r.meetsSLO(res, tpot, ntpot, tpotOK, ntpotOK)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight--
	s := r.stages[res.Stage]
	recordDur(s.sched, res.SchedDelay)
	if done.After(s.lastDone) {
		s.lastDone = done
	}
	sc := r.sec(done)
	if !res.OK() {
		s.failed++
		s.errors[res.ErrKind]++
		r.winFail++
		if sc != nil {
			sc.Failed++
		}
		return
	}
	s.completed++
	r.winDone++
	s.inputTokens += int64(res.InputTokens)
	s.outputTokens += int64(res.OutputTokens)
	if res.Estimated {
		s.estimated++
	}
	if good {
		s.good++
	}
	recordDur(s.e2e, res.E2E)
	if res.TTFT > 0 {
		recordDur(s.ttft, res.TTFT)
		r.winTTFTSum += int64(res.TTFT / time.Microsecond)
		r.winTTFTN++
	}
	for _, g := range res.ITLs {
		recordDur(s.itl, g)
	}
	if tpotOK {
		recordDur(s.tpot, tpot)
	}
	if ntpotOK {
		recordDur(s.ntpot, ntpot)
	}
	if sc != nil {
		sc.Completed++
		sc.OutputTokens += int64(res.OutputTokens)
		if res.TTFT > 0 {
			sc.TTFTSumUS += int64(res.TTFT / time.Microsecond)
			sc.TTFTCount++
		}
	}
}

// Planned counts a send the schedule made.
func (r *Recorder) Planned(stage int) {
	r.mu.Lock()
	r.stages[stage].planned++
	r.mu.Unlock()
}

// Dropped counts a planned request that was not sent (client-side cap).
func (r *Recorder) Dropped(stage int, kind string, delay time.Duration) {
	r.mu.Lock()
	s := r.stages[stage]
	s.sent++
	s.failed++
	s.errors[kind]++
	recordDur(s.sched, delay)
	r.mu.Unlock()
}

// Live is a progress snapshot.
type Live struct {
	Elapsed            time.Duration
	Stage              int
	Sent, Done, Failed int64
	InFlight           int64
	TTFTp50, TTFTp99   time.Duration
	WindowMeanTTFT     time.Duration // mean TTFT of completions since the last window
	WindowDone         int64
	WindowFailed       int64
}

// Snapshot returns live figures and resets the window counters when
// resetWindow is set.
func (r *Recorder) Snapshot(stage int, resetWindow bool) Live {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := Live{Elapsed: time.Since(r.start), Stage: stage, InFlight: r.inFlight, WindowDone: r.winDone, WindowFailed: r.winFail}
	for _, s := range r.stages {
		l.Sent += s.sent
		l.Done += s.completed
		l.Failed += s.failed
	}
	if stage >= 0 && stage < len(r.stages) {
		h := r.stages[stage].ttft
		l.TTFTp50 = time.Duration(h.ValueAtQuantile(50)) * time.Microsecond
		l.TTFTp99 = time.Duration(h.ValueAtQuantile(99)) * time.Microsecond
	}
	if r.winTTFTN > 0 {
		l.WindowMeanTTFT = time.Duration(r.winTTFTSum/r.winTTFTN) * time.Microsecond
	}
	if resetWindow {
		r.winTTFTSum, r.winTTFTN, r.winDone, r.winFail = 0, 0, 0, 0
	}
	return l
}

// Latency is a latency summary in seconds.
type Latency struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	Min   float64 `json:"min"`
	Max   float64 `json:"max"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P95   float64 `json:"p95"`
	P99   float64 `json:"p99"`
	// Extra holds report.percentiles beyond p50/p90/p95/p99, keyed "p99.9".
	Extra map[string]float64 `json:"percentiles,omitempty"`
}

func latencyOf(h *hdrhistogram.Histogram, pcts []float64) Latency {
	if h.TotalCount() == 0 {
		return Latency{}
	}
	us := func(v int64) float64 { return float64(v) / 1e6 }
	l := Latency{Count: h.TotalCount(), Mean: round6(h.Mean() / 1e6), Min: us(h.Min()), Max: us(h.Max()),
		P50: us(h.ValueAtQuantile(50)), P90: us(h.ValueAtQuantile(90)), P95: us(h.ValueAtQuantile(95)),
		P99: us(h.ValueAtQuantile(99))}
	for _, p := range pcts {
		switch p {
		case 50, 90, 95, 99:
			continue
		}
		if l.Extra == nil {
			l.Extra = map[string]float64{}
		}
		l.Extra[pctName(p)] = us(h.ValueAtQuantile(p))
	}
	return l
}

func pctName(p float64) string { return "p" + fmtF(p) }

func round6(f float64) float64 { return math.Round(f*1e6) / 1e6 }

func sortedKeys(m map[string]int64) []string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}
