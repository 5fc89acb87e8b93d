package loadgen

import (
	"syscall"
	"time"
)

// osSleep blocks the calling thread in nanosleep(2). Unlike a runtime
// timer, which can fire up to ~1 ms late when every P is idle (the netpoller
// waits in whole milliseconds), it wakes within the kernel's timer slack.
func osSleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	_ = syscall.Nanosleep(&ts, nil)
}
