package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// EnvReadyFD names the descriptor on which a daemon reports that it is
// listening ("ok") or why it could not start.
const EnvReadyFD = "FCGISHIM_READY_FD"

// Options are Django's become_daemon parameters.
type Options struct {
	Path    string   // the executable
	Args    []string // argv, re-used as is
	Env     []string
	Workdir string // chdir here; "" = "/"
	Umask   int
	Outlog  string // stdout appended here; "" = /dev/null
	Errlog  string // stderr appended here; "" = /dev/null
}

// Daemonize starts the program again detached (new session, stdin from
// /dev/null, stdout/stderr appended to the logs, working directory and umask
// set) and waits until it reports that it is listening, so a pidfile and
// socket exist when this returns. It returns the daemon's PID. Go cannot
// fork, so this is a re-exec rather than Django's double fork; setsid gives
// the same detachment.
func Daemonize(o Options) (int, error) {
	if o.Workdir == "" {
		o.Workdir = "/"
	}
	stdout, err := openLog(o.Outlog)
	if err != nil {
		return 0, err
	}
	defer stdout.Close()
	stderr, err := openLog(o.Errlog)
	if err != nil {
		return 0, err
	}
	defer stderr.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	cmd := exec.Command(o.Path, o.Args[1:]...)
	cmd.Args[0] = o.Args[0]
	cmd.Env = append(WithoutDaemonEnv(o.Env), EnvReadyFD+"=3")
	cmd.Dir = o.Workdir
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	old := syscall.Umask(o.Umask)
	err = cmd.Start()
	syscall.Umask(old)
	w.Close()
	if err != nil {
		return 0, fmt.Errorf("daemonize: %w", err)
	}
	pid := cmd.Process.Pid
	line, rerr := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSpace(line)
	if line == "ok" {
		cmd.Process.Release()
		return pid, nil
	}
	// It failed to start: collect its exit so no zombie is left.
	_ = cmd.Wait()
	if line != "" {
		return 0, fmt.Errorf("daemon did not start: %s", line)
	}
	return 0, fmt.Errorf("daemon exited before listening (see errlog %q): %v", o.Errlog, rerr)
}

func openLog(path string) (*os.File, error) {
	if path == "" {
		path = os.DevNull
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	return f, nil
}

// WithoutDaemonEnv removes the daemon handshake variable from env, so a
// re-executed program does not write to a descriptor it no longer owns.
func WithoutDaemonEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, EnvReadyFD+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// ReadyNotifier returns the function a daemon calls once: with nil when it
// listens, or with the error that stops it.
func ReadyNotifier(fdText string) func(error) {
	fd, err := strconv.Atoi(fdText)
	if err != nil {
		return func(error) {}
	}
	f := os.NewFile(uintptr(fd), "ready")
	done := false
	return func(err error) {
		if done || f == nil {
			return
		}
		done = true
		msg := "ok"
		if err != nil {
			msg = strings.ReplaceAll(err.Error(), "\n", " ")
		}
		fmt.Fprintln(f, msg)
		f.Close()
	}
}

// WritePidfile writes pid to path atomically.
func WritePidfile(path string, pid int) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return fmt.Errorf("write pidfile: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write pidfile: %w", err)
	}
	return nil
}

// RemovePidfile removes path if it still names pid (a newer daemon may have
// taken it over).
func RemovePidfile(path string, pid int) {
	if got, err := ReadPidfile(path); err == nil && got == pid {
		os.Remove(path)
	}
}

// ReadPidfile returns the PID stored in path.
func ReadPidfile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read pidfile: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid < 1 {
		return 0, errors.New("read pidfile " + path + ": no PID in it")
	}
	return pid, nil
}
