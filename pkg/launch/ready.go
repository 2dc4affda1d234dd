package launch

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// ReadyTimeout is how long a server may take to come up.
const ReadyTimeout = 20 * time.Second

// WaitReady polls ready every 10ms until it returns nil, for up to
// timeout. It fails early, with an error wrapping ErrExited, if p exits
// first, and when ctx ends; its errors name p and end with its output.
func WaitReady(ctx context.Context, p *Process, timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		if p.Exited() {
			return p.Failed(ErrExited)
		}
		if time.Now().After(deadline) {
			return p.Failed(fmt.Errorf("not ready within %s: %w", timeout, err))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

var readyClient = &http.Client{Timeout: time.Second}

// HTTPOK is a readiness check: GET url answers 200.
func HTTPOK(url string) func() error {
	return func() error {
		resp, err := readyClient.Get(url)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s %s", url, resp.Status, bytes.TrimSpace(body))
		}
		return nil
	}
}

// Greets is a readiness check: a server on addr accepts a connection and,
// if greeting is not empty, answers (after send, if not empty) a line
// starting with greeting. A NATS server greets with "INFO "; Redis answers
// "PING\r\n" with "+PONG".
func Greets(addr, send, greeting string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		if greeting == "" {
			return nil
		}
		c.SetDeadline(time.Now().Add(time.Second))
		if send != "" {
			if _, err := io.WriteString(c, send); err != nil {
				return err
			}
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, greeting) {
			return fmt.Errorf("%s answered %q (%v), want %q", addr, line, err, greeting)
		}
		return nil
	}
}

// StartReady starts a process as Start does and waits (WaitReady, for
// ReadyTimeout) until ready; one that does not become ready is killed and
// the error returned.
func StartReady(ctx context.Context, name, bin string, args, env []string, logDir string, ready func() error) (*Process, error) {
	p, err := Start(name, bin, args, env, logDir)
	if err != nil {
		return nil, err
	}
	if err := WaitReady(ctx, p, ReadyTimeout, ready); err != nil {
		p.Stop(0)
		return nil, err
	}
	return p, nil
}
