//go:build !linux

package loadgen

import (
	"errors"
	"time"
)

type fineTimer struct{}

func newFineTimer() (*fineTimer, error) { return nil, errors.New("no timerfd") }

func (*fineTimer) sleep(d time.Duration) {
	if d > 0 {
		time.Sleep(d)
	}
}

func (*fineTimer) close() {}
