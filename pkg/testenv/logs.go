package testenv

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// Logs collects what a logger writes, for a test to read or wait on while
// the code under test still logs from its goroutines.
type Logs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// NewLogger returns a debug-level text logger writing to logs; the test's
// log gets them when it fails.
func NewLogger(t testing.TB) (*slog.Logger, *Logs) {
	l := &Logs{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", l)
		}
	})
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug})), l
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Lines returns the lines that contain every one of words.
func (l *Logs) Lines(words ...string) []string {
	var out []string
	for line := range strings.Lines(l.String()) {
		if containsAll(line, words) {
			out = append(out, strings.TrimSuffix(line, "\n"))
		}
	}
	return out
}

func containsAll(s string, words []string) bool {
	for _, w := range words {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return true
}
