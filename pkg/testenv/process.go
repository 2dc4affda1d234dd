package testenv

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/joingate/joingate/pkg/launch"
)

// Process is a child process of a test (launch.Process): its output goes
// to a file, shown when the test fails, and it is killed when the test
// ends if it still runs.
type Process = launch.Process

// StartProcess starts bin with args (launch.Start), its log in
// logDir/name.log, with this process's environment minus JOINGATE_*
// variables (a test's configuration is what it passes) plus env, until the
// test ends.
func StartProcess(t testing.TB, logDir, name string, env []string, bin string, args ...string) *Process {
	t.Helper()
	p, err := launch.Start(name, bin, args, env, logDir)
	if err != nil {
		t.Fatal(err)
	}
	stopAtEnd(t, func() []*Process { return []*Process{p} })
	return p
}

// stopAtEnd kills the processes when the test ends and, if it failed,
// logs what each wrote.
func stopAtEnd(t testing.TB, procs func() []*Process) {
	t.Cleanup(func() {
		for _, p := range procs() {
			p.Stop(0)
			if t.Failed() {
				t.Logf("----- %s: %s\n%s----- end of %s (%s)", p.Name, strings.Join(p.Cmd.Args, " "), p.Output(), p.Name, p.Cmd.ProcessState)
			}
		}
	})
}

// ChildEnv is this process's environment without JOINGATE_* variables: a
// child joingate's configuration is what its test passes.
func ChildEnv() []string { return launch.ChildEnv() }

// WaitHTTP polls GET url until it answers 200 within timeout, and fails the
// test if it does not or if p exits first.
func WaitHTTP(t testing.TB, p *Process, url string, timeout time.Duration) {
	t.Helper()
	if err := launch.WaitReady(context.Background(), p, timeout, launch.HTTPOK(url)); err != nil {
		t.Fatal(err)
	}
}

// WaitNATS waits until a NATS server accepts connections on addr: it
// greets every client with an INFO line.
func WaitNATS(t testing.TB, p *Process, addr string) {
	t.Helper()
	if err := launch.WaitReady(context.Background(), p, 10*time.Second, launch.Greets(addr, "", "INFO ")); err != nil {
		t.Fatal(err)
	}
}

// StartSet starts joingate's distributed set (launch.StartSet: nats-server,
// a gateway, o.Workers workers, on o.RedisURL), its logs in a temporary
// directory unless o.LogDir, and stops it when the test ends.
func StartSet(t testing.TB, o launch.SetOptions) *launch.Set {
	t.Helper()
	if o.LogDir == "" {
		o.LogDir = t.TempDir()
	}
	s, err := launch.StartSet(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	stopAtEnd(t, s.Processes)
	return s
}

// NewSet is StartSet without the start (launch.NewSet): what the test
// starts of it stops when the test ends.
func NewSet(t testing.TB, o launch.SetOptions) *launch.Set {
	t.Helper()
	if o.LogDir == "" {
		o.LogDir = t.TempDir()
	}
	s, err := launch.NewSet(o)
	if err != nil {
		t.Fatal(err)
	}
	stopAtEnd(t, s.Processes)
	return s
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
	t.Helper()
	addr, err := launch.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(Loopback(t))
	n, _ := strconv.Atoi(port)
	return n
}
