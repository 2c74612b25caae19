package listen

import (
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Mode is how the process was started. Its string is the info page's "mode".
type Mode string

const (
	ModeFastCGIStdin     Mode = "fastcgi-stdin"     // fd 0 is a listening socket
	ModeSocketActivation Mode = "socket-activation" // systemd LISTEN_FDS
	ModeCGI              Mode = "cgi"               // one request in env + stdin
	ModeExternal         Mode = "external"          // started by hand: runfcgi / serve
	ModeHTTP             Mode = "http"              // local preview
	ModeTerminal         Mode = "terminal"          // a person ran it with no arguments
)

// Detect decides the mode from the environment (getenv) and fd 0. Order,
// as flup and the FastCGI spec suggest: systemd activation meant for this
// PID; fd 0 a listening socket; GATEWAY_INTERFACE (CGI); a terminal. It
// returns "" when none applies (started by hand, e.g. with a subcommand).
func Detect(getenv func(string) string) Mode {
	if n, _ := activatedFDs(getenv); n > 0 {
		return ModeSocketActivation
	}
	if IsListeningSocket(0) {
		return ModeFastCGIStdin
	}
	if getenv("GATEWAY_INTERFACE") != "" {
		return ModeCGI
	}
	if isTerminal(0) {
		return ModeTerminal
	}
	return ""
}

// IsListeningSocket reports whether fd is a socket in the listening state.
func IsListeningSocket(fd int) bool {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	return err == nil && v == 1
}

func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// activatedFDs returns how many sockets systemd passed to this process.
func activatedFDs(getenv func(string) string) (int, error) {
	pid, err := strconv.Atoi(getenv("LISTEN_PID"))
	if err != nil || pid != os.Getpid() {
		return 0, nil
	}
	n, err := strconv.Atoi(getenv("LISTEN_FDS"))
	if err != nil || n < 1 {
		return 0, fmt.Errorf("LISTEN_FDS=%q: want a positive number", getenv("LISTEN_FDS"))
	}
	return n, nil
}

// StdinListener returns a listener on fd 0. It works on a duplicate: closing
// it leaves fd 0 open, so connections queued by the web server keep waiting
// in the backlog for a re-executed program instead of being reset.
func StdinListener() (net.Listener, error) {
	return fileListener(0, "fd0")
}

// Activated returns the listeners systemd passed (fd 3 onwards) and removes
// the activation variables' meaning for children by leaving them to the
// caller's environment hygiene.
func Activated(getenv func(string) string) ([]net.Listener, error) {
	n, err := activatedFDs(getenv)
	if err != nil {
		return nil, err
	}
	var ls []net.Listener
	for fd := 3; fd < 3+n; fd++ {
		l, err := fileListener(fd, "LISTEN_FD_"+strconv.Itoa(fd))
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return nil, err
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// InheritedListener returns a listener on an fd passed across a re-exec.
func InheritedListener(fd int) (net.Listener, error) {
	return fileListener(fd, "inherited")
}

func fileListener(fd int, name string) (net.Listener, error) {
	// Work on a duplicate: an *os.File for fd itself would close fd when
	// garbage collected, and fd must outlive us (see StdinListener).
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("listen on fd %d: %w", fd, err)
	}
	f := os.NewFile(uintptr(dup), name)
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("listen on fd %d: %w", fd, err)
	}
	return l, nil
}
