package appctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fcgishim/fcgishim/config"
	"github.com/fcgishim/fcgishim/internal/httpsyntax"
)

// Client is one copy's handle on the shared, supervised app: each copy of
// mysite.fcgi has one. It finds the app through the runtime directory,
// registers as a user of it (clients.lock), starts the supervisor when none
// runs, and waits for a ready instance. It is all the request side needs
// of the lifecycle: Ready, Await, Status, NoteHost and Close.
type Client struct {
	cfg        config.App
	exe        string // absolute path of our binary, started as the supervisor
	configPath string // absolute
	dir        string // the runtime directory
	dirID      uint64 // its inode when we prepared it (under mu)
	ready      time.Duration
	logPath    string // [app] log: the supervisor's stderr; "" = ours
	logf       func(kind, format string, args ...any)

	// siteHost is the Host of the first request the copy forwarded: the
	// supervisor we start sends it with its readiness request, so an app
	// that checks Host (Django's ALLOWED_HOSTS) answers it as it would a
	// visitor, instead of logging (and mailing) a DisallowedHost error.
	siteHost atomic.Pointer[string]

	mu        sync.Mutex
	clients   *lockFile // our shared lock on clients.lock, once registered
	cached    *State
	cacheID   fileID
	cacheAt   time.Time // when state.json was last looked at
	statePath string
	closed    bool
}

// Instance names one ready instance of the app.
type Instance struct {
	// Name changes whenever the instance does, so connections kept to a
	// replaced one are never reused: "app-<supervisor pid>-<instance>". The
	// supervisor's pid is part of it: a new supervisor (after its runtime
	// directory was re-created) numbers its instances from 1 again.
	Name string
	// Addr is where it listens: "unix:/path" or "tcp:127.0.0.1:port"
	// (SplitAddr gives the arguments of net.Dial).
	Addr string
}

// UnavailableError means the app is not ready: starting too long, or
// failing (crash loop) until RetryAt.
type UnavailableError struct {
	Cause   string // short and safe to show a visitor
	RetryAt time.Time
}

func (e *UnavailableError) Error() string { return "app unavailable: " + e.Cause }

// fileID tells whether state.json was rewritten since we read it.
type fileID struct {
	ino   uint64
	mtime int64
	size  int64
}

// NewClient prepares the runtime directory of the app configured by c
// (which must come from a file: the supervisor reads it). exe is the binary
// started as the supervisor ("" = our own); logf logs a line of the given
// kind, rate-limited by the caller.
func NewClient(c *config.Config, exe string, logf func(kind, format string, args ...any)) (*Client, error) {
	if c.File == "" {
		return nil, errors.New("[app] command needs a config file: the app supervisor reads it")
	}
	cl := &Client{cfg: c.App, ready: c.App.ReadyTimeout.Duration, logf: logf}
	if cl.ready <= 0 {
		cl.ready = 30 * time.Second
	}
	var err error
	if cl.configPath, err = filepath.Abs(c.File); err != nil {
		return nil, err
	}
	cl.exe = exe
	if cl.exe == "" {
		if cl.exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("find own executable: %w", err)
		}
	}
	if cl.exe, err = filepath.Abs(cl.exe); err != nil {
		return nil, err
	}
	cl.dir = RuntimeDir(c, os.Getenv)
	cl.statePath = filepath.Join(cl.dir, fileState)
	if err := prepareRuntimeDir(cl.dir); err != nil {
		return nil, err
	}
	cl.dirID = dirIdentity(cl.dir)
	cl.logPath = c.Resolve(c.App.Log)
	return cl, nil
}

// Close gives up our claim on the shared app (the supervisor stops it once
// no copy holds one for idle_stop). Safe to call twice.
func (cl *Client) Close() error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.closed {
		return nil
	}
	cl.closed = true
	err := cl.clients.close()
	cl.clients = nil
	return err
}

// NoteHost records the Host of a request the copy forwards; the first valid
// one is sent with the readiness request of a supervisor we start.
func (cl *Client) NoteHost(h string) {
	if cl.siteHost.Load() == nil && h != "" && httpsyntax.ValidHost(h) {
		cl.siteHost.CompareAndSwap(nil, &h)
	}
}

// Ready returns the current ready instance: once registered, from the state
// looked at within stateRecheck; else (or when none is ready) as Await.
func (cl *Client) Ready(ctx context.Context) (Instance, error) {
	cl.mu.Lock()
	registered := cl.clients != nil
	cl.mu.Unlock()
	if registered {
		if s := cl.current(false); s != nil && s.Status == statusReady {
			return s.instance(), nil
		}
	}
	return cl.Await(ctx, "")
}

// Await registers, starts the supervisor if needed and waits for a ready
// instance whose address is not avoid (one that just refused us: the
// supervisor is about to notice the crash).
func (cl *Client) Await(ctx context.Context, avoid string) (Instance, error) {
	s, err := cl.await(ctx, avoid)
	if err != nil {
		return Instance{}, err
	}
	return s.instance(), nil
}

// Status returns what the supervisor last wrote (read fresh), or nil when no
// supervisor runs.
func (cl *Client) Status() *State {
	if s := cl.current(true); s != nil && Alive(s.Supervisor) {
		return s
	}
	return nil
}

func (s *State) instance() Instance {
	return Instance{Name: "app-" + strconv.Itoa(s.Supervisor) + "-" + strconv.Itoa(s.Instance), Addr: s.Addr}
}

// current returns the state, re-read only when state.json changed; unless
// fresh, a state looked at within stateRecheck is used as it is.
func (cl *Client) current(fresh bool) *State {
	now := time.Now()
	cl.mu.Lock()
	if !fresh && cl.cached != nil && now.Sub(cl.cacheAt) < stateRecheck {
		s := cl.cached
		cl.mu.Unlock()
		return s
	}
	cl.mu.Unlock()
	fi, err := os.Stat(cl.statePath)
	if err != nil {
		return nil
	}
	id := fileID{mtime: fi.ModTime().UnixNano(), size: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.ino = st.Ino
	}
	cl.mu.Lock()
	if cl.cached != nil && cl.cacheID == id {
		s := cl.cached
		cl.cacheAt = now
		cl.mu.Unlock()
		return s
	}
	cl.mu.Unlock()
	s, err := ReadState(cl.dir)
	if err != nil {
		return nil
	}
	cl.mu.Lock()
	cl.cached, cl.cacheID, cl.cacheAt = s, id, now
	cl.mu.Unlock()
	return s
}

// stateRecheck is how long a state read from state.json is used without
// looking again: a stat per request was a tenth of the proxy's cost. A
// replacement is noticed this much later (the old instance serves for the
// 2 s handover), a crash at once (the dial fails and await re-reads).
const stateRecheck = 50 * time.Millisecond

// await is the slow path: register as a client, make sure a supervisor
// runs (starting one if we are the first), and wait until the app is ready,
// at most ready_timeout (plus the supervisor's own start).
//
// A ready state whose address is avoid (it just refused us) is waited out:
// the supervisor is about to notice the crash.
func (cl *Client) await(ctx context.Context, avoid string) (*State, error) {
	deadline := time.Now().Add(cl.ready + 5*time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	wait := 5 * time.Millisecond
	var startErr error
	for {
		if renewed, err := cl.ensureDir(); err != nil {
			return nil, err
		} else if renewed {
			avoid = "" // a new supervisor may well reuse the old address
		}
		if ok, err := cl.register(); err != nil {
			return nil, err
		} else if ok {
			if !held(filepath.Join(cl.dir, fileSupervisorLock)) {
				if startErr = cl.startSupervisor(ctx); startErr != nil {
					cl.logf("supervisor", "%v", startErr)
				}
			} else if s := cl.current(true); s != nil && Alive(s.Supervisor) {
				switch s.Status {
				case statusReady:
					if s.Addr != avoid {
						return s, nil
					}
				case statusBackoff:
					// A crash loop answers at once; a first crash of an
					// app that ran is worth waiting for if the retry
					// comes soon enough.
					if s.Failures >= 2 || s.RetryAt.After(deadline) {
						return nil, &UnavailableError{Cause: s.Cause, RetryAt: s.RetryAt}
					}
				}
			}
		}
		if time.Now().After(deadline) {
			if startErr != nil {
				return nil, startErr
			}
			return nil, &UnavailableError{Cause: "the app is still starting"}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
			wait = min(wait*2, 50*time.Millisecond)
		}
	}
}

// ensureDir re-creates the runtime directory when it was removed or
// replaced since we prepared it (a cleaner of /tmp or ~/.cache, a person).
// Our registration and the state we read belong to the old one: they are
// dropped, so the wait that follows starts a supervisor in the new one. The
// old supervisor sees its directory gone and stops its app. It reports
// whether it re-created the directory.
func (cl *Client) ensureDir() (bool, error) {
	id := dirIdentity(cl.dir)
	cl.mu.Lock()
	same := id != 0 && id == cl.dirID
	cl.mu.Unlock()
	if same {
		return false, nil
	}
	if err := prepareRuntimeDir(cl.dir); err != nil {
		return false, err
	}
	cl.mu.Lock()
	cl.dirID = dirIdentity(cl.dir)
	cl.clients.close()
	cl.clients, cl.cached = nil, nil
	cl.mu.Unlock()
	cl.logf("runtime dir", "the app's runtime directory %s was removed: re-created it", cl.dir)
	return true, nil
}

// Alive reports whether pid exists (it may belong to another user).
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// register takes our shared lock on clients.lock for the rest of our life,
// which keeps the supervisor and the app running. It fails (false) while a
// supervisor that found no client holds the lock exclusively to shut down.
func (cl *Client) register() (bool, error) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.closed {
		return false, errors.New("app client closed")
	}
	if cl.clients != nil {
		return true, nil
	}
	l, err := openLock(filepath.Join(cl.dir, fileClientsLock))
	if err != nil {
		return false, fmt.Errorf("register with the app supervisor: %w", err)
	}
	ok, err := l.try(syscall.LOCK_SH)
	if err != nil || !ok {
		l.close()
		return false, err
	}
	cl.clients = l
	return true, nil
}

// startSupervisor starts the supervisor unless another copy is doing so
// (start.lock) or one runs already. The first stage returns once the
// supervisor holds its lock.
func (cl *Client) startSupervisor(ctx context.Context) error {
	l, err := openLock(filepath.Join(cl.dir, fileStartLock))
	if err != nil {
		return fmt.Errorf("start app supervisor: %w", err)
	}
	defer l.close()
	if ok, err := l.try(syscall.LOCK_EX); err != nil || !ok {
		return err // another copy is starting it
	}
	if held(filepath.Join(cl.dir, fileSupervisorLock)) {
		return nil
	}
	env := appEnv(os.Environ(), cl.cfg.EnvAllow, nil)
	env = append(env, envRuntimeDir+"="+cl.dir, envExecutable+"="+cl.exe)
	if h := cl.siteHost.Load(); h != nil {
		env = append(env, envReadyHost+"="+*h)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, cl.exe, "_supervise", "--config", cl.configPath)
	cmd.Env = env
	cmd.Dir = "/"
	cmd.Stderr = os.Stderr // an *os.File: inherited, no pipe to outlive us
	if cl.logPath != "" {
		f, err := os.OpenFile(cl.logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("[app] log: %w", err)
		}
		defer f.Close()
		cmd.Stderr = f
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("start app supervisor (%s _supervise): %w", cl.exe, err)
	}
	return nil
}
