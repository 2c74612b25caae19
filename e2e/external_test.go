package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// startExternal runs `mysite.fcgi args...` in the foreground until the test
// ends, and waits until addr accepts connections.
func startExternal(t *testing.T, dir string, network, addr string, args ...string) *exec.Cmd {
	t.Helper()
	bin := install(t, dir, "mysite.fcgi")
	cmd := exec.Command(bin, args...)
	// A file, not a pipe: the app supervisor it may start inherits stderr
	// and outlives it by design, which would keep Wait waiting on a pipe.
	stderr, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = stderr
	exited := startUntilCleanup(t, cmd, func() {
		t.Errorf("mysite.fcgi did not stop on SIGTERM within 10s\n%s", fileText(stderr.Name()))
	})
	waitDial(t, network, addr, exited, stderr.Name())
	return cmd
}

// startUntilCleanup starts cmd and, when t ends, stops it with SIGTERM,
// then SIGKILL after 10 s (calling onKill, if set, once it is gone). The
// channel is closed when cmd has exited.
func startUntilCleanup(t *testing.T, cmd *exec.Cmd, onKill func()) <-chan struct{} {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
			if onKill != nil {
				onKill()
			}
		}
	})
	return exited
}

func fileText(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func waitDial(t *testing.T, network, addr string, exited <-chan struct{}, logPath string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.Dial(network, addr)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("exited before listening: %s", fileText(logPath))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s not listening: %v\n%s", network, addr, err, fileText(logPath))
		}
		time.Sleep(20 * time.Millisecond) // polling for readiness
	}
}

// nginx with fastcgi_keep_conn and an upstream keepalive pool, under
// concurrent load: every response must be its own request's.
func TestNginxFastCGIKeepConnUnderLoad(t *testing.T) {
	dir := peertest.Dir(t)
	sock := filepath.Join(dir, "mysite.sock")
	startExternal(t, dir, "unix", sock, "runfcgi", "protocol=fcgi", "socket="+sock, "daemonize=false", "method=threaded")
	srv := peertest.Nginx(t, fmt.Sprintf(`upstream app { server unix:%s; keepalive 8; }`, sock), `
        location / {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_NAME "";
            fastcgi_param PATH_INFO $uri;
            fastcgi_pass app;
            fastcgi_keep_conn on;
        }`)
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	sem := make(chan struct{}, 16)
	for i := 0; i < 400; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			path := fmt.Sprintf("/req/%d", i)
			in, _, err := getInfo(c, "GET", srv.URL+path+fmt.Sprintf("?n=%d", i), nil)
			switch {
			case err != nil:
				errs <- fmt.Errorf("%s: %v", path, err)
			case in.PathInfo != path || in.QueryString != fmt.Sprintf("n=%d", i) || in.Mode != "external":
				errs <- fmt.Errorf("%s got someone else's answer: %+v", path, in)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.Log(srv.Log())
	}
}

// Django's daemon lifecycle: runfcgi daemonizes, writes the pidfile after
// detaching, creates the socket with the umask's mode; `stop pidfile=`
// drains and waits; the pidfile and socket are gone afterwards.
func TestRunfcgiDaemonLifecycle(t *testing.T) {
	dir := peertest.Dir(t)
	bin := install(t, dir, "mysite.fcgi")
	sock := filepath.Join(dir, "mysite.sock")
	pidfile := filepath.Join(dir, "django.pid")
	errlog := filepath.Join(dir, "err.log")
	out, err := exec.Command(bin, "runfcgi", "method=threaded", "socket="+sock, "pidfile="+pidfile,
		"umask=0002", "errlog="+errlog, "workdir="+dir).CombinedOutput()
	if err != nil {
		t.Fatalf("runfcgi: %v\n%s", err, out)
	}
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatalf("pidfile not written before runfcgi returned: %v", err)
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	if pid <= 1 || syscall.Kill(pid, 0) != nil {
		t.Fatalf("pidfile names %q, not a live process", b)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if sid, _ := syscall.Getpgid(pid); sid != pid {
		t.Errorf("daemon is not its own process group leader (setsid): pgid %d pid %d", sid, pid)
	}
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o775 {
		t.Errorf("umask=0002 gave socket mode %o, want 775", fi.Mode().Perm())
	}
	srv := peertest.Nginx(t, "", fmt.Sprintf(`location / { include /etc/nginx/fastcgi_params; fastcgi_pass unix:%s; }`, sock))
	c := &http.Client{Timeout: 10 * time.Second}
	in, _, err := getInfo(c, "GET", srv.URL+"/hello", nil)
	if err != nil || in.PID != pid {
		t.Fatalf("through nginx: %+v %v", in, err)
	}
	if out, err := exec.Command(bin, "stop", "pidfile="+pidfile).CombinedOutput(); err != nil {
		t.Fatalf("stop: %v\n%s", err, out)
	}
	if syscall.Kill(pid, 0) == nil {
		t.Fatal("daemon still running after stop returned")
	}
	for _, p := range []string{pidfile, sock} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left behind after stop", p)
		}
	}
}

// A restart (SIGHUP) re-executes the server with its own command line, so
// it keeps every runfcgi option: here the protocol (SCGI) and maxchildren.
func TestRestartKeepsRunfcgiOptions(t *testing.T) {
	dir := peertest.Dir(t)
	sock := filepath.Join(dir, "mysite.sock")
	cmd := startExternal(t, dir, "unix", sock, "runfcgi", "protocol=scgi", "socket="+sock, "daemonize=false",
		"method=threaded", "maxchildren=3")
	srv := peertest.Nginx(t, "", fmt.Sprintf(`location / { include /etc/nginx/scgi_params; scgi_pass unix:%s; }`, sock))
	c := &http.Client{Timeout: 10 * time.Second}
	before, _, err := getInfo(c, "GET", srv.URL+"/a", nil)
	if err != nil || before.Protocol != "scgi" {
		t.Fatalf("before: %+v %v", before, err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(15 * time.Second)
	for {
		after, _, err := getInfo(c, "GET", srv.URL+"/b", nil)
		if err != nil {
			t.Fatalf("during restart: %v\n%s", err, srv.Log())
		}
		if after.Started != before.Started {
			if after.Protocol != "scgi" || after.PID != before.PID {
				t.Fatalf("after restart: %+v", after)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no restart within 15s of SIGHUP")
		}
	}
}
