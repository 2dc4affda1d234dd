package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Builds builds the binaries that tests run as processes, once per test
// binary and on first use, so that tests that need none build none:
// joingate from the main package Main (a path relative to Module, the
// joingate module's directory; "" is the test's own directory) and
// nats-server at the version that module requires. Remove, from TestMain
// after m.Run, deletes them.
type Builds struct {
	Module, Main string

	once     sync.Once
	dir      string
	joingate string
	nats     string
	err      error
}

// Get returns the binaries' paths, building them the first time; a build
// that fails fails the test.
func (b *Builds) Get(t testing.TB) (joingate, natsServer string) {
	t.Helper()
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "joingate-bin"); b.err != nil {
			return
		}
		b.joingate, b.nats = filepath.Join(b.dir, "joingate"), filepath.Join(b.dir, "nats-server")
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, p := range []struct{ out, pkg string }{{b.joingate, b.Main}, {b.nats, "github.com/nats-io/nats-server/v2"}} {
			wg.Go(func() {
				cmd := exec.Command("go", "build", "-o", p.out, p.pkg)
				cmd.Dir = b.Module
				if out, err := cmd.CombinedOutput(); err != nil {
					errs[i] = fmt.Errorf("go build -o %s %s: %v\n%s", p.out, p.pkg, err, out)
				}
			})
		}
		wg.Wait()
		b.err = errors.Join(errs...)
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.joingate, b.nats
}

// Remove deletes what Get built.
func (b *Builds) Remove() {
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}
