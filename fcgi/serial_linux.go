package fcgi

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// ServeFD serves the listening socket fd one connection at a time on the
// calling goroutine: it accepts with a system call, reads and writes the
// connection directly and runs the handler inline, without a goroutine
// per connection or request. Only the wait for the next connection goes
// through the runtime's poller (so that an idle loop costs no thread);
// a connection's own reads and writes are plain non-blocking system calls
// that wait in ppoll(2) only when the web server is slower than us. This
// suits a web server that sends one request at a time to a process and
// opens a new connection for each, as Apache's mod_fcgid does with the
// programs it spawns on fd 0.
//
// The limits, timeouts, roles and keep-conn behave as under Serve, except
// that a connection carries one request at a time (FCGI_MPXS_CONNS is 0;
// a second FCGI_BEGIN_REQUEST meanwhile gets FCGI_OVERLOADED), that a new
// connection that sends nothing is closed after the shorter of
// HeaderTimeout and IdleTimeout, and that while a handler runs its
// connection is read only when the handler reads its body. While one
// connection is served, the next ones wait in the socket's backlog.
//
// Shutdown and Close wake the loop at once. ServeFD never closes fd and
// leaves connections queued in its backlog there (a re-executed program
// can serve them); it sets O_NONBLOCK on fd. BaseContext, if set, is
// called with a nil listener.
func (s *Server) ServeFD(fd int) error {
	s.init()
	base := context.Background()
	if s.BaseContext != nil {
		if base = s.BaseContext(nil); base == nil {
			panic("fcgi: BaseContext returned a nil context")
		}
	}
	l, err := newSerialLoop(s, fd, base)
	if err != nil {
		return err
	}
	defer l.f.Close() // a duplicate: fd stays open
	if !s.trackWaker(l, true) {
		return ErrServerClosed
	}
	defer s.trackWaker(l, false)
	return l.run()
}

// serialLoop is ServeFD's state; its buffers are reused across connections.
type serialLoop struct {
	s     *Server
	fd    int
	f     *os.File // a duplicate of fd, registered with the runtime's poller
	base  context.Context
	conn  conn // reused: reset for each connection
	delay time.Duration
}

func newSerialLoop(s *Server, fd int, base context.Context) (*serialLoop, error) {
	dup, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if e != 0 {
		return nil, fmt.Errorf("fcgi: serve fd %d: %w", fd, os.NewSyscallError("fcntl", e))
	}
	if err := syscall.SetNonblock(int(dup), true); err != nil {
		syscall.Close(int(dup))
		return nil, fmt.Errorf("fcgi: serve fd %d: %w", fd, os.NewSyscallError("fcntl", err))
	}
	// Non-blocking, so os.NewFile registers it with the poller.
	return &serialLoop{s: s, fd: fd, f: os.NewFile(dup, "fcgi-listener"), base: base}, nil
}

// wake ends a wait for the next connection (see Server.startShutdown).
func (l *serialLoop) wake() { l.f.SetReadDeadline(time.Unix(1, 0)) }

func (l *serialLoop) run() error {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return fmt.Errorf("fcgi: serve fd %d: %w", l.fd, err)
	}
	var nfd int
	var aerr error
	accept := func(fd uintptr) bool {
		nfd, aerr = accept4(int(fd))
		return aerr != syscall.EAGAIN
	}
	for {
		if l.s.closing() {
			return ErrServerClosed
		}
		if err := rc.Read(accept); err != nil {
			if l.s.closing() || errors.Is(err, os.ErrDeadlineExceeded) {
				return ErrServerClosed
			}
			return fmt.Errorf("fcgi: accept on fd %d: %w", l.fd, err)
		}
		if aerr != nil {
			if err := l.acceptFailed(aerr); err != nil {
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

// accept4 accepts without blocking; being quick, it skips the runtime's
// system call bookkeeping, which would wake the monitor thread each time.
func accept4(fd int) (int, error) {
	for {
		nfd, _, e := syscall.RawSyscall6(syscall.SYS_ACCEPT4, uintptr(fd), 0, 0,
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
