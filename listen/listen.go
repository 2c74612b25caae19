package listen

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Listen opens addr: "unix:/path", "/path" (unix), or "host:port" (TCP).
// A unix socket gets mode 0777 minus umask (0o077 → 0700, private; 0o007 →
// 0770). A stale socket file (nothing listening) is replaced; a live one, or
// a file that is not a socket, is an error.
func Listen(addr string, umask int) (net.Listener, error) {
	return ListenAccess(addr, umask, SocketAccess{})
}

// ListenAccess is Listen with the owner, group and mode of a unix socket
// set by a before the socket accepts its first connection. a is ignored
// for TCP.
func ListenAccess(addr string, umask int, a SocketAccess) (net.Listener, error) {
	if path, ok := unixPath(addr); ok {
		return listenUnix(path, umask, a)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return l, nil
}

func unixPath(addr string) (string, bool) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		return p, true
	}
	return addr, strings.HasPrefix(addr, "/") || strings.HasPrefix(addr, "./")
}

func listenUnix(path string, umask int, a SocketAccess) (net.Listener, error) {
	if err := removeStale(path); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("listen unix:%s: %w", path, err)
	}
	l, err := bindAndListen(path, umask, a)
	if err != nil {
		return nil, fmt.Errorf("listen unix:%s: %w", path, err)
	}
	return l, nil
}

// removeStale removes a socket file nobody listens on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("listen unix:%s: exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("listen unix:%s: another server is listening there", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}

// bindAndListen creates the socket file, gives it its owner, group and
// mode, and only then listens: until listen(2) every connect is refused,
// so no one reaches the socket while its permissions are still changing.
// (net.Listen binds and listens in one step, which leaves that window open.)
func bindAndListen(path string, umask int, a SocketAccess) (net.Listener, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), "unix:"+path)
	defer f.Close() // net.FileListener works on its own duplicate
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, fmt.Errorf("bind: %w", err)
	}
	fail := func(err error) (net.Listener, error) {
		os.Remove(path)
		return nil, err
	}
	if err := applyAccess(path, a, umask); err != nil {
		return fail(err)
	}
	// The kernel caps the backlog at net.core.somaxconn.
	if err := unix.Listen(fd, 65535); err != nil {
		return fail(fmt.Errorf("listen: %w", err))
	}
	l, err := net.FileListener(f)
	if err != nil {
		return fail(err)
	}
	// Remove the file when the listener closes, but not on a re-exec
	// handover (the fd is passed on and the path must stay).
	l.(*net.UnixListener).SetUnlinkOnClose(true)
	return l, nil
}

// KeepSocketFile stops l from removing its socket file on Close; used when
// its fd is handed to a re-executed program.
func KeepSocketFile(l net.Listener) {
	if al, ok := l.(*allowListener); ok {
		l = al.Listener
	}
	if ul, ok := l.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
}

// AllowList wraps a TCP listener so that only connections from the given
// addresses are accepted; others are closed at once. addrs is the
// comma-separated FCGI_WEB_SERVER_ADDRS value; "" allows everyone. Unix
// sockets are not filtered.
func AllowList(l net.Listener, addrs string, log func(remote string)) (net.Listener, error) {
	addrs = strings.TrimSpace(addrs)
	if addrs == "" {
		return l, nil
	}
	allowed := map[string]bool{}
	for _, a := range strings.Split(addrs, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		ip := net.ParseIP(a)
		if ip == nil {
			return nil, fmt.Errorf("FCGI_WEB_SERVER_ADDRS: %q is not an IP address", a)
		}
		allowed[ip.String()] = true
	}
	return &allowListener{Listener: l, allowed: allowed, log: log}, nil
}

type allowListener struct {
	net.Listener
	allowed map[string]bool
	log     func(string)
}

func (a *allowListener) Accept() (net.Conn, error) {
	for {
		c, err := a.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ta, ok := c.RemoteAddr().(*net.TCPAddr)
		if !ok || a.allowed[ta.IP.String()] || a.allowed[ta.IP.To4().String()] {
			return c, nil
		}
		if a.log != nil {
			a.log(c.RemoteAddr().String())
		}
		c.Close()
	}
}

// File returns a duplicate of a listener's file descriptor with
// close-on-exec cleared, for handing it to a re-executed program. Keep the
// *os.File reachable until the exec: its finalizer closes the descriptor.
// It leaves the socket non-blocking (net.Listener.File would not: a
// listener left blocking cannot be woken from accept(2) by Close, and a
// drain waiting for it would hang).
func File(l net.Listener) (*os.File, error) {
	f, err := Dup(l)
	if err != nil {
		return nil, err
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFD, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("clear close-on-exec: %w", err)
	}
	return f, nil
}

// Dup returns a close-on-exec duplicate of l's descriptor, to pass to a
// child process (prefork workers) through exec.Cmd.ExtraFiles. It
// must not be an *os.File in non-blocking mode: starting a process calls
// Fd on it, which switches the shared file description to blocking, and a
// worker blocked in accept(2) could then not stop accepting when retired.
func Dup(l net.Listener) (*os.File, error) {
	if al, ok := l.(*allowListener); ok {
		l = al.Listener
	}
	sc, ok := l.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("listener %s cannot export its descriptor", l.Addr())
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) {
		dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup listener: %w", derr)
	}
	// NewFile on a blocking descriptor gives a File that Fd leaves alone;
	// then the description goes back to non-blocking, as every accepting
	// process here wants it.
	syscall.SetNonblock(dup, false)
	f := os.NewFile(uintptr(dup), "listener")
	syscall.SetNonblock(dup, true)
	return f, nil
}
