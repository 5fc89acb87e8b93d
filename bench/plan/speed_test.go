package plan

import (
	"syscall"
	"testing"
	"time"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHourAt100On32 simulates one hour of the shared-prefix workload at
// 100 req/s on 32 MI300X replicas under each strategy, and reports the CPU
// seconds that hour costs (the target: under 60 s on this machine). The hour
// is split over b.N fresh runs (each starting from an idle fleet), so
// -benchtime 1x is one continuous hour, the figure to quote, and a smoke run
// (-benchtime 100x) stays one simulated hour in total.
//
//	go test ./bench/plan -run '^$' -bench HourAt100On32 -benchtime 1x
func BenchmarkHourAt100On32(b *testing.B) {
	for _, st := range []string{RoundRobin, EPP} {
		b.Run(st, func(b *testing.B) {
			opt := mi300x(b)
			opt.Replicas = 32
			opt.NoEarlyStop = true
			var err error
			if opt.Strategy, err = ParseStrategy(st, ""); err != nil {
				b.Fatal(err)
			}
			cfg := sharedPrefix(b)
			var r *Result
			window := time.Hour / time.Duration(b.N)
			c0 := cpuTime()
			for range b.N {
				r = run(b, opt, cfg, 100, window)
			}
			b.ReportMetric((cpuTime() - c0).Seconds(), "cpu-s/sim-hour")
			b.ReportMetric(float64(r.Requests), "requests")
			b.ReportMetric(float64(r.Steps), "steps")
			b.ReportMetric(r.TTFT.P90*1000, "ttft-p90-ms")
		})
	}
}
