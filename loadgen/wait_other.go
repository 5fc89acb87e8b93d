//go:build !linux

package loadgen

import "time"

func osSleep(d time.Duration) { time.Sleep(d) }

func preciseThread() func() { return func() {} }
