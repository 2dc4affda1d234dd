package launch

import (
	"context"
	"fmt"
	"time"
)

// SetOptions describe joingate's distributed set: a nats-server, a
// `joingate gateway` and `joingate worker` processes on a Redis that the
// caller runs.
type SetOptions struct {
	// Joingate and NATSServer are the binaries.
	Joingate, NATSServer string
	// Config is the --config of every joingate process; "" passes none.
	Config string
	// RedisURL is the workers' --redis.
	RedisURL string
	// Workers is how many workers StartSet starts.
	Workers int
	// Env is added to the environment of every joingate process.
	Env []string
	// LogDir holds every process's log, and is their working directory.
	LogDir string
	// Grace is how long Stop waits after SIGTERM before SIGKILL; 0 kills
	// at once.
	Grace time.Duration
}

// Set is a distributed set, started whole by StartSet or piece by piece.
type Set struct {
	o                         SetOptions
	NATSAddr, NATSURL         string
	GatewayAddr, GatewayAdmin string
	NATS, Gateway             *Process
	Workers                   []*Process
	WorkerAdmins              []string
	procs                     []*Process // every process started, in order
}

// NewSet chooses the addresses of nats-server and the gateway and starts
// nothing.
func NewSet(o SetOptions) (*Set, error) {
	addrs, err := FreeAddrs(3)
	if err != nil {
		return nil, err
	}
	return newSet(o, addrs), nil
}

func newSet(o SetOptions, addrs []string) *Set {
	return &Set{o: o, NATSAddr: addrs[0], NATSURL: "nats://" + addrs[0], GatewayAddr: addrs[1], GatewayAdmin: addrs[2]}
}

// StartSet starts nats-server, the gateway and o.Workers workers
// (worker1, worker2, ...) and waits until each is ready; when one exits
// at once (a port taken), it stops them all and starts again on other
// ports (OnFreeAddrs).
func StartSet(ctx context.Context, o SetOptions) (*Set, error) {
	var s *Set
	err := OnFreeAddrs(3, func(addrs []string) error {
		s = newSet(o, addrs)
		if err := s.start(ctx); err != nil {
			s.Stop()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Set) start(ctx context.Context) error {
	if err := s.StartNATS(ctx); err != nil {
		return err
	}
	if err := s.StartGateway(); err != nil {
		return err
	}
	for i := range s.o.Workers {
		if _, _, err := s.StartWorker(fmt.Sprint("worker", i+1), s.o.RedisURL); err != nil {
			return err
		}
	}
	if err := s.WaitReady(ctx, s.Gateway, s.GatewayAdmin); err != nil {
		return err
	}
	for i, w := range s.Workers {
		if err := s.WaitReady(ctx, w, s.WorkerAdmins[i]); err != nil {
			return err
		}
	}
	return nil
}

func (s *Set) started(p *Process) *Process {
	s.procs = append(s.procs, p)
	return p
}

// StartNATS starts nats-server on NATSAddr and waits until it greets:
// again after it was stopped, on the same address.
func (s *Set) StartNATS(ctx context.Context) error {
	p, err := Start("nats-server", s.o.NATSServer, []string{"-a", "127.0.0.1", "-p", Port(s.NATSAddr)}, nil, s.o.LogDir)
	if err != nil {
		return err
	}
	s.NATS = s.started(p)
	return WaitReady(ctx, p, ReadyTimeout, Greets(s.NATSAddr, "", "INFO "))
}

func (s *Set) joingate(name, cmd string, args ...string) (*Process, error) {
	all := []string{cmd}
	if s.o.Config != "" {
		all = append(all, "--config", s.o.Config)
	}
	p, err := Start(name, s.o.Joingate, append(all, args...), s.o.Env, s.o.LogDir)
	if err != nil {
		return nil, err
	}
	return s.started(p), nil
}

// StartGateway starts the gateway on GatewayAddr and GatewayAdmin; it does
// not wait (WaitReady does).
func (s *Set) StartGateway() error {
	p, err := s.joingate("gateway", "gateway", "--nats", s.NATSURL, "--listen", s.GatewayAddr, "--admin-listen", s.GatewayAdmin)
	if err != nil {
		return err
	}
	s.Gateway = p
	return nil
}

// StartWorker starts a worker on redisURL with an admin listener on a free
// address, adds both to Workers and WorkerAdmins and does not wait.
func (s *Set) StartWorker(name, redisURL string) (*Process, string, error) {
	admin, err := FreeAddr()
	if err != nil {
		return nil, "", err
	}
	p, err := s.joingate(name, "worker", "--nats", s.NATSURL, "--redis", redisURL, "--admin-listen", admin)
	if err != nil {
		return nil, "", err
	}
	s.Workers = append(s.Workers, p)
	s.WorkerAdmins = append(s.WorkerAdmins, admin)
	return p, admin, nil
}

// WaitReady waits until the joingate process p says ready on its admin
// listener.
func (s *Set) WaitReady(ctx context.Context, p *Process, admin string) error {
	return WaitReady(ctx, p, ReadyTimeout, HTTPOK("http://"+admin+"/readyz"))
}

// Processes are every process the set has started, in order.
func (s *Set) Processes() []*Process { return s.procs }

// Stop stops every process the set started, the last started first.
func (s *Set) Stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		s.procs[i].Stop(s.o.Grace)
	}
}
