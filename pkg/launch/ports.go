package launch

import (
	"errors"
	"net"
)

// FreeAddrs returns n distinct loopback addresses (127.0.0.1:port) whose
// ports were free a moment ago: all held at once, so none repeats.
func FreeAddrs(n int) ([]string, error) {
	addrs := make([]string, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer ln.Close()
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, nil
}

// FreeAddr is FreeAddrs(1).
func FreeAddr() (string, error) {
	addrs, err := FreeAddrs(1)
	if err != nil {
		return "", err
	}
	return addrs[0], nil
}

// Port is the port of a host:port address.
func Port(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// Attempts is how many times OnFreeAddrs tries.
const Attempts = 3

// OnFreeAddrs calls start with n free loopback addresses, and again with
// new ones, up to Attempts times in all, while it fails with ErrExited: a
// server it started exited at once, most often because a port chosen free
// was taken before the server bound it (another test's connection, another
// server). start stops what it started before it returns an error. Its
// last error is returned, with those of the earlier attempts.
func OnFreeAddrs(n int, start func(addrs []string) error) error {
	var errs []error
	for range Attempts {
		addrs, err := FreeAddrs(n)
		if err != nil {
			return err
		}
		err = start(addrs)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
		if !errors.Is(err, ErrExited) {
			break
		}
	}
	return errors.Join(errs...)
}
