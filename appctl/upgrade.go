package appctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// A new binary (mv new mysite.fcgi) must run as the supervisor too, and the
// switch must lose no request. The supervisor cannot execve itself in place:
// its apps die with the thread that started them (Pdeathsig), and execve
// ends every other thread. So it hands over, the way an app is replaced,
// one level up:
//
//  1. the old supervisor takes start.lock (no copy starts a third one
//     meanwhile) and starts the new binary as a supervisor with envTakeover;
//  2. the new one takes takeover.lock (it runs) and waits for supervisor.lock;
//  3. the old one sees takeover.lock held, lets go of supervisor.lock and
//     clients.lock, waits until the new one holds supervisor.lock, and lets
//     go of start.lock;
//  4. the new one starts its app while state.json still names the old app,
//     which keeps serving; once its own has answered, it writes the state;
//  5. the old one sees the state name its successor's app, keeps its own for
//     the handover period (requests already sent to it finish), stops it and
//     exits.
//
// A new binary that does not run as a supervisor within takeoverWait (built
// for another processor, crashing at start) is logged, and the old
// supervisor replaces the app itself, as for a config change.

const takeoverWait = 10 * time.Second

// successor is the supervisor started from the new binary.
type successor struct {
	pid  int
	done chan struct{} // closed when it has exited
	err  error         // its exit status, once done is closed
}

// handOver starts the new binary's supervisor and gives it the locks. It
// returns nil, having changed nothing, when that fails.
func (s *supervisor) handOver(ctx context.Context) *successor {
	start, err := openLock(filepath.Join(s.dir, fileStartLock))
	if err != nil {
		s.logf("binary replaced, but start.lock: %v; replacing the app in this supervisor", err)
		return nil
	}
	defer start.close()
	if !pollUntil(ctx, nil, func() bool { ok, _ := start.try(syscall.LOCK_EX); return ok }) {
		s.logf("binary replaced, but start.lock stays busy; replacing the app in this supervisor")
		return nil
	}
	cmd := exec.Command(s.exe, "_supervise", "--config", s.configPath)
	cmd.Env = append(os.Environ(), envStage+"=detached", envRuntimeDir+"="+s.dir,
		envExecutable+"="+s.exe, envTakeover+"="+strconv.Itoa(s.n))
	cmd.Dir = "/"
	cmd.Stderr = os.Stderr
	if f, ok := s.log.(*os.File); ok {
		cmd.Stderr = f // an *os.File is inherited: no pipe that ends with us
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		s.logf("binary replaced, but it does not start (%v); replacing the app in this supervisor", err)
		return nil
	}
	succ := &successor{pid: cmd.Process.Pid, done: make(chan struct{})}
	// Ends when the successor exits; if we exit first, with us.
	go func() {
		succ.err = cmd.Wait()
		close(succ.done)
	}()
	takeover := filepath.Join(s.dir, fileTakeoverLock)
	if !pollUntil(ctx, succ.done, func() bool { return held(takeover) }) {
		why := fmt.Sprintf("did not take over within %s", takeoverWait)
		select {
		case <-succ.done:
			why = fmt.Sprintf("exited (%v)", succ.err)
		default:
			cmd.Process.Kill()
			<-succ.done
		}
		s.logf("binary replaced, but its supervisor %s; replacing the app in this supervisor", why)
		return nil
	}
	s.lock.close()
	s.clients.close()
	lockPath := filepath.Join(s.dir, fileSupervisorLock)
	pollUntil(ctx, succ.done, func() bool { return held(lockPath) })
	s.logf("binary replaced: handing over to its supervisor (pid %d)", succ.pid)
	return succ
}

// pollUntil checks cond every 10 ms until it holds (true), or until
// takeoverWait passes, ctx ends or gone is closed (false).
func pollUntil(ctx context.Context, gone <-chan struct{}, cond func() bool) bool {
	deadline := time.NewTimer(takeoverWait)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return false
		case <-gone:
			return cond()
		case <-deadline.C:
			return false
		case <-tick.C:
		}
	}
	return true
}

// awaitSuccessor waits until the state names the successor's ready app, or
// the successor has exited (it stopped, or failed), or ctx ends. Until
// then our app keeps serving, however long the new one takes.
func (s *supervisor) awaitSuccessor(ctx context.Context, succ *successor) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if st, err := ReadState(s.dir); err == nil && st.Supervisor == succ.pid && st.Status == statusReady {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-succ.done:
			return
		case <-tick.C:
		}
	}
}

// takeOver is the new supervisor's side of a handover (see handOver):
// announce that we run, wait for the supervisor lock, and continue the
// instance numbers (the old app's socket must not be reused) with the old
// app still named in the state until ours is ready.
func (s *supervisor) takeOver(last string) error {
	n, err := strconv.Atoi(last)
	if err != nil || n < 0 {
		return fmt.Errorf("%s=%q: not an instance number", envTakeover, last)
	}
	t, err := openLock(filepath.Join(s.dir, fileTakeoverLock))
	if err != nil {
		return fmt.Errorf("takeover lock: %w", err)
	}
	defer t.close()
	if ok, err := t.try(syscall.LOCK_EX); err != nil || !ok {
		return errors.Join(errors.New("another supervisor is taking over already"), err)
	}
	for {
		err := syscall.Flock(int(s.lock.f.Fd()), syscall.LOCK_EX)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("supervisor lock: %w", err)
		}
	}
	s.n = n
	// Only a ready app is worth keeping in the state until ours is ready;
	// one starting or failing, we report on from the start.
	if st, err := ReadState(s.dir); err == nil && st.Status == statusReady {
		s.st, s.inherited = *st, true
	}
	return nil
}
