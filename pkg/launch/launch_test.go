package launch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// A server that exits at once is ErrExited, with its output; a retry on
// free addresses gets other ones.
func TestEarlyExitIsRetriedOnOtherPorts(t *testing.T) {
	dir := t.TempDir()
	var seen [][]string
	err := OnFreeAddrs(2, func(addrs []string) error {
		seen = append(seen, addrs)
		if len(seen) == 1 {
			p, err := Start("early", "/bin/sh", []string{"-c", "echo port taken; exit 3"}, nil, dir)
			if err != nil {
				t.Fatal(err)
			}
			return WaitReady(context.Background(), p, 5*time.Second, func() error { return errors.New("not yet") })
		}
		return nil
	})
	if err != nil || len(seen) != 2 || seen[0][0] == seen[1][0] && seen[0][1] == seen[1][1] {
		t.Fatalf("err %v, attempts %v: want a second attempt on other addresses", err, seen)
	}

	attempts := 0
	err = OnFreeAddrs(1, func([]string) error {
		attempts++
		p, err := Start("always", "/bin/sh", []string{"-c", "echo port taken; exit 3"}, nil, dir)
		if err != nil {
			t.Fatal(err)
		}
		return WaitReady(context.Background(), p, 5*time.Second, func() error { return errors.New("not yet") })
	})
	if !errors.Is(err, ErrExited) || attempts != Attempts || !strings.Contains(err.Error(), "port taken") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("%d attempts, err %v: want %d, ErrExited with the output and the status", attempts, err, Attempts)
	}

	attempts = 0
	other := errors.New("bad flag")
	if err := OnFreeAddrs(1, func([]string) error { attempts++; return other }); !errors.Is(err, other) || attempts != 1 {
		t.Fatalf("%d attempts, %v: another error is not retried", attempts, err)
	}
}

func TestStopAndEnvironment(t *testing.T) {
	t.Setenv("JOINGATE_LOG_LEVEL", "debug")
	p, err := Start("sleeper", "/bin/sh", []string{"-c", `echo "level=$JOINGATE_LOG_LEVEL extra=$EXTRA dir=$(pwd)"; exec sleep 60`}, []string{"EXTRA=x"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ready := func() error {
		if !strings.Contains(p.Output(), "extra=") {
			return errors.New("no output yet")
		}
		return nil
	}
	if err := WaitReady(context.Background(), p, 5*time.Second, ready); err != nil {
		t.Fatal(err)
	}
	if out := p.Output(); !strings.Contains(out, "level= extra=x dir="+p.Cmd.Dir) {
		t.Fatalf("output %q: want no JOINGATE_ variable, EXTRA set, run in its log directory", out)
	}
	start := time.Now()
	p.Stop(5 * time.Second) // sleep ends on SIGTERM
	if !p.Exited() || time.Since(start) > 4*time.Second {
		t.Fatalf("after Stop: exited %v after %s", p.Exited(), time.Since(start))
	}
	p.Stop(time.Second) // again: nothing to do
}

func TestGreets(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "INFO {}\r\n")
			c.Close()
		}
	}()
	if err := Greets(ln.Addr().String(), "", "INFO ")(); err != nil {
		t.Fatal(err)
	}
	if err := Greets(ln.Addr().String(), "PING\r\n", "+PONG")(); err == nil {
		t.Fatal("a NATS greeting taken for Redis's PONG")
	}
	free, _ := FreeAddr()
	if err := Greets(free, "", "")(); err == nil {
		t.Fatal("nothing listens, yet it greets")
	}
}
