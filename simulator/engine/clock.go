package engine

import (
	"sort"
	"sync"
	"time"
)

// Clock tells engine time: a duration since the engine's epoch.
type Clock interface {
	Now() time.Duration
}

// RealClock is wall-clock (monotonic) time since its epoch.
type RealClock struct{ epoch time.Time }

// NewRealClock starts a real clock at the current instant.
func NewRealClock() *RealClock { return &RealClock{epoch: time.Now()} }

// Now is the time elapsed since the epoch.
func (c *RealClock) Now() time.Duration { return time.Since(c.epoch) }

// Wall converts engine time to wall time.
func (c *RealClock) Wall(d time.Duration) time.Time { return c.epoch.Add(d) }

// VirtualClock is time that moves only when told to.
type VirtualClock struct{ now time.Duration }

// Now is the current virtual time.
func (c *VirtualClock) Now() time.Duration { return c.now }

// AdvanceTo moves the clock forward to t (never backwards).
func (c *VirtualClock) AdvanceTo(t time.Duration) {
	if t > c.now {
		c.now = t
	}
}

// MaxLag is how far a Runner may fall behind the modelled timeline before it
// re-anchors it to the present. Below it, steps stay chained on the model's
// timeline (a late wake-up delays one emission, not the model); above it, the
// lost time is counted in Stats.Lag instead of being replayed as a burst.
const MaxLag = 2 * time.Millisecond

// Runner drives an engine in real time: one goroutine plans a step, sleeps
// until the step's modelled end, and completes it.
type Runner struct {
	e      *Engine
	clock  *RealClock
	waiter stepWaiter
	wake   chan struct{}
	quit   chan struct{}
	done   chan struct{}
	once   sync.Once
}

// Start runs e in real time on clock until Stop.
func Start(e *Engine, clock *RealClock) *Runner {
	r := &Runner{e: e, clock: clock, waiter: newStepWaiter(), wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	e.mu.Lock()
	e.lastEnd = clock.Now()
	e.maxLag = MaxLag
	e.mu.Unlock()
	go r.loop()
	return r
}

// Clock is the runner's clock.
func (r *Runner) Clock() *RealClock { return r.clock }

// Engine is the engine the runner drives.
func (r *Runner) Engine() *Engine { return r.e }

// Submit queues req now and wakes the loop.
func (r *Runner) Submit(req *Request) error {
	if err := r.e.Submit(req, r.clock.Now()); err != nil {
		return err
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return nil
}

// Abort ends req with reason "abort".
func (r *Runner) Abort(req *Request) { r.e.Abort(req, r.clock.Now()) }

// Stop ends the loop and aborts every request. It is idempotent.
func (r *Runner) Stop() {
	r.once.Do(func() {
		close(r.quit)
		r.waiter.close()
		<-r.done
		r.e.Stop(r.clock.Now())
	})
}

func (r *Runner) loop() {
	defer close(r.done)
	for {
		s := r.e.Plan(r.clock.Now())
		if s == nil {
			select {
			case <-r.wake:
				continue
			case <-r.quit:
				return
			}
		}
		if wait := s.End - r.clock.Now(); wait > 0 && !r.waiter.wait(wait) {
			return
		}
		r.e.Complete(s)
	}
}

// Arrival is a request and the virtual time it arrives.
type Arrival struct {
	At  time.Duration
	Req *Request
}

// Simulate runs e in virtual time over arrivals (sorted by At here) until
// every request has finished or been rejected; it returns the virtual time
// of the last event and the submission errors by request index.
func Simulate(e *Engine, clock *VirtualClock, arrivals []Arrival) (time.Duration, map[int]error) {
	sort.SliceStable(arrivals, func(i, j int) bool { return arrivals[i].At < arrivals[j].At })
	var errs map[int]error
	submit := func(i int) {
		clock.AdvanceTo(arrivals[i].At)
		if err := e.Submit(arrivals[i].Req, arrivals[i].At); err != nil {
			if errs == nil {
				errs = map[int]error{}
			}
			errs[i] = err
		}
	}
	i := 0
	for {
		s := e.Plan(clock.Now())
		if s == nil {
			if i == len(arrivals) {
				return clock.Now(), errs
			}
			submit(i)
			i++
			continue
		}
		for i < len(arrivals) && arrivals[i].At < s.End {
			submit(i)
			i++
		}
		clock.AdvanceTo(s.End)
		e.Complete(s)
	}
}

// SimulateLimited is Simulate with at most limit requests in flight (0: no
// limit), as a client with a concurrency cap sends them: a request whose
// arrival finds limit requests unfinished is submitted when one finishes,
// and its Arrival (from which TTFT counts) is that later time.
func SimulateLimited(e *Engine, clock *VirtualClock, arrivals []Arrival, limit int) (time.Duration, map[int]error) {
	if limit <= 0 {
		return Simulate(e, clock, arrivals)
	}
	sort.SliceStable(arrivals, func(i, j int) bool { return arrivals[i].At < arrivals[j].At })
	var errs map[int]error
	inflight, i := 0, 0
	// submitUpTo submits the arrivals due by t while slots are free; a
	// delayed arrival is submitted at the clock's time.
	submitUpTo := func(t time.Duration) {
		for i < len(arrivals) && arrivals[i].At <= t && inflight < limit {
			at := max(arrivals[i].At, clock.Now())
			if err := e.Submit(arrivals[i].Req, at); err != nil {
				if errs == nil {
					errs = map[int]error{}
				}
				errs[i] = err
			} else {
				inflight++
			}
			i++
		}
	}
	for {
		submitUpTo(clock.Now())
		s := e.Plan(clock.Now())
		if s == nil {
			if i == len(arrivals) || arrivals[i].At <= clock.Now() {
				return clock.Now(), errs // done, or stuck: nothing runs and no slot frees
			}
			clock.AdvanceTo(arrivals[i].At)
			continue
		}
		for i < len(arrivals) && arrivals[i].At < s.End && inflight < limit {
			clock.AdvanceTo(arrivals[i].At)
			submitUpTo(arrivals[i].At)
		}
		clock.AdvanceTo(s.End)
		e.Complete(s)
		for _, r := range s.reqs {
			if r.state == stateFinished && r.finishedAt == s.End {
				inflight--
			}
		}
	}
}
