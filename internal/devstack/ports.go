package devstack

import (
	"fmt"
	"net"
	"runtime"
	"strconv"
)

const loopback = "127.0.0.1"

// splitAddress parses host:port where an empty address, an empty host or a
// zero port are allowed and mean "loopback" and "any free port". Binding to
// loopback by default keeps a dev server from being reachable from the
// network unless the user asks for it.
func splitAddress(addr string) (host string, port int, err error) {
	if addr == "" {
		return loopback, 0, nil
	}
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("address %q: %w", addr, err)
	}
	if h == "" {
		h = loopback
	}
	if p == "" {
		return h, 0, nil
	}
	port, err = strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("address %q: invalid port", addr)
	}
	return h, port, nil
}

// dialHost is the host clients in this process should use to reach a server
// bound to host: a wildcard bind is reachable on loopback, a specific IP only
// on that IP.
func dialHost(host string) string {
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return loopback
	}
	return host
}

// freePort asks the kernel for an ephemeral port on host. Temporal and the
// UI server take port numbers rather than listeners, so there is an
// unavoidable window between choosing a port and binding it. On Linux a port
// released by a plain Listen/Close can be handed out again by the very next
// bind(:0), so with several ports chosen in a row (Temporal needs four) two
// services could collide. Connecting to the port and closing the server side
// first leaves it in TIME_WAIT, which keeps the kernel from reusing it for
// :0 binds while still allowing an explicit bind (SO_REUSEADDR). The same
// trick is used by Temporal's own test helpers.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find free port on %s: %w", host, err)
	}
	defer l.Close()
	addr := l.Addr().(*net.TCPAddr)
	if runtime.GOOS != "darwin" && runtime.GOOS != "windows" {
		dialAddr := &net.TCPAddr{IP: net.ParseIP(dialHost(addr.IP.String())), Port: addr.Port}
		c, err := net.DialTCP("tcp", nil, dialAddr)
		if err != nil {
			return 0, fmt.Errorf("find free port on %s: %w", host, err)
		}
		defer c.Close()
		s, err := l.Accept()
		if err != nil {
			return 0, fmt.Errorf("find free port on %s: %w", host, err)
		}
		_ = s.Close()
	}
	return addr.Port, nil
}

// checkPortFree fails early with a clear error when a fixed port is taken,
// instead of letting a server fail (or, for the UI server, exit the
// process) later in a goroutine.
func checkPortFree(host string, port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return err
	}
	return l.Close()
}

// hostForURL brackets IPv6 literals for servers that build their listen
// address with "%s:%d" instead of net.JoinHostPort.
func hostForURL(host string) string {
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		return "[" + host + "]"
	}
	return host
}
