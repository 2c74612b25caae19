package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fcgishim/fcgishim/appctl"
	"github.com/fcgishim/fcgishim/config"
)

// The self-test proves that the site's binary starts, loads the config and
// answers FastCGI, and nothing more: it runs `serve --no-app`, so [app] is
// never started beside the live one (the app command is checked on its own,
// and the live app is read from its supervisor's state); it runs as the
// site's owner, never as another user on their files; and its whole process
// group is gone when the self-test returns.

// selfTestProc is the binary running for the self-test.
type selfTestProc struct {
	bin    string
	sock   string
	cmd    *exec.Cmd
	out    *limitedWriter
	exited chan error // receives cmd.Wait's result once
	done   bool
}

// selfTest runs the binary and sends it one request.
func (c *checker) selfTest(ctx context.Context, binOK bool) {
	bin, ok := c.selfTestBinary(binOK)
	if !ok {
		return
	}
	cred, ok := c.selfTestUser()
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	tmp, err := privateTempDir(cred)
	if err != nil {
		c.fail("self-test: "+err.Error(), "make $TMPDIR writable")
		return
	}
	defer os.RemoveAll(tmp)
	p := &selfTestProc{bin: bin, sock: filepath.Join(tmp, "s.sock")}
	fmt.Fprintf(c.o.Out, "       self-test: starting %s serve --no-app on %s ...\n", filepath.Base(bin), p.sock)
	if err := p.start(c, cred); err != nil {
		c.fail("self-test: start "+bin+": "+err.Error(), "chmod 755 "+shellQuote(bin))
		return
	}
	defer p.stop()
	if !c.waitListening(ctx, p) {
		return
	}
	c.requestInfo(ctx, p, cred)
}

// selfTestBinary is the file to run: o.SelfTest, else the site's binary
// when checkBinary found it runnable.
func (c *checker) selfTestBinary(binOK bool) (string, bool) {
	if c.o.SelfTest != "" {
		return c.o.SelfTest, true
	}
	if !binOK {
		c.warn("self-test skipped: "+c.bin+" cannot run", "fix the binary first")
		return "", false
	}
	return c.bin, true
}

// selfTestUser decides who runs the binary: nil (ourselves) when we own the
// site; its owner when we are root; nobody otherwise (running someone
// else's program as ourselves would give it our rights).
func (c *checker) selfTestUser() (*syscall.Credential, bool) {
	fi, err := os.Stat(c.dir)
	if err != nil {
		c.warn("self-test skipped: "+err.Error(), "")
		return nil, false
	}
	uid, _ := owner(fi)
	me := os.Geteuid()
	switch {
	case uid == me:
		return nil, true
	case me == 0:
		gid := int(fi.Sys().(*syscall.Stat_t).Gid)
		if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
			if g, err := strconv.Atoi(u.Gid); err == nil {
				gid = g
			}
		}
		fmt.Fprintf(c.o.Out, "       self-test: runs as the site's owner, uid %d gid %d (not as root)\n", uid, gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, true
	default:
		c.warn(fmt.Sprintf("self-test skipped: %s belongs to uid %d and check runs as uid %d: it would run their program with your rights", c.dir, uid, me),
			"run check as the site's owner (or as root: it then runs the binary as the owner)")
		return nil, false
	}
}

// privateTempDir makes a 0700 directory for the self-test's socket, owned
// by cred's user when set.
func privateTempDir(cred *syscall.Credential) (string, error) {
	tmp, err := os.MkdirTemp("", "fcgishim-check-")
	if err != nil {
		return "", err
	}
	if cred != nil {
		if err := os.Chown(tmp, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(tmp)
			return "", err
		}
	}
	return tmp, nil
}

// start runs the binary in a new process group, killed if check dies, with
// the environment the web server gives it.
func (p *selfTestProc) start(c *checker, cred *syscall.Credential) error {
	p.cmd = exec.Command(p.bin, "serve", "--no-app", "--listen", "unix:"+p.sock, "--protocol", "fcgi", "--config", c.configPath())
	p.cmd.Dir = c.dir
	p.cmd.Env = c.env.environ()
	p.out = &limitedWriter{n: 64 << 10}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: cred}
	p.cmd.WaitDelay = time.Second
	if err := p.cmd.Start(); err != nil {
		return err
	}
	p.exited = make(chan error, 1)
	go func() { p.exited <- p.cmd.Wait() }()
	return nil
}

// stop ends the process group: SIGTERM, SIGKILL after 5 s, and a last
// SIGKILL to the group for anything that outlived its leader.
func (p *selfTestProc) stop() {
	pgid := p.cmd.Process.Pid
	if !p.done {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.exited
		}
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// waitListening waits for the socket, showing progress every second.
func (c *checker) waitListening(ctx context.Context, p *selfTestProc) bool {
	start, lastShown := time.Now(), time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		conn, err := net.Dial("unix", p.sock)
		if err == nil {
			conn.Close()
			return true
		}
		select {
		case err := <-p.exited:
			p.done = true
			c.exitedEarly(p, err)
			return false
		case <-ctx.Done():
			c.fail(fmt.Sprintf("self-test: no socket after %s", c.o.Timeout), "run "+p.bin+" serve --no-app --http 127.0.0.1:8000 to see what it does")
			return false
		case <-tick.C:
		}
		if time.Since(lastShown) >= time.Second {
			lastShown = time.Now()
			fmt.Fprintf(c.o.Out, "       self-test: waiting for the socket (%.0fs) ...\n", time.Since(start).Seconds())
		}
	}
}

// exitedEarly reports a binary that ended before listening; one that does
// not know --no-app is older than this check and is not run otherwise.
func (c *checker) exitedEarly(p *selfTestProc, err error) {
	if strings.Contains(p.out.String(), "flag provided but not defined: -no-app") {
		c.warn(fmt.Sprintf("self-test skipped: %s is older than this check (no serve --no-app), and a full start would start the app beside the live one", p.bin),
			"install this version over it: <this binary> install "+shellQuote(c.dir))
		return
	}
	c.fail(fmt.Sprintf("self-test: %s exited before listening (%v): %s", filepath.Base(p.bin), err, lastLines(p.out.String(), 3)),
		"run "+p.bin+" serve --no-app --http 127.0.0.1:8000 to see the error")
}

// requestInfo sends GET / and reports the answer, with the user the
// answering process ran as (read from /proc while it is alive).
func (c *checker) requestInfo(ctx context.Context, p *selfTestProc, cred *syscall.Credential) {
	fmt.Fprintf(c.o.Out, "       self-test: sending GET / ...\n")
	t0 := time.Now()
	resp, err := FastCGIGet(ctx, "unix", p.sock, "/", http.Header{"Accept": {"application/json, text/html;q=0.9"}})
	took := time.Since(t0).Round(time.Millisecond)
	switch {
	case err != nil:
		c.fail(fmt.Sprintf("self-test: GET / through FastCGI: %v after %s: %s", err, took, lastLines(p.out.String(), 3)),
			"run "+p.bin+" serve --no-app --http 127.0.0.1:8000 and open it to see the error")
		return
	case resp.Status >= 500:
		c.fail(fmt.Sprintf("self-test: GET / through FastCGI answered %d %s in %s: %s | log: %s", resp.Status, http.StatusText(resp.Status), took, firstLine(resp.Body), lastLines(p.out.String(), 1)),
			"read the error above, or run "+p.bin+" serve --no-app --http 127.0.0.1:8000")
		return
	}
	var in struct {
		Version string `json:"version"`
		PID     int    `json:"pid"`
	}
	what := ""
	if json.Unmarshal(resp.Body, &in) == nil && in.Version != "" {
		what = ", the info page of version " + in.Version
		if uid, err := processUID(in.PID); err == nil {
			what += fmt.Sprintf(" (pid %d, uid %d)", in.PID, uid)
			if cred != nil && uid != int(cred.Uid) {
				c.fail(fmt.Sprintf("self-test: answered as uid %d, not as the site's owner (uid %d)", uid, cred.Uid), "report this as a bug")
				return
			}
		}
	}
	c.ok("self-test: GET / through FastCGI answered %d %s in %s%s; the app was not started", resp.Status, http.StatusText(resp.Status), took, what)
}

// processUID is the real uid of pid, from /proc.
func processUID(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "Uid:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				return strconv.Atoi(f[0])
			}
		}
	}
	return 0, errors.New("no Uid line in /proc/" + strconv.Itoa(pid) + "/status")
}

// checkLiveApp reports the app the live site runs, from its supervisor's
// state in the runtime directory, without touching it.
func (c *checker) checkLiveApp(cfg *config.Config) {
	if len(cfg.App.Command) == 0 {
		return
	}
	acct, _ := c.siteAccount()
	dir := appctl.RuntimeDirFor(cfg, acct)
	s, err := appctl.ReadState(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.info("live app: not running (the first request to the site starts it)")
	case errors.Is(err, fs.ErrPermission):
		c.info("live app: %s is not readable by uid %d (run check as the site's owner to see the live app)", dir, os.Geteuid())
	case err != nil:
		c.warn("live app: "+err.Error(), "")
	case !appctl.Alive(s.Supervisor):
		c.info("live app: not running (its supervisor, pid %d, has exited; the next request starts it)", s.Supervisor)
	case s.Status == "ready" && appctl.Alive(s.PID):
		c.ok("live app: ready, pid %d (start #%d), supervisor pid %d; left as it is", s.PID, s.Instance, s.Supervisor)
	case s.Status == "backoff":
		c.fail(fmt.Sprintf("live app: failing (%d failed starts in a row): %s", s.Failures, s.Cause),
			"read the app's output (the web server's error log, or [app] log), fix it, then touch "+c.o.Name)
	default:
		c.info("live app: %s (supervisor pid %d)", s.Status, s.Supervisor)
	}
}
