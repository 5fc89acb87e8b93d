package bench

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/fastepp/fastepp/loadgen"
)

// progress prints live progress: which strategy and stage, elapsed and an
// estimate of what remains. On a terminal it rewrites one line every
// second; elsewhere it prints a line every 5 seconds and at each stage.
type progress struct {
	w     io.Writer
	tty   bool
	mu    sync.Mutex
	runs  int // planned runs
	began time.Time
	plan  time.Duration // one run's planned send time

	run       int // current run index
	name      string
	repeat    int
	repeats   int
	runBegan  time.Time
	stages    []loadgen.Stage
	lastStage int
	lastPrint time.Time
	overhead  time.Duration // measured: run time beyond the plan (set-up, drain), mean so far
	finished  int
	line      bool // a rewritable line is on screen
}

func newProgress(w io.Writer, sc *Scenario, runs int) *progress {
	return &progress{w: w, tty: isTerminal(w), runs: runs, began: time.Now(), plan: sc.PlannedDuration(),
		overhead: 3*time.Second + sc.Settle, lastStage: -1}
}

func (p *progress) startRun(n int, name string, repeat, repeats int) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.run, p.name, p.repeat, p.repeats, p.runBegan, p.lastStage = n, name, repeat, repeats, time.Now(), -1
	p.clear()
	rep := ""
	if repeats > 1 {
		rep = fmt.Sprintf(", repeat %d/%d", repeat+1, repeats)
	}
	fmt.Fprintf(p.w, "bench: [%d/%d] %s%s: starting a fresh fleet (elapsed %s, ~%s left)\n", n+1, p.runs, name, rep,
		dur(time.Since(p.began)), dur(p.remaining(0)))
}

func (p *progress) startLoad(stages []loadgen.Stage) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	p.stages = stages
	p.mu.Unlock()
}

// remaining estimates the time left, given the current run's elapsed
// load time (call with mu held).
func (p *progress) remaining(inRun time.Duration) time.Duration {
	left := time.Duration(p.runs-p.run-1) * (p.plan + p.overhead)
	cur := p.plan + p.overhead - inRun
	if cur < p.overhead/2 {
		cur = p.overhead / 2
	}
	return left + cur
}

func (p *progress) live(l loadgen.Live) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// The stage by the clock (loadgen's Live.Stage is that of the next
	// planned send, which may lie in a later stage).
	nst := len(p.stages)
	stage := 0
	var planEnd time.Duration
	for i, s := range p.stages {
		planEnd += time.Duration(s.Duration)
		if l.Elapsed >= planEnd && i < nst-1 {
			stage = i + 1
		}
	}
	rate := ""
	if stage < nst {
		rate = trimFloat(p.stages[stage].Rate) + " req/s"
	}
	phase := fmt.Sprintf("stage %d/%d (%s)", stage+1, nst, rate)
	if l.Elapsed > planEnd {
		phase = fmt.Sprintf("draining %d in flight", l.InFlight)
	}
	msg := fmt.Sprintf("bench: [%d/%d] %s | %s | %s elapsed, ~%s left | sent %d done %d failed %d in flight %d | TTFT p50 %s p99 %s",
		p.run+1, p.runs, p.name, phase, dur(time.Since(p.began)), dur(p.remaining(l.Elapsed)),
		l.Sent, l.Done, l.Failed, l.InFlight, ms(l.TTFTp50), ms(l.TTFTp99))
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", msg)
		p.line = true
		return
	}
	if stage != p.lastStage || time.Since(p.lastPrint) >= 5*time.Second {
		fmt.Fprintln(p.w, msg)
		p.lastPrint = time.Now()
		p.lastStage = stage
	}
}

func (p *progress) endRun(took time.Duration) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	extra := took - p.plan
	if extra < 0 {
		extra = 0
	}
	p.overhead = (p.overhead*time.Duration(p.finished+1) + extra) / time.Duration(p.finished+2)
	p.finished++
	p.clear()
	fmt.Fprintf(p.w, "bench: [%d/%d] %s done in %s\n", p.run+1, p.runs, p.name, dur(took))
}

func (p *progress) note(s string) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
	fmt.Fprintln(p.w, "bench: "+s)
}

func (p *progress) done() {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
}

func (p *progress) clear() {
	if p.line {
		fmt.Fprint(p.w, "\r\033[K")
		p.line = false
	}
}

func dur(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	d = d.Round(time.Second)
	if d < time.Minute {
		return fmt.Sprintf("%ds", int(d.Seconds()))
	}
	return strings.TrimSuffix(fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60), "m00s")
}

func ms(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < 10*time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	default:
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
}
