package fcgi

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// ServeFD serves the listening socket fd one connection at a time on the
// calling goroutine: it accepts with a system call, reads and writes the
// connection directly and runs the handler inline, without the runtime's
// netpoller and without a goroutine per connection or request. This suits a
// web server that sends one request at a time to a process and opens a new
// connection for each, as Apache's mod_fcgid does with the programs it
// spawns on fd 0: every request costs a handful of system calls and no
// wake-up of another thread.
//
// The limits, timeouts, roles and keep-conn behave as under Serve, except
// that a connection carries one request at a time (FCGI_MPXS_CONNS is 0;
// a second FCGI_BEGIN_REQUEST meanwhile gets FCGI_OVERLOADED) and that a
// new connection that sends nothing is closed after HeaderTimeout. While
// one connection is served, the next ones wait in the socket's backlog.
//
// Shutdown and Close wake the loop at once. ServeFD never closes fd and
// leaves connections queued in its backlog there (a re-executed program
// can serve them); it sets O_NONBLOCK on fd. BaseContext, if set, is
// called with a nil listener.
func (s *Server) ServeFD(fd int) error {
	s.init()
	efd, err := newEventFD()
	if err != nil {
		return fmt.Errorf("fcgi: serve fd %d: %w", fd, err)
	}
	if !s.trackWaker(efd, true) {
		syscall.Close(efd)
		return ErrServerClosed
	}
	defer func() {
		s.trackWaker(efd, false)
		syscall.Close(efd)
	}()
	if err := syscall.SetNonblock(fd, true); err != nil {
		return fmt.Errorf("fcgi: serve fd %d: %w", fd, os.NewSyscallError("fcntl", err))
	}
	base := context.Background()
	if s.BaseContext != nil {
		if base = s.BaseContext(nil); base == nil {
			panic("fcgi: BaseContext returned a nil context")
		}
	}
	l := serialLoop{s: s, fd: fd, efd: efd, base: base}
	return l.run()
}

// serialLoop is ServeFD's state; its buffers are reused across connections.
type serialLoop struct {
	s     *Server
	fd    int
	efd   int
	base  context.Context
	conn  conn // reused: reset for each connection
	delay time.Duration
}

func (l *serialLoop) run() error {
	fds := [2]pollFd{{fd: int32(l.fd), events: pollIn}, {fd: int32(l.efd), events: pollIn}}
	for {
		if l.s.closing() {
			return ErrServerClosed
		}
		fds[0].revents, fds[1].revents = 0, 0
		if _, err := ppoll(fds[:], -1); err != nil && err != syscall.EINTR {
			return fmt.Errorf("fcgi: poll fd %d: %w", l.fd, os.NewSyscallError("ppoll", err))
		}
		if fds[1].revents != 0 || l.s.closing() {
			return ErrServerClosed
		}
		if fds[0].revents == 0 {
			continue
		}
		nfd, err := accept4(l.fd)
		if err != nil {
			if err := l.acceptFailed(err); err != nil {
				return err
			}
			continue
		}
		l.delay = 0
		if draining := l.serve(nfd); draining {
			return ErrServerClosed
		}
	}
}

// acceptFailed decides whether an accept error ends ServeFD; transient
// ones (a connection reset before accept, no descriptors or memory left)
// are retried with back-off.
func (l *serialLoop) acceptFailed(err error) error {
	switch err {
	case syscall.EAGAIN, syscall.EINTR, syscall.ECONNABORTED, syscall.EPROTO:
		return nil
	case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM:
		l.delay = min(max(2*l.delay, 5*time.Millisecond), time.Second)
		l.s.log.Warn("fcgi: accept failed; retrying", "err", err, "delay", l.delay)
		t := time.NewTimer(l.delay)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-l.s.done:
			return ErrServerClosed
		}
	}
	return fmt.Errorf("fcgi: accept on fd %d: %w", l.fd, os.NewSyscallError("accept4", err))
}

// serve runs one accepted connection to its end and reports whether the
// server began shutting down meanwhile.
func (l *serialLoop) serve(nfd int) (draining bool) {
	s := l.s
	s.sem <- struct{}{} // never blocks: one connection at a time
	c := &l.conn
	br := c.br
	reqs := c.reqs
	clear(reqs)
	if reqs == nil {
		reqs = make(map[uint16]*request, 1)
	}
	*c = conn{s: s, rwc: &fdConn{fd: nfd}, br: br, reqs: reqs, inline: true, values: c.values, wbuf: c.wbuf}
	c.ctx, c.cancel = context.WithCancel(l.base)
	draining = s.trackConn(c, true)
	if draining {
		c.shutdown()
	}
	c.serve()
	return draining
}

func accept4(fd int) (int, error) {
	for {
		nfd, _, e := syscall.Syscall6(syscall.SYS_ACCEPT4, uintptr(fd), 0, 0,
			syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return -1, e
		}
		return int(nfd), nil
	}
}

func newEventFD() (int, error) {
	fd, _, e := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if e != 0 {
		return -1, os.NewSyscallError("eventfd2", e)
	}
	return int(fd), nil
}

// wakeFD makes efd readable, which ends a ServeFD loop's wait.
func wakeFD(efd int) {
	one := uint64(1)
	syscall.Write(efd, (*[8]byte)(unsafe.Pointer(&one))[:])
}
