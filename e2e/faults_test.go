package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Process-level fault tests: the real binary, killed, starved, renamed,
// deleted and touched (LIFE-*, CHILD-04, RES-01, RES-03, SOCK-04/05).

// proc is a running mysite.fcgi serving plain HTTP (the same serve loop,
// watcher and restart path as every other mode).
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	bin    string
	url    string
	stderr string
	exited chan struct{}
}

func startHTTP(t *testing.T, dir string, stderr *os.File, toml string, extraEnv ...string) *proc {
	t.Helper()
	bin := filepath.Join(dir, "mysite.fcgi")
	if _, err := os.Stat(bin); err != nil { // a second copy runs the same file
		bin = install(t, dir, "mysite.fcgi")
	}
	if toml != "" {
		if err := os.WriteFile(filepath.Join(dir, "mysite.toml"), []byte(toml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	port := freePort(t)
	p := &proc{t: t, bin: bin, url: fmt.Sprintf("http://127.0.0.1:%d", port), exited: make(chan struct{})}
	p.cmd = exec.Command("sh", "-c", `ulimit -n "${NOFILE:-1024}"; exec "$0" "$@"`, bin, "serve", "--http", fmt.Sprintf("127.0.0.1:%d", port))
	p.cmd.Env = append(os.Environ(), extraEnv...)
	if stderr == nil {
		f, err := os.CreateTemp(t.TempDir(), "stderr")
		if err != nil {
			t.Fatal(err)
		}
		stderr = f
		p.stderr = f.Name()
	}
	p.cmd.Stderr = stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
	waitDial(t, "tcp", fmt.Sprintf("127.0.0.1:%d", port), p.exited, p.stderr)
	return p
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

var client = &http.Client{Timeout: 10 * time.Second}

func (p *proc) info() (infoJSON, error) {
	in, _, err := getInfo(client, "GET", p.url+"/x", nil)
	return in, err
}

// waitStarted polls until the program answers with a start time other than
// old, and returns it.
func (p *proc) waitStarted(old string, d time.Duration) string {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if in, err := p.info(); err == nil && in.Started != old {
			return in.Started
		}
		select {
		case <-p.exited:
			p.t.Fatalf("exited instead of restarting\n%s", fileText(p.stderr))
		case <-time.After(50 * time.Millisecond): // polling a condition
		}
	}
	p.t.Fatalf("no restart within %v\n%s", d, fileText(p.stderr))
	return ""
}

// steady asserts that for d every request succeeds and reports started.
func (p *proc) steady(started string, d time.Duration, what string) {
	p.t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); {
		in, err := p.info()
		if err != nil || in.Started != started {
			p.t.Fatalf("%s: err=%v started %q → %q\n%s", what, err, started, in.Started, fileText(p.stderr))
		}
		select {
		case <-p.exited:
			p.t.Fatalf("%s: exited\n%s", what, fileText(p.stderr))
		case <-time.After(50 * time.Millisecond): // polling a condition
		}
	}
}

// LIFE-01, LIFE-03, LIFE-04 through the real binary: deleted while running
// keeps serving the same program; a new file renamed into place restarts it
// once, in place (same pid); a burst of touches restarts it once, not in a
// loop.
func TestBinaryDeletedRenamedTouched_LIFE01_03_04(t *testing.T) {
	dir := t.TempDir()
	p := startHTTP(t, dir, nil, "[server]\nwatch = \"auto\"\n")
	first, err := p.info()
	if err != nil {
		t.Fatal(err)
	}
	// LIFE-04: rm keeps serving (nothing could be respawned).
	if err := os.Remove(p.bin); err != nil {
		t.Fatal(err)
	}
	p.steady(first.Started, 3*time.Second, "after rm")

	// LIFE-01: a new build renamed into place restarts us, in place.
	src, _ := os.ReadFile(binary(t))
	tmp := filepath.Join(dir, ".mysite.fcgi.new")
	if err := os.WriteFile(tmp, src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p.bin); err != nil {
		t.Fatal(err)
	}
	second := p.waitStarted(first.Started, 15*time.Second)
	if in, _ := p.info(); in.PID != first.PID {
		t.Errorf("pid %d after restart, want %d (re-exec in place)", in.PID, first.PID)
	}
	p.steady(second, time.Second, "after rename")

	// LIFE-03: twenty touches in a row make one restart.
	for i := range 20 {
		now := time.Now().Add(time.Duration(i) * time.Second)
		if err := os.Chtimes(p.bin, now, now); err != nil {
			t.Fatal(err)
		}
	}
	third := p.waitStarted(second, 15*time.Second)
	p.steady(third, 3*time.Second, "after the touch burst")
}

// LIFE-06, LIFE-07: SIGTERM with a request in flight and a short grace:
// the process drains for at most the grace, exits 0; a second SIGTERM (and
// SIGINT) while draining changes nothing.
func TestSIGTERMShortGraceTwice_LIFE06_07(t *testing.T) {
	dir := t.TempDir()
	p := startHTTP(t, dir, nil, "[server]\ngrace = \"1s\"\n")
	// A request in flight: its body never completes.
	c, err := net.Dial("tcp", strings.TrimPrefix(p.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
	if _, err := p.info(); err != nil { // the server has read our request line by now
		t.Fatal(err)
	}
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.exited:
	case <-time.After(8 * time.Second):
		t.Fatalf("still running 8s after SIGTERM with a 1s grace\n%s", fileText(p.stderr))
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d\n%s", code, fileText(p.stderr))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v to stop with a 1s grace", d)
	}
	if n := strings.Count(fileText(p.stderr), "stopping"); n != 1 {
		t.Errorf("%d stop lines, want 1:\n%s", n, fileText(p.stderr))
	}
}

// appSite writes a config whose [app] is a copy of our binary serving its
// info page on {port}, optionally under a shell that floods stderr.
func appSite(t *testing.T, dir, extra string, noisy bool) string {
	appDir := filepath.Join(dir, "app")
	os.MkdirAll(appDir, 0o755)
	app := install(t, appDir, "app.bin")
	cmd := fmt.Sprintf("[%q, \"serve\", \"--http\", \"127.0.0.1:{port}\"]", app)
	if noisy {
		cmd = fmt.Sprintf(`["sh", "-c", "while :; do echo noise noise noise noise >&2; done & exec %s serve --http 127.0.0.1:$0", "{port}"]`, app)
	}
	return fmt.Sprintf("[app]\ncommand = %s\nidle_stop = \"1s\"\nstop_grace = \"1s\"\nruntime_dir = %q\n%s", cmd, filepath.Join(dir, "run"), extra)
}

func alivePID(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] != "Z"
}

// CHILD-04: every copy of mysite.fcgi SIGKILLed (mod_fcgid's last resort)
// leaves no app behind: the supervisor sees no copy alive and stops it.
func TestSIGKILLAllCopiesNoOrphans_CHILD04(t *testing.T) {
	dir := t.TempDir()
	toml := appSite(t, dir, "", false)
	a := startHTTP(t, dir, nil, toml)
	b := startHTTP(t, dir, nil, "")
	var appPID int
	for _, p := range []*proc{a, b} {
		var in infoJSON
		var err error
		for deadline := time.Now().Add(20 * time.Second); ; {
			if in, err = p.info(); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond) // polling until the app is up
		}
		if err != nil {
			t.Fatalf("through copy: %v\n%s", err, fileText(p.stderr))
		}
		if in.PID == a.cmd.Process.Pid || in.PID == b.cmd.Process.Pid {
			t.Fatalf("answered by the copy itself, not the app")
		}
		if appPID != 0 && in.PID != appPID {
			t.Fatalf("two apps: %d and %d", appPID, in.PID)
		}
		appPID = in.PID
	}
	a.cmd.Process.Kill()
	b.cmd.Process.Kill()
	<-a.exited
	<-b.exited
	deadline := time.Now().Add(20 * time.Second)
	for alivePID(appPID) {
		if time.Now().After(deadline) {
			t.Fatalf("app pid %d still alive 20s after every copy was SIGKILLed", appPID)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition
	}
}

// RES-03: disk full for logs. Our stderr (the web server's error log) and
// the app's log file both fail with ENOSPC (/dev/full) while the app floods
// its output; every request is still served.
func TestLogsOnFullDiskKeepServing_RES03(t *testing.T) {
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skip("no /dev/full")
	}
	defer full.Close()
	dir := t.TempDir()
	p := startHTTP(t, dir, full, appSite(t, dir, "log = \"/dev/full\"\n", true))
	var ok, app int
	for i := range 300 {
		in, err := p.info()
		if err != nil {
			if i < 100 { // the app may still be starting
				time.Sleep(50 * time.Millisecond) // polling until the app is up
				continue
			}
			t.Fatalf("request %d: %v", i, err)
		}
		ok++
		if in.PID != p.cmd.Process.Pid {
			app++
		}
	}
	if app < 200 {
		t.Fatalf("only %d of %d requests reached the app", app, ok)
	}
}

// RES-01: accept failing with EMFILE (fd limit reached) backs off and
// recovers: the process survives a connection flood beyond its fd limit
// and serves again once the flood is gone.
func TestEMFILEBacksOff_RES01(t *testing.T) {
	dir := t.TempDir()
	p := startHTTP(t, dir, nil, "", "NOFILE=40")
	var conns []net.Conn
	for range 80 {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(p.url, "http://"), time.Second)
		if err != nil {
			break
		}
		conns = append(conns, c)
	}
	// The server is out of descriptors: requests on the backlog wait.
	for _, c := range conns {
		c.Close()
	}
	for deadline := time.Now().Add(15 * time.Second); ; {
		if _, err := p.info(); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("not serving after the flood: %v\n%s", err, fileText(p.stderr))
		}
		select {
		case <-p.exited:
			t.Fatalf("exited on EMFILE\n%s", fileText(p.stderr))
		case <-time.After(50 * time.Millisecond): // polling a condition
		}
	}
	if log := fileText(p.stderr); !strings.Contains(log, "too many open files") {
		t.Fatalf("the flood did not reach the fd limit; log:\n%s", log)
	}
}

// SOCK-04, SOCK-05: no debug endpoints (pprof, expvar with os.Args), and
// the info page shows no environment, secrets or request credentials.
func TestNoDebugEndpointsNoSecrets_SOCK04_05(t *testing.T) {
	dir := t.TempDir()
	p := startHTTP(t, dir, nil, "", "DB_PASS=hunter2-secret")
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/vars", "/x?a=1"} {
		req, _ := http.NewRequest("GET", p.url+path, nil)
		req.Header.Set("Authorization", "Basic dXNlcjpzM2NyM3Q=")
		req.Header.Set("Cookie", "sessionid=c00kie-value")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, bad := range []string{"hunter2-secret", "DB_PASS", "dXNlcjpzM2NyM3Q", "c00kie-value", `"memstats"`,
			`"cmdline"`, "Types of profiles", "goroutine profile", p.bin, "--http"} {
			if strings.Contains(string(b), bad) {
				t.Errorf("%s shows %q", path, bad)
			}
		}
	}
}
