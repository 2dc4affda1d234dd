package launch

import "context"

// StartRedis starts redis-server (bin) on addr (127.0.0.1:port) without
// persistence, its files and log in dir, with args added, and waits until
// it answers PING.
func StartRedis(ctx context.Context, name, bin, addr, dir string, args ...string) (*Process, error) {
	all := append([]string{"--bind", "127.0.0.1", "--port", Port(addr),
		"--save", "", "--appendonly", "no", "--dir", dir,
		"--daemonize", "no", "--loglevel", "warning"}, args...)
	return StartReady(ctx, name, bin, all, nil, dir, Greets(addr, "PING\r\n", "+PONG"))
}
