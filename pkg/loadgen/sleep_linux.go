package loadgen

import (
	"os"
	"syscall"
	"time"
	"unsafe"
)

// fineTimer sleeps with a timerfd that the Go runtime's network poller
// waits on. The runtime's own timers wake up to a millisecond late when
// the process is idle (its poller waits in whole milliseconds), which an
// open loop would report as latency; a timerfd makes the poller return as
// the kernel's high-resolution timer fires, and the sleeping goroutine
// holds no thread.
type fineTimer struct {
	f   *os.File
	fd  uintptr
	buf [8]byte
}

func newFineTimer() (*fineTimer, error) {
	const (
		clockMonotonic = 1
		tfdNonblock    = syscall.O_NONBLOCK
		tfdCloexec     = syscall.O_CLOEXEC
	)
	fd, _, errno := syscall.RawSyscall(syscall.SYS_TIMERFD_CREATE, clockMonotonic, tfdNonblock|tfdCloexec, 0)
	if errno != 0 {
		return nil, os.NewSyscallError("timerfd_create", errno)
	}
	// Non-blocking: os.NewFile hands it to the runtime's poller.
	return &fineTimer{f: os.NewFile(fd, "timerfd"), fd: fd}, nil
}

type itimerspec struct {
	interval, value syscall.Timespec
}

// sleep sleeps for d; a nil fineTimer uses the runtime's timer.
func (t *fineTimer) sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	if t == nil {
		time.Sleep(d)
		return
	}
	spec := itimerspec{value: syscall.NsecToTimespec(int64(d))}
	if _, _, errno := syscall.RawSyscall6(syscall.SYS_TIMERFD_SETTIME, t.fd, 0, uintptr(unsafe.Pointer(&spec)), 0, 0, 0); errno != 0 {
		time.Sleep(d)
		return
	}
	if _, err := t.f.Read(t.buf[:]); err != nil {
		time.Sleep(d)
	}
}

func (t *fineTimer) close() {
	if t != nil {
		t.f.Close()
	}
}
