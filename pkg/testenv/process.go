package testenv

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Process is a child process of a test (a joingate or nats-server binary):
// its output goes to a file, shown when the test fails, and it is killed
// when the test ends if it still runs.
type Process struct {
	Name string
	Cmd  *exec.Cmd
	Log  string // the file of its stdout and stderr
	done chan struct{}
}

// StartProcess starts bin with args, its log in logDir/name.log, with this
// process's environment minus JOINGATE_* variables (a test's configuration
// is what it passes) plus env.
func StartProcess(t testing.TB, logDir, name string, env []string, bin string, args ...string) *Process {
	t.Helper()
	p := &Process{Name: name, Log: filepath.Join(logDir, name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.Log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the child has its own descriptor
	p.Cmd = exec.Command(bin, args...)
	p.Cmd.Stdout, p.Cmd.Stderr = f, f
	p.Cmd.Env = append(ChildEnv(), env...)
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.Cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.Exited() {
			p.Cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("----- %s: %s\n%s----- end of %s (%s)", name, strings.Join(p.Cmd.Args, " "), p.Output(), name, p.Cmd.ProcessState)
		}
	})
	return p
}

// ChildEnv is this process's environment without JOINGATE_* variables: a
// child joingate's configuration is what its test passes.
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
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Output is what the process has written so far.
func (p *Process) Output() string {
	b, _ := os.ReadFile(p.Log)
	return string(b)
}

// WaitHTTP polls GET url until it answers 200 within timeout, and fails the
// test if it does not or if p exits first.
func WaitHTTP(t testing.TB, p *Process, url string, timeout time.Duration) {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	var last string
	ok := Eventually(timeout, func() bool {
		if p.Exited() {
			return true
		}
		resp, err := client.Get(url)
		if err != nil {
			last = err.Error()
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(body))
		return resp.StatusCode == http.StatusOK
	})
	if p.Exited() {
		t.Fatalf("%s exited before %s answered 200: %s", p.Name, url, p.Cmd.ProcessState)
	}
	if !ok {
		t.Fatalf("%s: %s not 200 within %s; last: %s", p.Name, url, timeout, last)
	}
}

// StartRedisServer runs redis-server without persistence on a free
// loopback port, a TLS-only one when tlsPort (args then name the
// certificate files), with args added, until the test ends; it returns the
// port. Unlike StartRedis it does not wait: the caller's own client, with
// the server's password or TLS, knows when it answers.
func StartRedisServer(t testing.TB, tlsPort bool, args ...string) int {
	t.Helper()
	bin := lookRedis(t, "redis-server")
	port := FreePort(t)
	all := []string{"--port", strconv.Itoa(port)}
	if tlsPort {
		all = []string{"--port", "0", "--tls-port", strconv.Itoa(port)}
	}
	dir := t.TempDir()
	all = append(all, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	StartProcess(t, dir, "redis-server", nil, bin, append(all, args...)...)
	return port
}

// Loopback returns a free address on 127.0.0.1.
func Loopback(t testing.TB) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}
