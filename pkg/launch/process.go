// Package launch starts the server processes that joingate's end-to-end
// and fault tests and its bench suite run (joingate, nats-server,
// redis-server): start and stop, free ports, a retry when a server exits at
// once because its port was taken, and waits until a server is ready. It
// returns errors, so that the bench suite, a command, uses it as the tests
// do; pkg/testenv wraps it for tests.
package launch

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// ErrExited is a server that exited before it was ready: with a port
// chosen free a moment before, most often because something else took it
// in between (OnFreeAddrs retries those).
var ErrExited = errors.New("exited before it was ready")

// Process is a child process: its stdout and stderr go to Log.
type Process struct {
	Name string
	Cmd  *exec.Cmd
	Log  string // the file of its stdout and stderr
	done chan struct{}
}

// Start starts bin with args in logDir, its working directory, with its
// output in logDir/name.log and this process's environment minus JOINGATE_*
// variables (a child's configuration is what its caller passes) plus env.
// It runs in its own process group, so that a Ctrl-C reaches the caller,
// which stops its children in order, and is killed if the caller dies.
func Start(name, bin string, args, env []string, logDir string) (*Process, error) {
	p := &Process{Name: name, Log: filepath.Join(logDir, name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.Log)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer f.Close() // the child has its own descriptor
	p.Cmd = exec.Command(bin, args...)
	p.Cmd.Stdout, p.Cmd.Stderr = f, f
	p.Cmd.Env = append(ChildEnv(), env...)
	p.Cmd.Dir = logDir
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.Cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// ChildEnv is this process's environment without JOINGATE_* variables.
func ChildEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "JOINGATE_") {
			env = append(env, kv)
		}
	}
	return env
}

// Exited reports whether the process has ended; Cmd.ProcessState is then
// set.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits up to timeout for the process to exit and reports whether it
// did.
func (p *Process) Wait(timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

// Stop ends the process unless it has exited: with SIGTERM, then SIGKILL
// if it still runs after grace; with grace 0, SIGKILL at once. It returns
// once the process has exited.
func (p *Process) Stop(grace time.Duration) {
	if p.Exited() {
		return
	}
	if grace > 0 {
		p.Cmd.Process.Signal(syscall.SIGTERM)
		if p.Wait(grace) {
			return
		}
	}
	p.Cmd.Process.Kill()
	<-p.done
}

// Output is what the process has written so far.
func (p *Process) Output() string {
	b, err := os.ReadFile(p.Log)
	if err != nil { // not to be taken for a process that wrote nothing
		return fmt.Sprintf("(cannot read %s: %v)\n", p.Log, err)
	}
	return string(b)
}

// state is how the process is: running, or how it exited.
func (p *Process) state() string {
	if p.Exited() {
		return p.Cmd.ProcessState.String()
	}
	return "running"
}

// Failed wraps err with the process's name and state and the last lines
// of its output.
func (p *Process) Failed(err error) error {
	lines := strings.Split(strings.TrimSpace(p.Output()), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return fmt.Errorf("%s (%s): %w\n  %s", p.Name, p.state(), err, strings.Join(lines, "\n  "))
}
