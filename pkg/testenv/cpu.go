package testenv

import (
	"syscall"
	"testing"
	"time"
)

// CPUPerOp reports, when the returned function is called at the end of a
// benchmark, the CPU time (user and system) this process spent per
// operation, as "cpu-µs/op". On a small machine shared with other work
// the wall time of ns/op moves with the neighbours; the CPU an operation
// costs moves much less, and is what capacity is made of.
func CPUPerOp(b *testing.B) func() {
	start := cpuTime(b)
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64((cpuTime(b)-start).Microseconds())/float64(b.N), "cpu-µs/op")
		}
	}
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
