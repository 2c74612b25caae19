package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/deploy"
	"github.com/fcgishim/fcgishim/internal/peertest"
)

// Each deploy target is checked by its server's own config checker and
// served live: the generated text is used unedited (only flags inject test
// ports and paths), with the real binary as the backend.

// deployOut runs `mysite.fcgi deploy TARGET args…` and returns what it printed.
func deployOut(t *testing.T, target string, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary(t), append([]string{"deploy", target}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("deploy %s %v: %v\n%s", target, args, err, stderr.String())
	}
	return string(out)
}

// deployProc is a process started by a test, stopped (SIGTERM, then SIGKILL) at
// cleanup.
type deployProc struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan error
}

func deployStart(t *testing.T, cmd *exec.Cmd) *deployProc {
	t.Helper()
	p := &deployProc{cmd: cmd, out: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	})
	return p
}

// deployWaitDial polls until network/addr accepts a connection.
func deployWaitDial(t *testing.T, p *deployProc, network, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-p.done:
			t.Fatalf("%v exited: %v\n%s", p.cmd.Args, err, p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s not accepting: %v\n%s", network, addr, err, p.out.String())
		}
		time.Sleep(20 * time.Millisecond) // polling for readiness
	}
}

// startLineRe finds the commands a deploy output tells the reader to run:
// "#   BINARY serve --listen ADDR …" and "#   BINARY runfcgi …" lines.
var startLineRe = regexp.MustCompile(`(?m)^#   ((\S+) (?:serve|runfcgi) .*)$`)

// startAddr is where a printed start command listens: "unix:/path" or
// host:port.
func startAddr(t *testing.T, cmdline string) string {
	t.Helper()
	if m := regexp.MustCompile(`serve --listen '?([^' ]+)`).FindStringSubmatch(cmdline); m != nil {
		return m[1]
	}
	if m := regexp.MustCompile(`runfcgi .*'?socket=([^' ]+)`).FindStringSubmatch(cmdline); m != nil {
		return "unix:" + m[1]
	}
	if m := regexp.MustCompile(`runfcgi .*'?host=([^' ]+)'? port=(\d+)`).FindStringSubmatch(cmdline); m != nil {
		return net.JoinHostPort(m[1], m[2])
	}
	t.Fatalf("no address in %q", cmdline)
	return ""
}

// deployNeedRoot skips unless the test runs as root, which the outputs say
// starts the app server (CI runs as root, so there it fails instead).
func deployNeedRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("the deploy outputs start the app server as root; CI runs as root")
	}
	t.Skip("the deploy outputs start the app server as root")
}

// deployRunPrinted starts every app server that out tells the reader to
// start, exactly as printed: each command line goes to sh, run as root (as
// the output says). The binary a command names is installed first. It
// returns the servers once each listens (for a unix socket that is after
// its owner, group and mode are set: the server listens only then).
func deployRunPrinted(t *testing.T, out string) []*deployProc {
	t.Helper()
	deployNeedRoot(t)
	if !strings.Contains(out, "Start the app server as root") {
		t.Fatalf("the output does not say who starts the app server:\n%s", out)
	}
	ms := startLineRe.FindAllStringSubmatch(out, -1)
	if len(ms) == 0 {
		t.Fatalf("no start command in:\n%s", out)
	}
	var procs []*deployProc
	installed := map[string]bool{}
	for _, m := range ms {
		cmdline, bin, addr := m[1], strings.Trim(m[2], "'"), startAddr(t, m[1])
		if !installed[bin] {
			install(t, filepath.Dir(bin), filepath.Base(bin))
			installed[bin] = true
		}
		p := deployStart(t, exec.Command("sh", "-c", "exec "+cmdline))
		if path, ok := strings.CutPrefix(addr, "unix:"); ok {
			deployWaitDial(t, p, "unix", path)
		} else {
			deployWaitDial(t, p, "tcp", addr)
		}
		procs = append(procs, p)
	}
	return procs
}

// deployWantUser checks that process pid runs as the named user, as the
// output said it would.
func deployWantUser(t *testing.T, pid int, name string) {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("user %s: %v", name, err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$`).FindStringSubmatch(string(b))
	if m == nil || m[1] != u.Uid || m[2] != u.Uid || m[3] != u.Uid {
		t.Errorf("pid %d runs as uids %v, want %s (%s)", pid, m, name, u.Uid)
	}
}

// deployInfo gets the info page at url; host, when set, is the Host
// header. The web server is already listening, so any answer but 200 is a
// failure: a 5xx means the printed configuration does not work as printed.
// Only a connection error is retried (until a deadline).
func deployInfo(t *testing.T, url, host string, logs func() string) infoJSON {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		in, status, err := deployGetInfo(c, url, host)
		if err == nil {
			return in
		}
		if status != 0 || time.Now().After(deadline) {
			t.Fatalf("GET %s (Host %q): %v\n%s", url, host, err, logs())
		}
		time.Sleep(50 * time.Millisecond) // polling for readiness
	}
}

func deployGetInfo(c *http.Client, url, host string) (infoJSON, int, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return infoJSON{}, 0, err
	}
	req.Header.Set("Accept", "application/json")
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return infoJSON{}, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return infoJSON{}, resp.StatusCode, err
	}
	if resp.StatusCode != 200 {
		return infoJSON{}, resp.StatusCode, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	in, err := deployDecode(b)
	return in, resp.StatusCode, err
}

func deployDecode(b []byte) (infoJSON, error) {
	var in infoJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return in, fmt.Errorf("decode %q: %v", b, err)
	}
	return in, nil
}

func deployWant(t *testing.T, what string, in infoJSON, mode, script, pathInfo string) {
	t.Helper()
	if in.Mode != mode || in.ScriptName != script || in.PathInfo != pathInfo {
		t.Errorf("%s: mode=%q script_name=%q path_info=%q; want %q %q %q", what, in.Mode, in.ScriptName, in.PathInfo, mode, script, pathInfo)
	}
}

func TestDeployHtaccessFcgidLive(t *testing.T) {
	root := peertest.Dir(t)
	install(t, root, "mysite.fcgi")
	os.WriteFile(filepath.Join(root, ".htaccess"), []byte(deployOut(t, "htaccess-fcgid")), 0o644)
	sub := filepath.Join(root, "app")
	os.Mkdir(sub, 0o755)
	install(t, sub, "mysite.fcgi")
	os.WriteFile(filepath.Join(sub, ".htaccess"), []byte(deployOut(t, "htaccess-fcgid")), 0o644)
	srv := sharedHost(t, root, "")
	in := deployInfo(t, srv.URL+"/foo/bar?x=1", "", srv.Log)
	deployWant(t, "root", in, "fastcgi-stdin", "", "/foo/bar")
	in = deployInfo(t, srv.URL+"/app/admin/", "", srv.Log)
	deployWant(t, "subdirectory", in, "fastcgi-stdin", "/app", "/admin/")
}

func TestDeployHtaccessCGILive(t *testing.T) {
	root := peertest.Dir(t)
	install(t, root, "mysite.fcgi")
	os.WriteFile(filepath.Join(root, ".htaccess"), []byte(deployOut(t, "htaccess-cgi")), 0o644)
	srv := peertest.Apache(t, []string{"mpm_prefork", "cgi", "rewrite"}, fmt.Sprintf(`
DocumentRoot %[1]s
<Directory %[1]s>
    AllowOverride All
    Require all granted
</Directory>
`, root))
	in := deployInfo(t, srv.URL+"/foo/bar", "", srv.Log)
	deployWant(t, "cgi", in, "cgi", "", "/foo/bar")
}

// modFastCGIHost is a shared host with Apache's original mod_fastcgi
// (built from source: no distribution packages it), .htaccess allowed in
// docroot.
func modFastCGIHost(t *testing.T, docroot string) *peertest.Server {
	t.Helper()
	return peertest.Apache(t, []string{"rewrite"}, peertest.ModFastCGIConf(t)+fmt.Sprintf(`
DocumentRoot %[1]s
<Directory %[1]s>
    AllowOverride All
    Require all granted
</Directory>
`, docroot))
}

// The htaccess-fastcgi output, unedited, under a real mod_fastcgi: a
// dynamic application at the site root and in a subdirectory, with the
// mount prefix derived.
func TestDeployHtaccessFastCGILive(t *testing.T) {
	root := peertest.Dir(t)
	install(t, root, "mysite.fcgi")
	os.WriteFile(filepath.Join(root, ".htaccess"), []byte(deployOut(t, "htaccess-fastcgi")), 0o644)
	sub := filepath.Join(root, "app")
	os.Mkdir(sub, 0o755)
	install(t, sub, "mysite.fcgi")
	os.WriteFile(filepath.Join(sub, ".htaccess"), []byte(deployOut(t, "htaccess-fastcgi")), 0o644)
	srv := modFastCGIHost(t, root)
	in := deployInfo(t, srv.URL+"/foo/bar?x=1", "", srv.Log)
	deployWant(t, "root", in, "fastcgi-stdin", "", "/foo/bar")
	if in.QueryString != "x=1" {
		t.Errorf("query_string %q", in.QueryString)
	}
	in = deployInfo(t, srv.URL+"/app/admin/", "", srv.Log)
	deployWant(t, "subdirectory", in, "fastcgi-stdin", "/app", "/admin/")
}

// touch restarts the program mod_fastcgi runs while 8 clients keep
// requesting: every request is answered, and after each of three touches a
// process that answered before answers with a new start time (restarted in
// place; a copy mod_fastcgi adds has a new pid, and does not count).
func TestDeployHtaccessFastCGITouchUnderLoad(t *testing.T) {
	root := peertest.Dir(t)
	bin := install(t, root, "mysite.fcgi")
	os.WriteFile(filepath.Join(root, ".htaccess"), []byte(deployOut(t, "htaccess-fastcgi")), 0o644)
	srv := modFastCGIHost(t, root)
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	first := deployInfo(t, srv.URL+"/warmup", "", srv.Log)

	const clients = 8
	var mu sync.Mutex
	started := map[int]string{first.PID: first.Started} // by pid: the latest start time
	restarts := 0
	newStart := make(chan struct{}, 1)
	stop := make(chan struct{})
	errs := make(chan error, clients)
	counts := make([]int, clients)
	for w := 0; w < clients; w++ {
		go func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				in, status, err := deployGetInfo(c, fmt.Sprintf("%s/load/%d/%d", srv.URL, w, i), "")
				if err != nil {
					errs <- fmt.Errorf("client %d request %d: status %d: %v", w, i, status, err)
					return
				}
				counts[w]++
				mu.Lock()
				if prev, ok := started[in.PID]; ok && prev != in.Started {
					restarts++
					select {
					case newStart <- struct{}{}:
					default:
					}
				}
				started[in.PID] = in.Started
				mu.Unlock()
			}
		}()
	}
	deadline := time.After(60 * time.Second)
	for touch := 1; touch <= 3; touch++ {
		mu.Lock()
		before := restarts
		mu.Unlock()
		now := time.Now()
		if err := os.Chtimes(bin, now, now); err != nil {
			t.Fatal(err)
		}
		for waiting := true; waiting; {
			select {
			case <-newStart:
				mu.Lock()
				waiting = restarts <= before
				mu.Unlock()
			case err := <-errs:
				close(stop)
				t.Fatalf("after touch %d: %v\n%s", touch, err, srv.Log())
			case <-deadline:
				close(stop)
				t.Fatalf("touch %d: no new program within 60s\n%s", touch, srv.Log())
			}
		}
	}
	close(stop)
	for w := 0; w < clients; w++ {
		if err := <-errs; err != nil {
			t.Fatalf("%v\n%s", err, srv.Log())
		}
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	t.Logf("%d requests from %d clients across 3 touches, none failed", total, clients)
}

func TestDeployApacheFcgidLive(t *testing.T) {
	for _, prefix := range []string{"", "/blog"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			dir := peertest.Dir(t)
			install(t, dir, "mysite.fcgi")
			port := peertest.FreePort(t)
			conf := deployOut(t, "apache-fcgid", "--dir", dir, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--prefix", prefix)
			srv := peertest.Apache(t, []string{"fcgid", "alias"}, fmt.Sprintf("Listen 127.0.0.1:%d\nFcgidIPCDir {{DIR}}/fcgid\nFcgidProcessTableFile {{DIR}}/fcgid_shm\n%s", port, conf))
			url := fmt.Sprintf("http://127.0.0.1:%d%s/x/y", port, prefix)
			in := deployInfo(t, url, "", srv.Log)
			deployWant(t, url, in, "fastcgi-stdin", prefix, "/x/y")
			// FcgidMaxRequestLen 1 GiB: a 1 MiB upload passes (128 KiB is the default).
			body := make([]byte, 1<<20)
			in, _, err := getInfo(&http.Client{Timeout: 20 * time.Second}, "POST", url, bytesReader(body))
			if err != nil || in.BodyBytes != int64(len(body)) {
				t.Errorf("POST 1 MiB: body_bytes=%d err=%v\n%s", in.BodyBytes, err, srv.Log())
			}
		})
	}
}

// The external-server targets below are followed literally: the app
// server is started by the printed command, as root as the output says,
// and the web server runs as its Debian user (www-data; caddy), so a
// socket it may not use fails the test with a 502/503.

func TestDeployApacheProxyFcgiLive(t *testing.T) {
	for _, prefix := range []string{"", "/blog"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			dir := peertest.Dir(t)
			port := peertest.FreePort(t)
			conf := deployOut(t, "apache-proxy-fcgi", "--dir", dir, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--prefix", prefix)
			be := deployRunPrinted(t, conf)[0]
			srv := peertest.Apache(t, []string{"proxy", "proxy_fcgi", "alias"}, fmt.Sprintf("Listen 127.0.0.1:%d\n%s", port, conf))
			url := fmt.Sprintf("http://127.0.0.1:%d%s/x/y", port, prefix)
			in := deployInfo(t, url, "", func() string { return srv.Log() + be.out.String() })
			deployWant(t, url, in, "external", prefix, "/x/y")
			if in.PID != be.cmd.Process.Pid {
				t.Errorf("pid %d, want the backend's %d", in.PID, be.cmd.Process.Pid)
			}
			deployWantUser(t, in.PID, "www-data")
		})
	}
}

// Django's recipe: Apache + mod_fastcgi's FastCGIExternalServer +
// mod_rewrite in front of runfcgi, started by the printed command.
func TestDeployApacheFastCGIExternalLive(t *testing.T) {
	for _, prefix := range []string{"", "/blog"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			dir := peertest.Dir(t)
			port := peertest.FreePort(t)
			conf := deployOut(t, "apache-fastcgi-external", "--dir", dir, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--prefix", prefix)
			be := deployRunPrinted(t, conf)[0]
			if !strings.Contains(be.cmd.Args[2], " runfcgi ") {
				t.Fatalf("the printed command is not runfcgi: %v", be.cmd.Args)
			}
			srv := peertest.Apache(t, []string{"rewrite", "alias"}, peertest.ModFastCGIConf(t)+fmt.Sprintf("Listen 127.0.0.1:%d\n%s", port, conf))
			url := fmt.Sprintf("http://127.0.0.1:%d%s/x/y?q=1", port, prefix)
			in := deployInfo(t, url, "", func() string { return srv.Log() + be.out.String() })
			deployWant(t, url, in, "external", prefix, "/x/y")
			if in.PID != be.cmd.Process.Pid || in.QueryString != "q=1" {
				t.Errorf("pid %d query %q, want the runfcgi server's %d and q=1", in.PID, in.QueryString, be.cmd.Process.Pid)
			}
			deployWantUser(t, in.PID, "www-data")
		})
	}
}

func TestDeployLighttpdLive(t *testing.T) {
	dir := peertest.Dir(t)
	conf := deployOut(t, "lighttpd", "--dir", dir)
	be := deployRunPrinted(t, conf)[0]
	srv := peertest.LighttpdAs(t, "www-data", conf)
	in := deployInfo(t, srv.URL+"/x/y", "", func() string { return srv.Log() + be.out.String() })
	deployWant(t, "lighttpd", in, "external", "", "/x/y")
	deployWantUser(t, in.PID, "www-data")
}

// Several sites on one lighttpd, chosen by $HTTP["host"] as in the guide,
// each app server running as another user than the web server's: the
// socket reaches lighttpd through its group alone.
func TestDeployLighttpdSitesLive(t *testing.T) {
	a, b := peertest.Dir(t), peertest.Dir(t)
	conf := deployOut(t, "lighttpd", "--user", "nobody", "--sites", "www.example1.com="+a+",www.example2.com="+b)
	bes := deployRunPrinted(t, conf)
	if len(bes) != 2 {
		t.Fatalf("%d start commands, want one per site:\n%s", len(bes), conf)
	}
	srv := peertest.LighttpdAs(t, "www-data", conf)
	for host, be := range map[string]*deployProc{"www.example1.com": bes[0], "www.example2.com": bes[1]} {
		in := deployInfo(t, srv.URL+"/x", host, srv.Log)
		deployWant(t, host, in, "external", "", "/x")
		if in.PID != be.cmd.Process.Pid {
			t.Errorf("%s: served by pid %d, want %d", host, in.PID, be.cmd.Process.Pid)
		}
		deployWantUser(t, in.PID, "nobody")
	}
}

func TestDeployNginxLive(t *testing.T) {
	for _, tc := range []struct{ prefix, user string }{{"", "www-data"}, {"/blog", "nobody"}} {
		t.Run("prefix="+tc.prefix, func(t *testing.T) {
			dir := peertest.Dir(t)
			port := peertest.FreePort(t)
			conf := deployOut(t, "nginx", "--dir", dir, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--prefix", tc.prefix, "--user", tc.user)
			be := deployRunPrinted(t, conf)[0]
			srv := peertest.NginxAs(t, "www-data", conf, "return 404;") // the harness's own server is unused
			url := fmt.Sprintf("http://127.0.0.1:%d%s/x/y?q=1", port, tc.prefix)
			in := deployInfo(t, url, "", func() string { return srv.Log() + be.out.String() })
			deployWant(t, url, in, "external", tc.prefix, "/x/y")
			if in.QueryString != "q=1" {
				t.Errorf("query_string %q", in.QueryString)
			}
			deployWantUser(t, in.PID, tc.user)
			// Started as root, running as the user: touching the binary
			// still restarts it in place, on the same socket, as that user.
			bin := strings.Trim(startLineRe.FindStringSubmatch(conf)[2], "'")
			now := time.Now()
			if err := os.Chtimes(bin, now, now); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(20 * time.Second)
			for again := in; again.Started == in.Started; {
				if time.Now().After(deadline) {
					t.Fatalf("no restart within 20s of touch\n%s", be.out.String())
				}
				time.Sleep(20 * time.Millisecond) // polling for the restart
				again = deployInfo(t, url, "", func() string { return srv.Log() + be.out.String() })
				if again.PID != in.PID {
					t.Fatalf("restart changed the pid %d → %d", in.PID, again.PID)
				}
			}
			deployWantUser(t, in.PID, tc.user)
		})
	}
}

// Caddy runs as Debian's caddy user, which the package puts in group
// www-data.
func TestDeployCaddyLive(t *testing.T) {
	caddy := peertest.Need(t, "caddy")[0]
	deployNeedRoot(t)
	cu, err := user.Lookup("caddy")
	if err != nil {
		t.Fatalf("Debian's caddy package creates the caddy user: %v", err)
	}
	dir := peertest.Dir(t)
	port := peertest.FreePort(t)
	conf := deployOut(t, "caddy", "--dir", dir, "--listen", fmt.Sprintf("127.0.0.1:%d", port))
	be := deployRunPrinted(t, conf)[0]
	cdir := t.TempDir()
	file := filepath.Join(cdir, "Caddyfile")
	os.WriteFile(file, []byte(conf), 0o644)
	cred := deployCredential(t, cu)
	if err := os.Chown(cdir, int(cred.Uid), int(cred.Gid)); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "HOME="+cdir, "XDG_DATA_HOME="+cdir, "XDG_CONFIG_HOME="+cdir)
	v := exec.Command(caddy, "validate", "--config", file, "--adapter", "caddyfile")
	v.Env = env
	if out, err := v.CombinedOutput(); err != nil {
		t.Fatalf("caddy validate: %v\n%s\n%s", err, out, conf)
	}
	run := exec.Command(caddy, "run", "--config", file, "--adapter", "caddyfile")
	run.Env = env
	run.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cp := deployStart(t, run)
	deployWaitDial(t, cp, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	in := deployInfo(t, fmt.Sprintf("http://127.0.0.1:%d/x/y", port), "", func() string { return cp.out.String() + be.out.String() })
	deployWant(t, "caddy", in, "external", "", "/x/y")
	deployWantUser(t, in.PID, "www-data")
}

// deployCredential is u's identity with its supplementary groups, for
// running a web server as u.
func deployCredential(t *testing.T, u *user.User) *syscall.Credential {
	t.Helper()
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	gids, err := u.GroupIds()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gids {
		n, _ := strconv.Atoi(g)
		cred.Groups = append(cred.Groups, uint32(n))
	}
	return cred
}

// HAProxy's fcgi-app over two backends, each started by its printed
// command: both answer.
func TestDeployHAProxyLive(t *testing.T) {
	haproxy := peertest.Need(t, "haproxy")[0]
	dir := peertest.Dir(t)
	addrs := []string{fmt.Sprintf("127.0.0.1:%d", peertest.FreePort(t)), fmt.Sprintf("127.0.0.1:%d", peertest.FreePort(t))}
	port := peertest.FreePort(t)
	conf := deployOut(t, "haproxy", "--dir", dir, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--backends", strings.Join(addrs, ","))
	pids := map[int]bool{}
	for _, be := range deployRunPrinted(t, conf) {
		pids[be.cmd.Process.Pid] = true
	}
	if len(pids) != 2 {
		t.Fatalf("%d start commands, want one per backend:\n%s", len(pids), conf)
	}
	file := filepath.Join(t.TempDir(), "haproxy.cfg")
	os.WriteFile(file, []byte(conf), 0o644)
	if out, err := exec.Command(haproxy, "-c", "-f", file).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s\n%s", err, out, conf)
	}
	hp := deployStart(t, exec.Command(haproxy, "-db", "-f", file))
	deployWaitDial(t, hp, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	seen := map[int]bool{}
	for i := 0; i < 20 && len(seen) < 2; i++ {
		in := deployInfo(t, fmt.Sprintf("http://127.0.0.1:%d/x/y", port), "", hp.out.String)
		deployWant(t, "haproxy", in, "external", "", "/x/y")
		if !pids[in.PID] {
			t.Fatalf("pid %d is not a backend (%v)", in.PID, pids)
		}
		seen[in.PID] = true
	}
	if len(seen) != 2 {
		t.Errorf("requests reached %d of 2 backends", len(seen))
	}
}

// deploySplitUnits cuts the systemd target's output at its "# ---- path ----"
// headers.
func deploySplitUnits(t *testing.T, out string) map[string]string {
	t.Helper()
	files := map[string]string{}
	re := regexp.MustCompile(`(?m)^# ---- (\S+) ----\n`)
	locs := re.FindAllStringSubmatchIndex(out, -1)
	for i, l := range locs {
		end := len(out)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		files[filepath.Base(out[l[2]:l[3]])] = out[l[1]:end]
	}
	if len(files) != 2 {
		t.Fatalf("want 2 unit files, got %d:\n%s", len(files), out)
	}
	return files
}

// The units pass systemd-analyze verify; the service's ExecStart, given a
// socket the way systemd passes it (systemd-socket-activate), serves it.
func TestDeploySystemdUnits(t *testing.T) {
	dir := peertest.Dir(t)
	bin := install(t, dir, "mysite.fcgi")
	out := deployOut(t, "systemd", "--dir", dir, "--user", "root")
	units := deploySplitUnits(t, out)
	udir := t.TempDir()
	for name, text := range units {
		if err := os.WriteFile(filepath.Join(udir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tools := peertest.Need(t, "systemd-analyze", "systemd-socket-activate")
	analyze, activate := tools[0], tools[1]
	verify := exec.Command(analyze, "verify", filepath.Join(udir, "mysite.socket"), filepath.Join(udir, "mysite.service"))
	if out, err := verify.CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	exec0 := regexp.MustCompile(`(?m)^ExecStart=(.*)$`).FindStringSubmatch(units["mysite.service"])
	listen := regexp.MustCompile(`(?m)^ListenStream=(.*)$`).FindStringSubmatch(units["mysite.socket"])
	if exec0 == nil || listen == nil || strings.Fields(exec0[1])[0] != bin {
		t.Fatalf("ExecStart/ListenStream missing or wrong:\n%s", out)
	}
	p := deployStart(t, exec.Command(activate, append([]string{"-l", listen[1]}, strings.Fields(exec0[1])...)...))
	deployWaitDial(t, p, "unix", listen[1])
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := deploy.FastCGIGet(ctx, "unix", listen[1], "/x", http.Header{"Accept": {"application/json"}})
	if err != nil {
		t.Fatalf("FastCGI GET via the activated socket: %v\n%s", err, p.out.String())
	}
	in, err := deployDecode(resp.Body)
	if err != nil || in.Mode != "socket-activation" || in.Protocol != "fastcgi" {
		t.Errorf("status %d mode=%q protocol=%q err=%v\n%s", resp.Status, in.Mode, in.Protocol, err, p.out.String())
	}
}

// The init script starts a runfcgi daemon with a pidfile, reports its
// status, serves through it, and stops it.
func TestDeployInitScript(t *testing.T) {
	sh := peertest.Need(t, "sh")[0]
	dir := peertest.Dir(t)
	install(t, dir, "mysite.fcgi")
	script := filepath.Join(dir, "mysite-init")
	os.WriteFile(script, []byte(deployOut(t, "init-script", "--dir", dir)), 0o755)
	run := func(arg string) (string, error) {
		cmd := exec.Command(sh, script, arg)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	pidfile := filepath.Join(dir, "mysite.pid")
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidfile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	if out, err := run("status"); err == nil || !strings.Contains(out, "not running") {
		t.Errorf("status before start: %v %q", err, out)
	}
	if out, err := run("start"); err != nil {
		t.Fatalf("start: %v\n%s", err, out)
	}
	sock := filepath.Join(dir, "mysite.sock")
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket after start: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // polling for readiness
	}
	if out, err := run("status"); err != nil || !strings.Contains(out, "is running") {
		t.Errorf("status after start: %v %q", err, out)
	}
	// The web server's group (www-data) may connect.
	if fi, err := os.Lstat(sock); err != nil {
		t.Error(err)
	} else if g, err := user.LookupGroupId(strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Gid))); err != nil || g.Name != "www-data" || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket group %v (%v) mode %04o; want www-data 0660", g, err, fi.Mode().Perm())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := deploy.FastCGIGet(ctx, "unix", sock, "/x", http.Header{"Accept": {"application/json"}})
	if err != nil {
		t.Fatal(err)
	}
	if in, err := deployDecode(resp.Body); err != nil || in.Mode != "external" {
		t.Errorf("mode %q err %v", in.Mode, err)
	}
	if out, err := run("start"); err != nil || !strings.Contains(out, "already running") {
		t.Errorf("second start: %v %q", err, out)
	}
	if out, err := run("stop"); err != nil {
		t.Fatalf("stop: %v\n%s", err, out)
	}
	if out, err := run("status"); err == nil || !strings.Contains(out, "not running") {
		t.Errorf("status after stop: %v %q", err, out)
	}
}
