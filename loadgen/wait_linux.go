package loadgen

import (
	"runtime"
	"syscall"
	"time"
)

// osSleep blocks the calling thread in nanosleep(2). Unlike a runtime
// timer, which can fire up to ~1 ms late when every P is idle (the netpoller
// waits in whole milliseconds), it wakes within the thread's timer slack.
func osSleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	_ = syscall.Nanosleep(&ts, nil)
}

const (
	prSetTimerSlack = 29
	prGetTimerSlack = 30
)

// preciseThread locks the calling goroutine to its OS thread and sets that
// thread's timer slack to 1 µs (Linux's default is 50 µs), so nanosleep
// wakes within microseconds. The returned func undoes both.
func preciseThread() func() {
	runtime.LockOSThread()
	old, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prGetTimerSlack, 0, 0)
	if errno != 0 {
		return runtime.UnlockOSThread
	}
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, 1000, 0)
	return func() {
		_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, old, 0)
		runtime.UnlockOSThread()
	}
}
