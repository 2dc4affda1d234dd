package throttle

import (
	"testing"
	"time"
)

func TestThrottle(t *testing.T) {
	th := New(time.Hour)
	if ok, n := th.Allow(); !ok || n != 0 {
		t.Fatalf("first event: %v %d, want logged", ok, n)
	}
	for range 5 {
		if ok, _ := th.Allow(); ok {
			t.Fatal("event within the interval was logged")
		}
	}
	th.next = time.Now() // the interval has passed
	if ok, n := th.Allow(); !ok || n != 5 {
		t.Fatalf("after the interval: %v %d, want logged with 5 suppressed", ok, n)
	}
}
