package appctl

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fcgishim/fcgishim/config"
)

// The runtime directory is shared by every copy of mysite.fcgi for one
// config file and by the one supervisor they start. It is private (0700,
// ours) and holds:
//
//	supervisor.lock  held exclusively by the live supervisor for its lifetime
//	start.lock       held exclusively by the copy that is starting a supervisor
//	clients.lock     held shared by every copy that uses the app; the
//	                 supervisor's exclusive try-lock tells it nobody is left
//	state.json       what the supervisor tells the copies (written by rename)
//	app-N.sock       the unix socket of app instance N
//
// Locks are flock(2) locks, so the kernel drops them when a holder dies, even
// by SIGKILL: a dead supervisor or a dead copy never leaves a stale lock.
const (
	fileSupervisorLock = "supervisor.lock"
	fileStartLock      = "start.lock"
	fileClientsLock    = "clients.lock"
	fileState          = "state.json"
)

// Variables the client sets in the supervisor's environment.
const (
	envRuntimeDir = "FCGISHIM_RUNTIME_DIR"
	envExecutable = "FCGISHIM_EXECUTABLE"
)

// maxSocketPath leaves room for "/app-NNNNNN.sock" within sun_path (108).
const maxSocketPath = 90

// RuntimeDir is the one rule for the private directory of the app
// configured by c, shared by every copy of mysite.fcgi for that config file
// and by its supervisor: the rule evaluated for the running process
// (RuntimeDirFor with Self). getenv is os.Getenv outside tests.
func RuntimeDir(c *config.Config, getenv func(string) string) string {
	return RuntimeDirFor(c, Self(getenv))
}

// Account is whom the runtime-directory rule is evaluated for: the running
// process (Self), or, for `check`, the user the web server will run the
// site as (AccountOf that user's uid, with the environment the web server
// gives), so that check run as root or as another user predicts the
// directory the live site will use.
type Account struct {
	UID    int
	Home   string              // "" when unknown
	Getenv func(string) string // the account's environment (TMPDIR)
}

// Self is the running process's account: its uid, and its home from
// $HOME or else the password database.
func Self(getenv func(string) string) Account { return AccountOf(os.Getuid(), getenv) }

// AccountOf is uid's account as a process with environment getenv sees it:
// the home is $HOME when it is an absolute path, else the password
// database's entry for uid (os/user reads /etc/passwd without cgo).
func AccountOf(uid int, getenv func(string) string) Account {
	return Account{UID: uid, Home: homeOf(uid, getenv), Getenv: getenv}
}

// RuntimeDirFor is the rule itself, for account a: [app] runtime_dir when
// set, else the first of these that is short enough for a unix socket path
// and lies in a directory a owns:
//
//	<home>/.cache/fcgishim/<hash>       home: a.Home ($HOME, else the password database's)
//	<config dir>/.fcgishim-<name>       beside the config; never served
//	$TMPDIR/fcgishim-<uid>-<hash>        $TMPDIR or /tmp: the last resort
//
// where <hash> comes from the config file's absolute path. suEXEC passes no
// HOME or TMPDIR, so the home comes from the password database: a shared
// /tmp is used only when neither the home nor the site directory is the
// account's, because another local user can compute the name and create it
// first (prepareRuntimeDir then refuses it). $XDG_RUNTIME_DIR is not used:
// web servers do not pass it, so a copy started from a login shell (or
// `check`) would pick another directory than the site's, and it vanishes at
// logout.
func RuntimeDirFor(c *config.Config, a Account) string {
	if c.App.RuntimeDir != "" {
		return c.Resolve(c.App.RuntimeDir)
	}
	configPath, err := filepath.Abs(c.File)
	if err != nil {
		configPath = c.File
	}
	return defaultRuntimeDir(configPath, a)
}

func defaultRuntimeDir(configPath string, a Account) string {
	sum := sha256.Sum256([]byte(configPath))
	hash := hex.EncodeToString(sum[:6])
	fits := func(d string) bool { return len(d) <= maxSocketPath }
	if h := a.Home; h != "" && ownedBy(h, a.UID) {
		if d := filepath.Join(h, ".cache", "fcgishim", hash); fits(d) {
			return d
		}
	}
	if cd := filepath.Dir(configPath); ownedBy(cd, a.UID) {
		name := strings.TrimSuffix(filepath.Base(configPath), filepath.Ext(configPath))
		if d := filepath.Join(cd, ".fcgishim-"+name); fits(d) {
			return d
		}
	}
	tmp := ""
	if a.Getenv != nil {
		tmp = a.Getenv("TMPDIR")
	}
	if !filepath.IsAbs(tmp) {
		tmp = "/tmp"
	}
	return filepath.Join(tmp, "fcgishim-"+strconv.Itoa(a.UID)+"-"+hash)
}

// homeDir is the running account's home directory (see AccountOf).
func homeDir(getenv func(string) string) string { return homeOf(os.Getuid(), getenv) }

// homeOf is uid's home: $HOME when it is an absolute path, else the
// password database's; "" when neither is known.
func homeOf(uid int, getenv func(string) string) string {
	if getenv != nil {
		if h := getenv("HOME"); filepath.IsAbs(h) {
			return h
		}
	}
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil || !filepath.IsAbs(u.HomeDir) {
		return ""
	}
	return u.HomeDir
}

// ownedBy reports whether path is a directory (after symlinks) owned by uid.
func ownedBy(path string, uid int) bool {
	fi, err := os.Stat(path)
	if err != nil || !fi.IsDir() {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == uid
}

// prepareRuntimeDir creates dir (and its parents) and checks that it is a
// real directory owned by us with no access for others; a directory another
// user could have prepared (a symlink, 0777, someone else's) is refused
// rather than trusted (PROXY-09, CHILD-06).
func prepareRuntimeDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return fmt.Errorf("runtime dir %s: %w", dir, err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("runtime dir %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("runtime dir %s: %w", dir, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("runtime dir %s: not a directory", dir)
	case ok && int(st.Uid) != os.Getuid():
		return fmt.Errorf("runtime dir %s: owned by uid %d, not by us", dir, st.Uid)
	case fi.Mode().Perm()&0o077 != 0:
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("runtime dir %s: mode %v: %w", dir, fi.Mode().Perm(), err)
		}
	}
	return nil
}

// dirIdentity is the inode of dir, 0 when it cannot be read: a removed and
// re-created directory has a new one.
func dirIdentity(dir string) uint64 {
	fi, err := os.Lstat(dir)
	if err != nil {
		return 0
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// lockFile is an open file used only for flock.
type lockFile struct{ f *os.File }

func openLock(path string) (*lockFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	return &lockFile{f}, nil
}

// try takes the lock (syscall.LOCK_EX or LOCK_SH) without blocking and
// reports whether it got it.
func (l *lockFile) try(how int) (bool, error) {
	for {
		err := syscall.Flock(int(l.f.Fd()), how|syscall.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, syscall.EWOULDBLOCK):
			return false, nil
		case errors.Is(err, syscall.EINTR):
			continue
		default:
			return false, fmt.Errorf("flock %s: %w", l.f.Name(), err)
		}
	}
}

func (l *lockFile) unlock() { _ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN) }

func (l *lockFile) close() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// SupervisorRunning reports whether a supervisor runs for the runtime
// directory dir (it holds supervisor.lock for its lifetime).
func SupervisorRunning(dir string) bool { return held(filepath.Join(dir, fileSupervisorLock)) }

// held reports whether someone holds an exclusive lock on path, by trying a
// shared lock on it. A missing file is not held.
func held(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	return errors.Is(err, syscall.EWOULDBLOCK)
}

// Status values of the shared state.
const (
	statusStarting = "starting" // no instance ready yet; wait
	statusReady    = "ready"    // Addr answers
	statusBackoff  = "backoff"  // the app failed; next try at RetryAt
)

// State is what the supervisor tells the copies, in state.json. It carries
// no environment, command line or secret: only where to connect and why not.
type State struct {
	Supervisor int       `json:"supervisor_pid"`
	Status     string    `json:"status"`
	Addr       string    `json:"addr,omitempty"` // "unix:/path" or "tcp:127.0.0.1:port" when ready
	Instance   int       `json:"instance"`       // counts starts; changes when Addr does
	PID        int       `json:"pid,omitempty"`  // of the ready instance
	Failures   int       `json:"failures"`       // consecutive failed starts or crashes
	RetryAt    time.Time `json:"retry_at,omitzero"`
	Cause      string    `json:"cause,omitempty"` // short and safe to show a visitor
	Generation string    `json:"generation"`      // stamp of binary + config the app runs under
}

func writeState(dir string, s *State) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".state-*")
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, fileState))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

// ReadState reads the state the supervisor last wrote in the runtime
// directory dir; a missing file is an fs.ErrNotExist.
func ReadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, fileState))
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	return &s, nil
}

// stamp identifies the versions of files: a new binary, a touched binary, an
// edited config or a touched restart.txt all give a new stamp. Missing files
// count as "-".
func stamp(paths ...string) string {
	var b []byte
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			b = append(b, "-;"...)
			continue
		}
		var ino uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		b = fmt.Appendf(b, "%d.%d.%d;", fi.ModTime().UnixNano(), fi.Size(), ino)
	}
	return string(b)
}
