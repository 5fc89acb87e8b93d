package engine

import (
	"testing"
	"time"
)

// TestRunnerFollowsTheModelledTimeline runs one request in real time: its
// token times are the modelled step chain (exactly, unless the host starved
// the runner past MaxLag, which Stats.Lag then shows), and no token is
// delivered before its modelled time.
func TestRunnerFollowsTheModelledTimeline(t *testing.T) {
	e := newEngine(t, "mi300x", "llama-3.1-8b", nil)
	clock := NewRealClock()
	r := Start(e, clock)
	defer r.Stop()
	req := NewRequest(prompt(1, 300), 8, false, "", 0)
	req.Ready = make(chan struct{}, 1)
	req.NotifyTokens = true
	if err := r.Submit(req); err != nil {
		t.Fatal(err)
	}
	seen := 0
	var times []time.Duration
	var p Progress
	deadline := time.After(10 * time.Second)
	for !p.Done {
		select {
		case <-req.Ready:
		case <-deadline:
			t.Fatalf("request not done after 10s: %+v", p)
		}
		now := clock.Now()
		times, p = e.Progress(req, 0, times[:0])
		for _, at := range times[seen:] {
			if at > now {
				t.Fatalf("token modelled at %v delivered early, at %v", at, now)
			}
		}
		seen = len(times)
	}
	if len(times) != 8 || p.Reason != FinishLength {
		t.Fatalf("%d tokens, reason %v", len(times), p.Reason)
	}
	if e.Stats().Lag > 0 {
		t.Logf("host starved the runner (lag %v): spacing not checked exactly", e.Stats().Lag)
		return
	}
	if got, want := times[0]-req.Arrival, e.StepTime(300, 300); got != want {
		t.Errorf("TTFT %v, want %v", got, want)
	}
	for k := 1; k < 8; k++ {
		if got, want := times[k]-times[k-1], e.StepTime(1, 300+k); got != want {
			t.Errorf("token %d after %v, want %v", k, got, want)
		}
	}
}

// TestSimulateLimitedCapsInFlight: with a cap, no more than limit requests
// are ever between submission and finish, a delayed request's Arrival is
// when a slot freed, and every request still finishes.
func TestSimulateLimitedCapsInFlight(t *testing.T) {
	for _, limit := range []int{1, 3, 8} {
		e := newEngine(t, "mi300x", "llama-3.1-8b", nil)
		arr := make([]Arrival, 20)
		for i := range arr {
			arr[i] = Arrival{At: time.Duration(i) * time.Millisecond, Req: NewRequest(prompt(uint32(i), 64), 8, false, "", 0)}
		}
		if _, errs := SimulateLimited(e, &VirtualClock{}, arr, limit); len(errs) > 0 {
			t.Fatal(errs)
		}
		for _, a := range arr {
			_, p := e.Progress(a.Req, 0, nil)
			if !p.Done {
				t.Fatalf("limit %d: a request did not finish", limit)
			}
			if a.Req.Arrival < a.At {
				t.Errorf("limit %d: submitted at %v before it arrived at %v", limit, a.Req.Arrival, a.At)
			}
			inFlight := 0
			for _, b := range arr {
				if b.Req.Arrival <= a.Req.Arrival && b.Req.finishedAt > a.Req.Arrival {
					inFlight++
				}
			}
			if inFlight > limit {
				t.Errorf("limit %d: %d requests in flight at %v", limit, inFlight, a.Req.Arrival)
			}
		}
	}
}
