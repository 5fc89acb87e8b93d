package engine

import "time"

// stepWaiter sleeps a Runner until its step's modelled end.
type stepWaiter interface {
	// wait sleeps for d; it returns false once close has been called.
	wait(d time.Duration) bool
	// close ends the current and every later wait.
	close()
}

// timerWaiter is the portable stepWaiter, on a Go timer.
type timerWaiter struct {
	t    *time.Timer
	quit chan struct{}
}

func newTimerWaiter() *timerWaiter {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &timerWaiter{t: t, quit: make(chan struct{})}
}

func (w *timerWaiter) wait(d time.Duration) bool {
	w.t.Reset(d)
	select {
	case <-w.t.C:
		return true
	case <-w.quit:
		w.t.Stop()
		return false
	}
}

func (w *timerWaiter) close() { close(w.quit) }
