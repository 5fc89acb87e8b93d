package loadgen

import "time"

// Planned is one request of a config's open-loop plan: when it leaves (an
// offset from the start of the run) and what it asks for.
type Planned struct {
	At time.Duration
	Request
}

// Schedule yields a config's open-loop plan in time order, exactly the
// requests `loadgen run` would send (same seed, same arrival law, same
// prompts), without a clock or a socket. Capacity planners replay it in
// virtual time. It is not safe for concurrent use.
type Schedule struct {
	sched schedule
	gen   generator
	i     int64
}

// NewSchedule normalizes cfg and returns its plan. Closed-loop configs
// (load.type concurrent) have no plan independent of the server and are
// refused.
func NewSchedule(cfg *Config) (*Schedule, error) {
	if err := cfg.Normalize(); err != nil {
		return nil, err
	}
	gen, trace, err := newGenerator(cfg)
	if err != nil {
		return nil, err
	}
	s := &Schedule{gen: gen}
	switch cfg.Load.Type {
	case LoadConstant, LoadPoisson:
		s.sched = newRateSchedule(cfg)
	case LoadTraceReplay:
		ts := &traceSchedule{recs: trace, scale: cfg.Load.TimeScale}
		if len(cfg.Load.Stages) > 0 {
			ts.bounds = stageBounds(cfg.Load.Stages)
		}
		s.sched = ts
	default:
		return nil, &FieldError{"load.type", "constant, poisson or trace_replay (an open-loop plan)", quote(cfg.Load.Type)}
	}
	return s, nil
}

// Next returns the next planned request; false when the plan is over.
func (s *Schedule) Next() (Planned, bool) {
	a, ok := s.sched.next()
	if !ok {
		return Planned{}, false
	}
	req := s.gen.next(s.i)
	req.Stage = a.stage
	s.i++
	return Planned{At: a.at, Request: req}, true
}

// CountPlanned is the number of requests cfg's open-loop plan sends (the
// arrival schedule only: no prompt is generated).
func CountPlanned(cfg *Config) (int, error) {
	s, err := NewSchedule(cfg)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, ok := s.sched.next(); ok; _, ok = s.sched.next() {
		n++
	}
	if n == 0 {
		return 0, ErrNoRequests
	}
	return n, nil
}
