package reload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/joingate/joingate/pkg/testenv"
)

const (
	waitTimeout  = 10 * time.Second
	metricReload = "joingate_config_reloads_total"
	metricOK     = "joingate_config_last_reload_successful"
	metricTime   = "joingate_config_last_reload_success_timestamp_seconds"
	msgWatching  = "watching config file"
	msgUnchanged = "config file unchanged"
)

// waitFor polls cond until it holds, failing the test after waitTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !testenv.Eventually(waitTimeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
	}
}

// count returns how many records with message msg logs has.
func count(logs *testenv.Logs, msg string) int {
	return len(logs.Lines(fmt.Sprintf("msg=%q", msg)))
}

// harness runs a Watcher on one file whose Reload records what it read.
type harness struct {
	t    *testing.T
	path string
	reg  *prometheus.Registry
	logs *testenv.Logs
	w    *Watcher

	mu    sync.Mutex
	reads []string // content each Reload call read
	// failIf makes Reload fail when it returns an error for the content.
	failIf func(content string) error

	cancel context.CancelFunc
	done   chan error
}

// newHarness builds a Watcher for path as main would; start runs it.
func newHarness(t *testing.T, path string) *harness {
	t.Helper()
	h := &harness{t: t, path: path, reg: prometheus.NewRegistry(), logs: &testenv.Logs{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("watcher logs:\n%s", h.logs)
		}
	})
	w, err := New(Options{
		Path:       path,
		Reload:     h.reload,
		Logger:     slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: h.reg,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.w = w
	return h
}

func (h *harness) reload() ([]string, error) {
	b, err := os.ReadFile(h.path)
	if err != nil {
		return nil, fmt.Errorf("cannot read %q: %w", h.path, err)
	}
	h.mu.Lock()
	h.reads = append(h.reads, string(b))
	failIf := h.failIf
	h.mu.Unlock()
	if failIf != nil {
		return nil, failIf(string(b))
	}
	return nil, nil
}

// start runs the Watcher until the test ends and waits until it watches.
func (h *harness) start() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.w.Run(ctx) }()
	h.t.Cleanup(h.stop)
	waitFor(h.t, "the watcher to start", func() bool { return count(h.logs, msgWatching) == 1 })
}

// stop cancels Run and fails the test unless it returns nil promptly.
func (h *harness) stop() {
	h.t.Helper()
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
		h.done <- nil // later stops return at once
	case <-time.After(waitTimeout):
		h.t.Fatalf("Run did not return within %v of cancel", waitTimeout)
	}
}

func (h *harness) calls() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.reads)
}

func (h *harness) metric(name string, labels ...string) float64 {
	h.t.Helper()
	return testenv.Value(h.t, h.reg, name, labels...)
}

// waitReloads waits until the success and failure counters reach the values.
func (h *harness) waitReloads(success, failure float64) {
	h.t.Helper()
	waitFor(h.t, fmt.Sprintf("%v successful and %v failed reloads", success, failure), func() bool {
		return h.metric(metricReload, resultSuccess) == success && h.metric(metricReload, resultFailure) == failure
	})
}

// settle makes an event that does not change the file and waits until the
// watcher has checked the file after it: every earlier event has then been
// acted on.
func (h *harness) settle() {
	h.t.Helper()
	n := count(h.logs, msgUnchanged)
	writeFile(h.t, filepath.Join(filepath.Dir(h.path), "unrelated.txt"), fmt.Sprint(time.Now().UnixNano()))
	waitFor(h.t, "a check after an unrelated write", func() bool { return count(h.logs, msgUnchanged) > n })
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// renameOver writes content to a temporary file next to path and renames it
// over path, as vim and sed -i do.
func renameOver(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, name string) {
	t.Helper()
	if err := os.Symlink(target, name); err != nil {
		t.Fatal(err)
	}
}

func TestNewValidates(t *testing.T) {
	ok := func() ([]string, error) { return nil, nil }
	f := func(name string, opts Options, want string) {
		t.Helper()
		_, err := New(opts)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: New error %v, want one containing %q", name, err, want)
		}
	}
	f("no path", Options{Reload: ok}, "Path is empty")
	f("no reload", Options{Path: "x.yaml"}, "Reload is nil")
	f("negative debounce", Options{Path: "x.yaml", Reload: ok, Debounce: -time.Second}, "Debounce is negative")
}

func TestMetricsAtStart(t *testing.T) {
	t.Parallel()
	h := newHarness(t, filepath.Join(t.TempDir(), "joingate.yaml"))
	want := `
# HELP joingate_config_last_reload_successful 1 if the last configuration reload succeeded (or none was attempted yet), 0 if it failed.
# TYPE joingate_config_last_reload_successful gauge
joingate_config_last_reload_successful 1
# HELP joingate_config_reloads_total Configuration reloads by result (success, failure); a failure keeps the previous configuration.
# TYPE joingate_config_reloads_total counter
joingate_config_reloads_total{result="failure"} 0
joingate_config_reloads_total{result="success"} 0
`
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want), metricReload, metricOK); err != nil {
		t.Error(err)
	}
	// The process started with a loaded configuration: its time is now.
	if ts := h.metric(metricTime); time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("%s = %v at start, want about now", metricTime, ts)
	}
}

func TestWriteReloadsOnce(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "joingate.yaml")
	writeFile(t, path, "limit: 1\n")
	h := newHarness(t, path)
	h.start()

	writeFile(t, path, "limit: 2\n")
	h.waitReloads(1, 0)
	h.settle()
	if got := h.calls(); len(got) != 1 || got[0] != "limit: 2\n" {
		t.Errorf("Reload calls read %q, want one reading the new content", got)
	}
	if got := h.metric(metricReload, resultSuccess); got != 1 {
		t.Errorf("%s{success} = %v, want 1", metricReload, got)
	}
}

func TestRenameOverReloads(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "joingate.yaml")
	writeFile(t, path, "limit: 1\n")
	h := newHarness(t, path)
	h.start()

	renameOver(t, path, "limit: 2\n")
	h.waitReloads(1, 0)
	h.settle()
	if got := h.calls(); len(got) != 1 || got[0] != "limit: 2\n" {
		t.Errorf("Reload calls read %q, want one reading the new content", got)
	}
}

// TestKubernetesConfigMapSwap updates the file the way the kubelet updates a
// ConfigMap volume: nothing happens to joingate.yaml itself.
func TestKubernetesConfigMapSwap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// swap publishes content in a new timestamped directory and points
	// ..data at it atomically, then removes the previous one.
	prev := ""
	swap := func(stamp, content string) {
		t.Helper()
		ts := filepath.Join(dir, "..2026_11_25_"+stamp)
		if err := os.Mkdir(ts, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(ts, "joingate.yaml"), content)
		symlink(t, filepath.Base(ts), filepath.Join(dir, "..data_tmp"))
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		if prev != "" {
			if err := os.RemoveAll(prev); err != nil {
				t.Fatal(err)
			}
		}
		prev = ts
	}
	swap("a", "limit: 1\n")
	path := filepath.Join(dir, "joingate.yaml")
	symlink(t, filepath.Join("..data", "joingate.yaml"), path)
	h := newHarness(t, path)
	h.start()

	swap("b", "limit: 2\n")
	h.waitReloads(1, 0)
	// Again, now that the directory the link pointed into at start is gone.
	swap("c", "limit: 3\n")
	h.waitReloads(2, 0)
	h.settle()
	if got, want := h.calls(), []string{"limit: 2\n", "limit: 3\n"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Reload calls read %q, want %q", got, want)
	}
}

// TestSymlinkIntoOtherDirectory replaces the file a symlink points to in
// another directory, where the watched directory sees no event.
func TestSymlinkIntoOtherDirectory(t *testing.T) {
	t.Parallel()
	dir, other := t.TempDir(), t.TempDir()
	target := filepath.Join(other, "real.yaml")
	writeFile(t, target, "limit: 1\n")
	path := filepath.Join(dir, "joingate.yaml")
	symlink(t, target, path)
	h := newHarness(t, path)
	h.start()

	renameOver(t, target, "limit: 2\n")
	h.waitReloads(1, 0)
	if got := h.calls(); len(got) != 1 || got[0] != "limit: 2\n" {
		t.Errorf("Reload calls read %q, want one reading the new content", got)
	}
}

// TestChangeBeforeRunReloads: New records the content the caller loaded, so
// a change made before the watch is set up is not missed.
func TestChangeBeforeRunReloads(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "joingate.yaml")
	writeFile(t, path, "limit: 1\n")
	h := newHarness(t, path)
	writeFile(t, path, "limit: 2\n")
	h.start()
	h.waitReloads(1, 0)
	if got := h.calls(); len(got) != 1 || got[0] != "limit: 2\n" {
		t.Errorf("Reload calls read %q, want one reading the new content", got)
	}
}

// TestBurstOfWritesReloadsOnce: writes within one debounce window cause one
// reload, of the last content. The window is long so that the writes, which
// take microseconds, surely fall into it.
func TestBurstOfWritesReloadsOnce(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "joingate.yaml")
	writeFile(t, path, "limit: 0\n")
	h := newHarness(t, path)
	h.w.window = time.Second
	h.start()

	for i := 1; i <= 5; i++ {
		writeFile(t, path, fmt.Sprintf("limit: %d\n", i))
	}
	h.waitReloads(1, 0)
	h.settle()
	if got := h.calls(); len(got) != 1 || got[0] != "limit: 5\n" {
		t.Errorf("Reload calls read %q, want one reading the last content", got)
	}
}

func TestUnchangedContentDoesNotReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "joingate.yaml")
	const content = "limit: 1\n"
	writeFile(t, path, content)
	h := newHarness(t, path)
	h.start()

	steps := []struct {
		name string
		do   func()
	}{
		{"touch", func() {
			future := time.Now().Add(time.Hour)
			if err := os.Chtimes(path, future, future); err != nil {
				t.Fatal(err)
			}
		}},
		{"rewrite the same bytes", func() { writeFile(t, path, content) }},
		{"rename the same bytes over it", func() { renameOver(t, path, content) }},
		{"write another file", func() { writeFile(t, filepath.Join(dir, "other.yaml"), "x: 1\n") }},
		{"remove another file", func() {
			if err := os.Remove(filepath.Join(dir, "other.yaml")); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, s := range steps {
		n := count(h.logs, msgUnchanged)
		s.do()
		waitFor(t, "a check after: "+s.name, func() bool { return count(h.logs, msgUnchanged) > n })
		if got := h.calls(); len(got) != 0 {
			t.Fatalf("after %s: Reload called %d times, want 0", s.name, len(got))
		}
	}
	if got := h.metric(metricReload, resultSuccess) + h.metric(metricReload, resultFailure); got != 0 {
		t.Errorf("%s = %v in all, want 0", metricReload, got)
	}
}

func TestFailedReloadKeepsOldConfig(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "joingate.yaml")
	writeFile(t, path, "limit: 1\n")
	h := newHarness(t, path)
	h.failIf = func(content string) error {
		if strings.Contains(content, "bad") {
			return fmt.Errorf("config %q: key \"limit\": not a number", path)
		}
		return nil
	}
	h.start()
	started := h.metric(metricTime)

	writeFile(t, path, "limit: bad\n")
	h.waitReloads(0, 1)
	if got := h.metric(metricOK); got != 0 {
		t.Errorf("%s = %v after a failure, want 0", metricOK, got)
	}
	if got := h.metric(metricTime); got != started {
		t.Errorf("%s moved to %v on a failure, want %v", metricTime, got, started)
	}
	if logs := h.logs.String(); !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, `key \"limit\": not a number`) {
		t.Errorf("no Error log naming the key; logs:\n%s", logs)
	}

	writeFile(t, path, "limit: 2\n")
	h.waitReloads(1, 1)
	if got := h.metric(metricOK); got != 1 {
		t.Errorf("%s = %v after a success, want 1", metricOK, got)
	}
	if got := h.metric(metricTime); got <= started {
		t.Errorf("%s = %v after a success, want later than %v", metricTime, got, started)
	}
}

func TestTriggerReloadsUnchangedFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "joingate.yaml")
	writeFile(t, path, "limit: 1\n")
	h := newHarness(t, path)
	h.start()

	h.w.Trigger("test")
	h.waitReloads(1, 0)
	h.w.Trigger("test")
	h.waitReloads(2, 0)
	if got := h.calls(); len(got) != 2 {
		t.Errorf("Reload called %d times for 2 Triggers, want 2", len(got))
	}
}

func TestTriggerBurstCoalesces(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "joingate.yaml")
	writeFile(t, path, "limit: 1\n")
	h := newHarness(t, path)
	// Reload blocks until released, so the burst arrives while it runs.
	started, release := make(chan struct{}), make(chan struct{})
	h.failIf = func(string) error {
		select {
		case started <- struct{}{}:
			<-release
		case <-release: // closed: the test is over
		}
		return nil
	}
	recv := func(what string) {
		t.Helper()
		select {
		case <-started:
		case <-time.After(waitTimeout):
			t.Fatalf("timed out waiting for %s", what)
		}
	}
	h.start()
	t.Cleanup(func() { close(release) }) // before stop, which runs first

	h.w.Trigger("test")
	recv("the first reload")
	const burst = 100
	for range burst {
		h.w.Trigger("test") // never blocks, though Reload is busy
	}
	if n := len(h.w.trigger); n != 1 {
		t.Fatalf("%d reloads pending after a burst of %d Triggers, want 1", n, burst)
	}
	release <- struct{}{}
	recv("the reload the burst asked for")
	if n := len(h.w.trigger); n != 0 {
		t.Fatalf("%d reloads still pending, want 0", n)
	}
	release <- struct{}{}
	h.waitReloads(2, 0)
	if got := h.calls(); len(got) != 2 {
		t.Errorf("Reload called %d times for 1+%d Triggers, want 2", len(got), burst)
	}
}

// TestDirectoryRemovedAndRecreated: the watcher survives losing its
// directory and watches it again when it is back.
func TestDirectoryRemovedAndRecreated(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "conf")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "joingate.yaml")
	writeFile(t, path, "limit: 1\n")
	h := newHarness(t, path)
	h.w.retry = 10 * time.Millisecond
	h.start()

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	// Wait until the watcher has looked at the file after the removal and
	// failed to watch again since: only a retry can bring the watch back.
	waitFor(t, "the watcher to give up for now", func() bool {
		logs := h.logs.String()
		return strings.Contains(logs, "lost the watch") && strings.Contains(logs, "cannot read config file") &&
			strings.Contains(logs[strings.Index(logs, "cannot read config file"):], "still cannot watch")
	})
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Atomically, so that a check on recovery cannot see a half-written file.
	renameOver(t, path, "limit: 2\n")
	h.waitReloads(1, 0)
	// The watch is back, not just the check on recovery.
	writeFile(t, path, "limit: 3\n")
	h.waitReloads(2, 0)
	if got := h.calls(); fmt.Sprint(got) != fmt.Sprint([]string{"limit: 2\n", "limit: 3\n"}) {
		t.Errorf("Reload calls read %q", got)
	}
	select {
	case err := <-h.done:
		t.Fatalf("Run returned %v while its context is live", err)
	default:
	}
}

func TestRunFailsWithoutDirectory(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "missing", "joingate.yaml")
	h := newHarness(t, path)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	err := h.w.Run(ctx)
	if err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("Run error %v, want one wrapping ErrNotExist naming %q", err, path)
	}
}

// TestRunStopsAndCleansUp is not parallel: it counts the process's goroutines.
func TestRunStopsAndCleansUp(t *testing.T) {
	before := runtime.NumGoroutine()
	path := filepath.Join(t.TempDir(), "joingate.yaml")
	writeFile(t, path, "limit: 1\n")
	h := newHarness(t, path)
	h.start()
	if err := h.w.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run: %v, want ErrRunning", err)
	}
	writeFile(t, path, "limit: 2\n") // leaves a debounce timer and fsnotify busy
	h.w.Trigger("test")
	h.waitReloads(1, 0)

	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		h.done <- nil
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return within 2s of cancel")
	}
	waitFor(t, fmt.Sprintf("goroutines back to %d", before), func() bool { return runtime.NumGoroutine() <= before })
}
