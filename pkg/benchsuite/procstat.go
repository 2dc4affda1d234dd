package benchsuite

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/joingate/joingate/pkg/launch"
)

// procsCPU is the CPU time the processes have used (user and system).
func procsCPU(procs []*launch.Process) time.Duration {
	const clockTicks = 100 // USER_HZ on Linux
	var total time.Duration
	for _, c := range procs {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Cmd.Process.Pid))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses and may
		// hold spaces: state is field 3, utime 14, stime 15.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		f := strings.Fields(rest)
		if len(f) < 13 {
			continue
		}
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(utime+stime) * time.Second / clockTicks
	}
	return total
}

// machineBusy is the CPU time the whole machine has spent busy (not idle
// or waiting for I/O), from /proc/stat.
func machineBusy() time.Duration {
	const clockTicks = 100
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest time is already counted in user
			break
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTicks
}

// procsMemory sums a /proc/PID/status memory field (VmRSS, VmHWM) of the
// processes, in MiB.
func procsMemory(procs []*launch.Process, field string) float64 {
	var kib int64
	for _, c := range procs {
		kib += procStatusKiB(c.Cmd.Process.Pid, field)
	}
	return float64(kib) / 1024
}

func procStatusKiB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}
