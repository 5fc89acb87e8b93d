package loadgen

import (
	"math"
	"math/rand/v2"
	"time"

	"gonum.org/v1/gonum/stat/distuv"
)

// arrival is one planned send, as an offset from the start of the run.
type arrival struct {
	at    time.Duration
	stage int
}

// schedule yields planned sends in time order. It is open loop: the plan
// never looks at the server.
type schedule interface {
	next() (arrival, bool)
}

// stageBounds returns each stage's [start, end) offsets.
func stageBounds(stages []Stage) []time.Duration {
	b := make([]time.Duration, len(stages)+1)
	for i, s := range stages {
		b[i+1] = b[i] + time.Duration(s.Duration)
	}
	return b
}

// rateSchedule is constant (evenly spaced) or poisson (gamma inter-arrivals
// with shape = burstiness and mean 1/rate) over the stages.
type rateSchedule struct {
	stages  []Stage
	bounds  []time.Duration
	poisson bool
	burst   float64
	src     rand.Source
	stage   int
	k       int64   // sends so far in this stage (constant)
	t       float64 // seconds since stage start (poisson)
	gamma   distuv.Gamma
}

func newRateSchedule(cfg *Config) *rateSchedule {
	s := &rateSchedule{stages: cfg.Load.Stages, bounds: stageBounds(cfg.Load.Stages),
		poisson: cfg.Load.Type == LoadPoisson, burst: 1,
		src: rand.NewPCG(uint64(cfg.Load.SeedValue()), 0x617272697661)}
	if cfg.Load.Burstiness != nil {
		s.burst = *cfg.Load.Burstiness
	}
	s.setStage(0)
	return s
}

func (s *rateSchedule) setStage(i int) {
	s.stage, s.k, s.t = i, 0, 0
	if i < len(s.stages) {
		r := s.stages[i].Rate
		s.gamma = distuv.Gamma{Alpha: s.burst, Beta: r * s.burst, Src: s.src}
	}
}

func (s *rateSchedule) next() (arrival, bool) {
	for s.stage < len(s.stages) {
		st := s.stages[s.stage]
		dur := time.Duration(st.Duration).Seconds()
		var off float64
		if s.poisson {
			s.t += s.gamma.Rand()
			off = s.t
		} else {
			off = float64(s.k) / st.Rate
			s.k++
		}
		if off < dur && !math.IsNaN(off) {
			return arrival{at: s.bounds[s.stage] + time.Duration(off*float64(time.Second)), stage: s.stage}, true
		}
		s.setStage(s.stage + 1)
	}
	return arrival{}, false
}

// traceSchedule sends each trace record at its timestamp (relative to the
// first record, divided by time_scale). Stages, when given, are consecutive
// windows of the trace; records after the last window are not sent.
type traceSchedule struct {
	recs   []TraceRecord
	scale  float64
	bounds []time.Duration
	i      int
}

func (s *traceSchedule) next() (arrival, bool) {
	if s.i >= len(s.recs) {
		return arrival{}, false
	}
	at := time.Duration((s.recs[s.i].Timestamp - s.recs[0].Timestamp) / s.scale * float64(time.Second))
	s.i++
	stage := 0
	if len(s.bounds) > 1 {
		for stage < len(s.bounds)-1 && at >= s.bounds[stage+1] {
			stage++
		}
		if stage >= len(s.bounds)-1 {
			s.i = len(s.recs)
			return arrival{}, false
		}
	}
	return arrival{at: at, stage: stage}, true
}
