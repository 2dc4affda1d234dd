// Package reload tells joingate when to reload its configuration file: when
// the file's content changes on disk, or when asked to (main calls Trigger on
// SIGHUP).
//
// A Watcher watches the file's directory, not the file, because the ways a
// configuration file is replaced rarely write to the watched inode:
//
//   - editors and tools such as vim and sed -i write a temporary file and
//     rename it over the file, which replaces the inode;
//   - Kubernetes mounts a ConfigMap key as a symlink chain
//     joingate.yaml -> ..data/joingate.yaml, ..data -> ..<timestamp>, and
//     updates it by renaming a new ..data_tmp symlink over ..data, so the
//     only event is on ..data, never on joingate.yaml.
//
// Every event in the directory (and, when the file is a symlink into another
// directory, in that directory too) starts a debounce window; when it closes
// the Watcher hashes the file's content (following symlinks) and calls Reload
// only if the hash differs from that of the content last handed to Reload.
// Touching the file, rewriting the same bytes or writing other files in the
// directory therefore costs one read of the file and no reload.
package reload

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	// DefaultDebounce is the debounce window used when Options.Debounce is 0.
	DefaultDebounce = 100 * time.Millisecond
	// maxWaitWindows bounds, in debounce windows, how long a steady stream
	// of events (a log file written in the same directory) can postpone a
	// check of the file.
	maxWaitWindows = 10
	// defaultRetry is how often a Watcher that lost its watch (directory
	// removed or renamed, fsnotify failed) tries to watch again.
	defaultRetry = time.Second
)

// ErrRunning is returned by Run when the Watcher is already running.
var ErrRunning = errors.New("reload: watcher is already running")

// Options configure a Watcher.
type Options struct {
	// Path is the configuration file; its directory is watched.
	Path string
	// Reload loads and applies the file and returns the keys it changed,
	// for the log; an error keeps the old configuration. It is called
	// from Run's goroutine, one call at a time.
	Reload func() (changed []string, err error)
	// Debounce is the quiet period after the last event in the directory
	// before the file is checked: events within it cause one check, and so
	// at most one reload. 0 means DefaultDebounce.
	Debounce time.Duration
	// Logger receives the Watcher's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the Watcher's metrics; nil uses a private registry.
	Registerer prometheus.Registerer
}

// validate reports what is wrong with o; it changes nothing.
func (o *Options) validate() error {
	if o.Path == "" {
		return errors.New("reload: Options.Path is empty")
	}
	if o.Reload == nil {
		return errors.New("reload: Options.Reload is nil")
	}
	if o.Debounce < 0 {
		return fmt.Errorf("reload: Options.Debounce is negative (%v)", o.Debounce)
	}
	return nil
}

// Watcher calls Reload when the configuration file changes or when Trigger
// is called. Build it with New and start it with Run.
type Watcher struct {
	path    string // absolute, cleaned
	dir     string // filepath.Dir(path)
	reload  func() ([]string, error)
	window  time.Duration // debounce window
	retry   time.Duration // between attempts to watch again
	log     *slog.Logger
	metrics *metrics
	trigger chan string // the cause; capacity 1: pending Triggers coalesce
	running atomic.Bool

	// Owned by New, then by Run's goroutine.
	loaded     [sha256.Size]byte // hash of the content last handed to Reload
	haveLoaded bool              // loaded is known
	unreadable bool              // the last read of the file failed
}

// New validates opts, registers the metrics and records the file's current
// content as the loaded one (the caller loaded it before): Run reloads only
// when the content differs from it. New starts nothing.
func New(opts Options) (*Watcher, error) {
	if opts.Debounce == 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	path, err := filepath.Abs(opts.Path)
	if err != nil {
		return nil, fmt.Errorf("reload: config file %q: %w", opts.Path, err)
	}
	w := &Watcher{
		path:    path,
		dir:     filepath.Dir(path),
		reload:  opts.Reload,
		window:  opts.Debounce,
		retry:   defaultRetry,
		log:     opts.Logger.With("component", "reload"),
		metrics: newMetrics(opts.Registerer),
		trigger: make(chan string, 1),
	}
	if sum, err := hashFile(w.path); err == nil {
		w.loaded, w.haveLoaded = sum, true
	}
	return w, nil
}

// Trigger asks for a reload now, whether or not the file changed; cause
// ("SIGHUP") is logged with it. It never blocks; Triggers made while one
// is pending coalesce into one reload. A Trigger made before Run starts is
// served when it starts.
func (w *Watcher) Trigger(cause string) {
	select {
	case w.trigger <- cause:
	default:
	}
}

// Run watches the configuration file until ctx is done, then returns nil
// once everything it started has stopped (an in-progress Reload is waited
// for). It returns an error only at start, when the file's directory cannot
// be watched (it does not exist, or the inotify limits are exhausted). Later
// failures (the directory removed, fsnotify errors) are logged and Run keeps
// trying to watch again every second.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer w.running.Store(false)

	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("cannot watch config file %q: %w", w.path, err)
	}
	l := newLoop(w, fw)
	defer l.close()
	if err := fw.Add(w.dir); err != nil {
		return fmt.Errorf("cannot watch the directory of config file %q: %w", w.path, err)
	}
	w.log.Info("watching config file", "path", w.path, "dir", w.dir)
	l.syncWatches()
	// The file may have changed between New and the watch above.
	w.check("start")
	return l.run(ctx)
}

// loop is the state of one Run.
type loop struct {
	*Watcher
	fw      *fsnotify.Watcher // nil after fsnotify failed, until a retry
	watched []string          // directories watched after the last sync
	// degraded is set while a wanted directory is not watched.
	degraded bool

	checkTimer *time.Timer
	checkC     <-chan time.Time // nil unless a check is pending
	firstEvent time.Time        // since the last check
	retryTimer *time.Timer
	retryC     <-chan time.Time // nil unless a retry is pending
}

func newLoop(w *Watcher, fw *fsnotify.Watcher) *loop {
	l := &loop{
		Watcher:    w,
		fw:         fw,
		checkTimer: time.NewTimer(time.Hour),
		retryTimer: time.NewTimer(time.Hour),
	}
	l.checkTimer.Stop()
	l.retryTimer.Stop()
	return l
}

func (l *loop) run(ctx context.Context) error {
	for {
		var events <-chan fsnotify.Event
		var errs <-chan error
		if l.fw != nil {
			events, errs = l.fw.Events, l.fw.Errors
		}
		select {
		case <-ctx.Done():
			l.log.Info("stopped watching config file", "path", l.path)
			return nil
		case cause := <-l.trigger:
			l.forceReload(cause)
		case ev, ok := <-events:
			if !ok {
				l.lostWatcher()
				continue
			}
			l.log.Debug("config directory event", "event", ev.String())
			if ev.Has(fsnotify.Remove|fsnotify.Rename) && slices.Contains(l.watched, filepath.Clean(ev.Name)) {
				// fsnotify has dropped this watch; get it back when the
				// directory is there again.
				l.syncWatches()
			}
			l.armDebounce()
		case err, ok := <-errs:
			if !ok {
				l.lostWatcher()
				continue
			}
			// Events may be lost (fsnotify.ErrEventOverflow): look at the
			// file anyway.
			l.log.Warn("error watching config file", "path", l.path, "err", err)
			l.syncWatches()
			l.armDebounce()
		case <-l.checkC:
			l.checkC = nil
			l.check("file changed")
			// A symlink may now point into another directory.
			l.syncWatches()
		case <-l.retryC:
			l.retryC = nil
			l.retryWatch()
		}
	}
}

func (l *loop) close() {
	l.checkTimer.Stop()
	l.retryTimer.Stop()
	if l.fw != nil {
		// Close waits for fsnotify's reader goroutine to exit.
		if err := l.fw.Close(); err != nil {
			l.log.Warn("cannot close config file watcher", "path", l.path, "err", err)
		}
	}
}

// armDebounce schedules a check one window after now, but no later than
// maxWaitWindows windows after the first event since the last check.
func (l *loop) armDebounce() {
	now := time.Now()
	if l.checkC == nil {
		l.firstEvent = now
	}
	wait := l.window
	if left := l.firstEvent.Add(maxWaitWindows * l.window).Sub(now); left < wait {
		wait = max(left, 0)
	}
	l.checkTimer.Reset(wait)
	l.checkC = l.checkTimer.C
}

func (l *loop) armRetry() {
	if l.retryC == nil {
		l.retryTimer.Reset(l.retry)
		l.retryC = l.retryTimer.C
	}
}

// lostWatcher handles fsnotify closing its channels, which it does only when
// closed: drop it and make a new one at the next retry.
func (l *loop) lostWatcher() {
	l.log.Error("config file watcher stopped unexpectedly; retrying", "path", l.path)
	l.fw.Close()
	l.fw, l.watched = nil, nil
	l.setDegraded(true)
}

func (l *loop) retryWatch() {
	if l.fw == nil {
		fw, err := fsnotify.NewWatcher()
		if err != nil {
			l.log.Debug("cannot create config file watcher", "path", l.path, "err", err)
			l.armRetry()
			return
		}
		l.fw = fw
	}
	if l.syncWatches() {
		// Changes made while nothing was watched went unseen.
		l.check("watch restored")
	}
}

// wantedDirs returns the directories to watch: the file's, and the one its
// symlinks finally point into if that is another one.
func (l *loop) wantedDirs() []string {
	want := []string{l.dir}
	real, err := filepath.EvalSymlinks(l.path)
	if err != nil {
		return want
	}
	target := filepath.Dir(real)
	if target == l.dir {
		return want
	}
	if realDir, err := filepath.EvalSymlinks(l.dir); err == nil && realDir == target {
		return want // the same directory, reached through a symlink
	}
	return append(want, target)
}

// syncWatches makes the watched directories the wanted ones and reports
// whether all of them are watched; if not, it arranges a retry.
func (l *loop) syncWatches() bool {
	if l.fw == nil {
		l.setDegraded(true)
		return false
	}
	want := l.wantedDirs()
	have := l.fw.WatchList()
	for _, dir := range have {
		if !slices.Contains(want, dir) {
			// It may be gone already (Kubernetes removes the old ..<timestamp>).
			if err := l.fw.Remove(dir); err != nil && !errors.Is(err, fsnotify.ErrNonExistentWatch) {
				l.log.Debug("cannot stop watching directory", "dir", dir, "err", err)
			}
		}
	}
	var failed error
	l.watched = l.watched[:0]
	for _, dir := range want {
		if !slices.Contains(have, dir) {
			if err := l.fw.Add(dir); err != nil {
				failed = errors.Join(failed, fmt.Errorf("cannot watch directory %q: %w", dir, err))
				continue
			}
		}
		l.watched = append(l.watched, dir)
	}
	if failed != nil {
		if !l.degraded {
			l.log.Warn("lost the watch on the config file; retrying", "path", l.path, "err", failed)
		} else {
			l.log.Debug("still cannot watch the config file", "path", l.path, "err", failed)
		}
	}
	l.setDegraded(failed != nil)
	return failed == nil
}

func (l *loop) setDegraded(degraded bool) {
	if l.degraded && !degraded {
		l.log.Info("watching config file again", "path", l.path)
	}
	l.degraded = degraded
	if degraded {
		l.armRetry()
	}
}

// check reloads if the file's content differs from the content last handed
// to Reload. An unreadable file (removed, mid-swap) keeps the configuration
// and is logged once; it is checked again on the next event.
func (w *Watcher) check(cause string) {
	sum, err := hashFile(w.path)
	if err != nil {
		if !w.unreadable {
			w.log.Warn("cannot read config file; keeping the current configuration", "path", w.path, "err", err)
		}
		w.unreadable = true
		return
	}
	if w.unreadable {
		w.log.Info("config file readable again", "path", w.path)
		w.unreadable = false
	}
	if w.haveLoaded && sum == w.loaded {
		w.log.Debug("config file unchanged", "path", w.path, "cause", cause)
		return
	}
	w.loaded, w.haveLoaded = sum, true
	w.doReload(cause)
}

// forceReload reloads whatever the file holds, changed or not.
func (w *Watcher) forceReload(cause string) {
	if sum, err := hashFile(w.path); err == nil {
		w.loaded, w.haveLoaded = sum, true
	}
	w.doReload(cause)
}

// doReload calls Reload and records the outcome. A failed content is not
// retried until it changes again or Trigger is called.
func (w *Watcher) doReload(cause string) {
	start := time.Now()
	changed, err := w.reload()
	// Logged and the gauges set before it is counted: who sees the count
	// finds the rest.
	if err != nil {
		w.log.Error("config reload failed; keeping the previous configuration",
			"path", w.path, "cause", cause, "err", err)
		w.metrics.lastSuccessful.Set(0)
		w.metrics.reloads.WithLabelValues(resultFailure).Inc()
		return
	}
	w.log.Info("config reloaded", "path", w.path, "cause", cause, "changed", changed, "duration", time.Since(start))
	w.metrics.lastSuccessful.Set(1)
	w.metrics.lastSuccessAt.SetToCurrentTime()
	w.metrics.reloads.WithLabelValues(resultSuccess).Inc()
}

// hashFile returns the SHA-256 of the file's content, following symlinks.
func hashFile(path string) ([sha256.Size]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return [sha256.Size]byte{}, fmt.Errorf("cannot read config file: %w", err)
	}
	return sha256.Sum256(b), nil
}
