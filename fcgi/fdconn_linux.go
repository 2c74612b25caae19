package fcgi

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// fdConn is a connection on a raw non-blocking socket, used by the
// sequential loop (ServeFD) without the runtime's netpoller: each read or
// write tries the system call first and waits in ppoll(2) only when it
// would block, with the deadline as the poll timeout. One goroutine does
// the I/O; Close may come from any goroutine and wakes a waiting poll by
// shutting the socket down before the descriptor is released.
type fdConn struct {
	mu      sync.Mutex
	fd      int
	busy    int  // I/O calls in progress
	closing bool // Close was called: release the fd when busy reaches 0
	rdl     time.Time
	wdl     time.Time
}

// acquire returns the fd for one I/O call, or an error once closed.
func (c *fdConn) acquire() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return -1, net.ErrClosed
	}
	c.busy++
	return c.fd, nil
}

func (c *fdConn) releaseFD() {
	c.mu.Lock()
	c.busy--
	if c.busy == 0 && c.closing && c.fd >= 0 {
		rawClose(c.fd)
		c.fd = -1
	}
	c.mu.Unlock()
}

func (c *fdConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	fd, err := c.acquire()
	if err != nil {
		return 0, err
	}
	defer c.releaseFD()
	for {
		n, err := rawIO(syscall.SYS_READ, fd, p)
		switch {
		case err == nil && n == 0:
			return 0, io.EOF
		case err == nil:
			return n, nil
		case err == syscall.EINTR:
		case err == syscall.EAGAIN:
			if err := c.wait(fd, pollIn, c.rdl); err != nil {
				return 0, err
			}
		default:
			return 0, c.opErr("read", err)
		}
	}
}

func (c *fdConn) Write(p []byte) (int, error) {
	fd, err := c.acquire()
	if err != nil {
		return 0, err
	}
	defer c.releaseFD()
	written := 0
	for written < len(p) {
		n, err := rawIO(syscall.SYS_WRITE, fd, p[written:])
		switch {
		case err == nil:
			written += n
		case err == syscall.EINTR:
		case err == syscall.EAGAIN:
			if err := c.wait(fd, pollOut, c.wdl); err != nil {
				return written, err
			}
		default:
			return written, c.opErr("write", err)
		}
	}
	return written, nil
}

// waitReadable waits until the connection has input, or the deadline.
func (c *fdConn) waitReadable(deadline time.Time) error {
	fd, err := c.acquire()
	if err != nil {
		return err
	}
	defer c.releaseFD()
	return c.wait(fd, pollIn, deadline)
}

// wait polls fd for events until the deadline (zero: none).
func (c *fdConn) wait(fd int, events int16, deadline time.Time) error {
	for {
		timeout := -1
		if !deadline.IsZero() {
			d := time.Until(deadline)
			if d <= 0 {
				return os.ErrDeadlineExceeded
			}
			timeout = int((d + time.Millisecond - 1) / time.Millisecond)
		}
		fds := [1]pollFd{{fd: int32(fd), events: events}}
		n, err := ppoll(fds[:], timeout)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return c.opErr("poll", err)
		}
		c.mu.Lock()
		closing := c.closing
		c.mu.Unlock()
		if closing {
			return net.ErrClosed
		}
		if n > 0 {
			return nil // readable, writable, or an error the next call reports
		}
	}
}

func (c *fdConn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "unix", Err: os.NewSyscallError(op, err)}
}

// Close releases the socket. Called while another goroutine waits in I/O,
// it shuts the socket down first so that the wait ends at once.
func (c *fdConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return nil
	}
	c.closing = true
	if c.busy > 0 {
		syscall.Shutdown(c.fd, syscall.SHUT_RDWR)
		return nil
	}
	err := rawClose(c.fd)
	c.fd = -1
	return err
}

// CloseWrite half-closes the connection (see lingerClose).
func (c *fdConn) CloseWrite() error {
	fd, err := c.acquire()
	if err != nil {
		return err
	}
	defer c.releaseFD()
	return syscall.Shutdown(fd, syscall.SHUT_WR)
}

func (c *fdConn) SetDeadline(t time.Time) error {
	c.rdl, c.wdl = t, t
	return nil
}

// Deadlines are read by the goroutine doing the I/O, which is the one
// that sets them (the connection's only reader and writer).
func (c *fdConn) SetReadDeadline(t time.Time) error  { c.rdl = t; return nil }
func (c *fdConn) SetWriteDeadline(t time.Time) error { c.wdl = t; return nil }

func (c *fdConn) LocalAddr() net.Addr  { return fdAddr{} }
func (c *fdConn) RemoteAddr() net.Addr { return fdAddr{} }

type fdAddr struct{}

func (fdAddr) Network() string { return "fd" }
func (fdAddr) String() string  { return "fd" }

const (
	pollIn  = 0x1
	pollOut = 0x4
)

type pollFd struct {
	fd      int32
	events  int16
	revents int16
}

// ppoll waits for fds with a timeout in milliseconds (negative: none).
func ppoll(fds []pollFd, timeoutMs int) (int, error) {
	var ts *syscall.Timespec
	if timeoutMs >= 0 {
		t := syscall.NsecToTimespec(int64(timeoutMs) * int64(time.Millisecond))
		ts = &t
	}
	n, _, e := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), uintptr(len(fds)),
		uintptr(unsafe.Pointer(ts)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rawIO reads or writes a non-blocking socket. It never blocks, so it
// skips the runtime's system call bookkeeping (entersyscall wakes the
// monitor thread when it sleeps, a context switch per call); waits go
// through ppoll, which does the bookkeeping.
func rawIO(trap uintptr, fd int, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := syscall.RawSyscall(trap, uintptr(fd), uintptr(ptr), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rawClose closes a socket (without SO_LINGER, close does not block).
func rawClose(fd int) error {
	_, _, e := syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
