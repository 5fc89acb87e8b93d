package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Options tune a run beyond what the config says.
type Options struct {
	// Progress, when set, is called every ProgressEvery (default 1s).
	Progress      func(Live)
	ProgressEvery time.Duration
	// CSV, when set, receives one row per request.
	CSV io.Writer
	// EarlyStop ends an open-loop stage when latency grows without bound
	// (see Unbounded); the rest of that stage is not sent and its in-flight
	// requests are canceled.
	EarlyStop bool
	// EarlyStopWindow is the detector's window (default 1s).
	EarlyStopWindow time.Duration
	// Client overrides the HTTP client built from the config.
	Client *Client
}

// spinBelow is how close to a planned send the dispatcher stops using
// runtime timers (which can fire ~1 ms late) and sleeps in the kernel.
const spinBelow = 1500 * time.Microsecond

var resultPool = sync.Pool{New: func() any { return &Result{ITLs: make([]time.Duration, 0, 256)} }}

func getResult() *Result {
	r := resultPool.Get().(*Result)
	itl := r.ITLs[:0]
	*r = Result{ITLs: itl}
	return r
}

func putResult(r *Result) {
	if cap(r.ITLs) > 64<<10 {
		r.ITLs = make([]time.Duration, 0, 256)
	}
	resultPool.Put(r)
}

type run struct {
	cfg     *Config
	opt     Options
	client  *Client
	gen     generator
	rec     *Recorder
	csv     *csvWriter
	metas   []stageMeta
	stage   atomic.Int64
	stopped []atomic.Bool
	cancels []context.CancelFunc
	ctxs    []context.Context
	stopMu  sync.Mutex
}

// Run executes every stage of cfg and returns the summary. The summary is
// returned even when ctx is canceled midway (with ctx's error).
func Run(ctx context.Context, cfg *Config, opt Options) (*Summary, error) {
	if err := cfg.Normalize(); err != nil {
		return nil, err
	}
	gen, trace, err := newGenerator(cfg)
	if err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, opt: opt, gen: gen, client: opt.Client}
	if r.client == nil {
		r.client = NewClient(cfg)
		defer r.client.CloseIdleConnections()
	}
	if opt.CSV != nil {
		r.csv = newCSVWriter(opt.CSV)
	}
	if r.opt.ProgressEvery <= 0 {
		r.opt.ProgressEvery = time.Second
	}
	if r.opt.EarlyStopWindow <= 0 {
		r.opt.EarlyStopWindow = time.Second
	}

	stages := cfg.Load.Stages
	var sched schedule
	switch cfg.Load.Type {
	case LoadConstant, LoadPoisson:
		sched = newRateSchedule(cfg)
	case LoadTraceReplay:
		ts := &traceSchedule{recs: trace, scale: cfg.Load.TimeScale}
		if len(stages) > 0 {
			ts.bounds = stageBounds(stages)
		} else {
			last := time.Duration((trace[len(trace)-1].Timestamp - trace[0].Timestamp) / ts.scale * float64(time.Second))
			stages = []Stage{{Duration: Duration(last + time.Nanosecond)}}
		}
		sched = ts
	}
	n := len(stages)
	r.stopped = make([]atomic.Bool, n)
	r.cancels = make([]context.CancelFunc, n)
	r.ctxs = make([]context.Context, n)
	for i := range stages {
		r.ctxs[i], r.cancels[i] = context.WithCancel(ctx)
	}
	defer func() {
		for _, c := range r.cancels {
			c()
		}
	}()

	// Allocate everything first; the plan starts a little after, so the
	// first sends are not late because of set-up work.
	r.rec = NewRecorder(n, cfg.SLO, time.Time{})
	start := time.Now().Add(5 * time.Millisecond)
	r.rec.start = start
	r.metas = make([]stageMeta, n)
	bounds := stageBounds(stages)
	for i, s := range stages {
		r.metas[i] = stageMeta{start: start.Add(bounds[i]), planned: time.Duration(s.Duration), requested: s.Rate,
			concurrency: s.Concurrency}
	}
	if cfg.Load.Type == LoadTraceReplay {
		counts := make([]int, n)
		tmp := &traceSchedule{recs: trace, scale: cfg.Load.TimeScale, bounds: sched.(*traceSchedule).bounds}
		for a, ok := tmp.next(); ok; a, ok = tmp.next() {
			counts[a.stage]++
		}
		for i := range r.metas {
			r.metas[i].requested = float64(counts[i]) / r.metas[i].planned.Seconds()
		}
	}

	monDone := make(chan struct{})
	monStop := make(chan struct{})
	go r.monitor(monStop, monDone)

	if cfg.Load.Type == LoadConcurrent {
		r.runClosed(ctx, start)
	} else {
		r.runOpen(ctx, sched, start)
	}
	close(monStop)
	<-monDone
	if r.csv != nil {
		if err := r.csv.flush(); err != nil {
			return nil, fmt.Errorf("writing per-request CSV: %w", err)
		}
	}
	for i := range r.metas {
		if r.stopped[i].Load() {
			r.metas[i].earlyStopped = true
		}
	}
	sum := buildSummary(cfg, r.rec, r.metas)
	return sum, ctx.Err()
}

// job is one request handed to a sender goroutine.
type job struct {
	req     Request
	planned time.Time
	at      time.Duration
}

// waitUntil blocks until t (or ctx ends): a runtime timer for long waits;
// then nanosleep(2) on a thread with 1 µs timer slack (runtime timers can
// fire up to ~1 ms late when the process is idle: the netpoller waits in
// whole milliseconds); then a spin of at most ~20 µs.
func waitUntil(ctx context.Context, timer *time.Timer, t time.Time) {
	for {
		d := time.Until(t)
		switch {
		case d <= 0:
			return
		case d > spinBelow:
			timer.Reset(d - spinBelow + 500*time.Microsecond)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				return
			}
		case d > 40*time.Microsecond:
			osSleep(d - 20*time.Microsecond)
		}
	}
}

// runOpen sends on schedule whatever the server does. The dispatcher hands
// each request to an idle sender goroutine, or starts a new one when all
// are busy, so a slow server never delays the next send; senders are reused
// so their grown stacks are too.
func (r *run) runOpen(ctx context.Context, sched schedule, start time.Time) {
	var wg sync.WaitGroup
	var inFlight atomic.Int64
	limit := int64(r.cfg.Load.MaxInFlight)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	jobs := make(chan job)
	defer preciseThread()()
	sender := func(j job) {
		defer wg.Done()
		for {
			r.send(r.ctxs[j.req.Stage], &j.req, j.planned, j.at)
			inFlight.Add(-1)
			var ok bool
			if j, ok = <-jobs; !ok {
				return
			}
		}
	}
	var i int64
	for ctx.Err() == nil {
		a, ok := sched.next()
		if !ok {
			break
		}
		r.rec.Planned(a.stage)
		if r.stopped[a.stage].Load() {
			continue
		}
		r.stage.Store(int64(a.stage))
		req := r.gen.next(i)
		req.Stage = a.stage
		i++
		planned := start.Add(a.at)
		waitUntil(ctx, timer, planned)
		if ctx.Err() != nil {
			break
		}
		if limit > 0 && inFlight.Load() >= limit {
			r.rec.Dropped(a.stage, "client_in_flight_limit", time.Since(planned))
			continue
		}
		inFlight.Add(1)
		j := job{req: req, planned: planned, at: a.at}
		select {
		case jobs <- j:
		default:
			wg.Add(1)
			go sender(j)
		}
	}
	close(jobs)
	wg.Wait()
}

func (r *run) send(ctx context.Context, req *Request, planned time.Time, at time.Duration) {
	res := getResult()
	now := time.Now()
	res.Planned, res.Sent, res.SchedDelay = at, now, now.Sub(planned)
	r.rec.Sent(req.Stage, now)
	r.client.Do(ctx, req, res)
	if res.ErrKind == "canceled" && r.stopped[req.Stage].Load() {
		res.ErrKind = "canceled_early_stop"
	}
	r.rec.Record(res)
	if r.csv != nil {
		r.csv.write(res)
	}
	putResult(res)
}

// runClosed runs concurrent stages one after another: `concurrency` clients
// each send their next request as soon as the previous one finishes, until
// num_requests have been sent.
func (r *run) runClosed(ctx context.Context, start time.Time) {
	var genMu sync.Mutex
	var idx int64
	for si, st := range r.cfg.Load.Stages {
		if ctx.Err() != nil {
			return
		}
		r.stage.Store(int64(si))
		stStart := time.Now()
		if si == 0 {
			stStart = start
		}
		r.metas[si].start = stStart
		r.metas[si].requested = -1
		r.metas[si].planned = 0
		var left atomic.Int64
		left.Store(int64(st.NumRequests))
		var wg sync.WaitGroup
		for w := 0; w < st.Concurrency; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r.ctxs[si].Err() == nil && left.Add(-1) >= 0 {
					r.rec.Planned(si)
					ready := time.Now()
					genMu.Lock()
					req := r.gen.next(idx)
					idx++
					genMu.Unlock()
					req.Stage = si
					r.send(r.ctxs[si], &req, ready, ready.Sub(start))
				}
			}()
		}
		wg.Wait()
	}
}

// monitor reports progress and runs the early-stop detector.
func (r *run) monitor(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	prog := time.NewTicker(r.opt.ProgressEvery)
	defer prog.Stop()
	var win <-chan time.Time
	if r.opt.EarlyStop && r.cfg.Load.Type != LoadConcurrent {
		t := time.NewTicker(r.opt.EarlyStopWindow)
		defer t.Stop()
		win = t.C
	}
	det := &detector{slo: time.Duration(r.cfg.SLO.TTFT)}
	curStage := -1
	for {
		select {
		case <-stop:
			return
		case <-prog.C:
			if r.opt.Progress != nil {
				r.opt.Progress(r.rec.Snapshot(int(r.stage.Load()), false))
			}
		case <-win:
			st := int(r.stage.Load())
			if st != curStage {
				det.reset()
				curStage = st
				r.rec.Snapshot(st, true)
				continue
			}
			l := r.rec.Snapshot(st, true)
			if reason := det.add(l); reason != "" && !r.stopped[st].Load() {
				r.stopped[st].Store(true)
				r.metas[st].stopReason = reason
				r.metas[st].stoppedAt = time.Now()
				r.cancels[st]()
			}
		}
	}
}

// detector decides that latency grows without bound: over the last
// `windows` windows the in-flight count (or the mean TTFT of completions)
// rose every window and at least doubled, above a floor.
type detector struct {
	slo      time.Duration
	inflight []int64
	ttft     []time.Duration
}

const detectWindows = 4

func (d *detector) reset() { d.inflight, d.ttft = d.inflight[:0], d.ttft[:0] }

func (d *detector) add(l Live) string {
	d.inflight = append(d.inflight, l.InFlight)
	d.ttft = append(d.ttft, l.WindowMeanTTFT)
	if len(d.inflight) > detectWindows+1 {
		d.inflight = d.inflight[1:]
		d.ttft = d.ttft[1:]
	}
	if len(d.inflight) < detectWindows+1 {
		return ""
	}
	if rising(d.inflight) && d.inflight[len(d.inflight)-1] >= 2*max(d.inflight[0], 1) && d.inflight[len(d.inflight)-1] >= 16 {
		return fmt.Sprintf("in-flight requests rose for %d windows in a row, %d → %d", detectWindows, d.inflight[0], d.inflight[len(d.inflight)-1])
	}
	last := d.ttft[len(d.ttft)-1]
	if d.ttft[0] > 0 && rising(d.ttft) && last >= 2*d.ttft[0] && (d.slo == 0 || last > d.slo) {
		return fmt.Sprintf("mean TTFT rose for %d windows in a row, %v → %v", detectWindows, d.ttft[0], last)
	}
	return ""
}

func rising[T int64 | time.Duration](v []T) bool {
	for i := 1; i < len(v); i++ {
		if v[i] <= v[i-1] {
			return false
		}
	}
	return true
}

// ErrNoRequests is returned when a config plans no request at all.
var ErrNoRequests = errors.New("the load plan sends no request")
