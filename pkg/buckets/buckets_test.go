package buckets

import (
	"testing"
	"time"
)

func TestLatency(t *testing.T) {
	b := Latency(300 * time.Millisecond)
	found := false
	for i, v := range b {
		if i > 0 && v <= b[i-1] {
			t.Fatalf("buckets not increasing: %v", b)
		}
		found = found || v == 0.3
	}
	if !found || b[0] > 0.0001 || b[len(b)-1] < 1 {
		t.Fatalf("buckets %v: want 0.3 as an edge, sub-100µs first, 1s last", b)
	}
	if n := len(Latency(250 * time.Millisecond)); n != len(b)-1 {
		t.Fatalf("a timeout already an edge was added twice: %d buckets", n)
	}
}
