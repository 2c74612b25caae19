package peertest

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Need skips t unless every program is on PATH (or in /usr/sbin); in CI
// (CI=true) a missing program fails the test instead. It returns the paths.
func Need(t testing.TB, programs ...string) []string {
	t.Helper()
	var paths []string
	for _, p := range programs {
		path, err := exec.LookPath(p)
		if err != nil {
			if _, serr := os.Stat("/usr/sbin/" + p); serr == nil {
				path, err = "/usr/sbin/"+p, nil
			}
		}
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is required in CI but not installed: %v", p, err)
			}
			t.Skipf("%s not installed", p)
		}
		paths = append(paths, path)
	}
	return paths
}

// Dir returns a fresh temporary directory that the web servers' unprivileged
// users (www-data, nobody) can traverse and read: every parent is 0755.
func Dir(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	for p := d; p != "/" && p != "."; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o005 != 0o005 {
			if err := os.Chmod(p, fi.Mode().Perm()|0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	return d
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Server is a running web server.
type Server struct {
	URL      string // http://127.0.0.1:PORT
	Port     int
	Dir      string // its private directory (config, logs, pid)
	ErrorLog string // path of its error log
	stop     func() error
}

// Stop stops the server and waits for it to exit. Safe to call twice.
func (s *Server) Stop() error {
	if s.stop == nil {
		return nil
	}
	f := s.stop
	s.stop = nil
	return f()
}

// Log returns the error log's contents (for failure messages).
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.ErrorLog)
	return string(b)
}

func start(t testing.TB, s *Server, cmd *exec.Cmd, stopSig syscall.Signal) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	s.stop = func() error {
		_ = syscall.Kill(-cmd.Process.Pid, stopSig)
		select {
		case err := <-done:
			return err
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			return <-done
		}
	}
	t.Cleanup(func() { _ = s.Stop() })
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-done:
			done <- err // for the cleanup's Stop, which waits for it
			t.Fatalf("%s exited at start: %v\n%s\n%s", cmd.Path, err, out.String(), s.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %d: %v\n%s\n%s", cmd.Path, s.Port, err, out.String(), s.Log())
		}
		time.Sleep(20 * time.Millisecond) // polling for readiness, not synchronising on time
	}
}

// Nginx starts nginx with server block body (everything inside `server {}`
// except `listen`) plus http-level lines in httpLevel. "{{DIR}}" in either
// is replaced with the server's directory. Its workers run as root.
func Nginx(t testing.TB, httpLevel, body string) *Server {
	t.Helper()
	return NginxAs(t, "root", httpLevel, body)
}

// NginxAs is Nginx with its workers running as user, as Debian's nginx
// runs them as www-data: a backend socket must then be reachable by that
// user.
func NginxAs(t testing.TB, user, httpLevel, body string) *Server {
	t.Helper()
	bin := Need(t, "nginx")[0]
	s := &Server{Dir: Dir(t), Port: FreePort(t)}
	s.URL = fmt.Sprintf("http://127.0.0.1:%d", s.Port)
	s.ErrorLog = filepath.Join(s.Dir, "error.log")
	for _, d := range []string{"body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		os.MkdirAll(filepath.Join(s.Dir, "tmp", d), 0o777)
	}
	r := strings.NewReplacer("{{DIR}}", s.Dir)
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
user %[5]s;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %[1]s/tmp/body;
    proxy_temp_path %[1]s/tmp/proxy;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;
    client_max_body_size 0;
    %[3]s
    server {
        listen 127.0.0.1:%[2]d;
        %[4]s
    }
}
`, s.Dir, s.Port, r.Replace(httpLevel), r.Replace(body), user)
	path := filepath.Join(s.Dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-t", "-c", path).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s\n%s", err, out, conf)
	}
	start(t, s, exec.Command(bin, "-c", path), syscall.SIGTERM)
	return s
}

// ApacheModules is the base set every test Apache loads.
var apacheBase = []string{"mpm_event", "authz_core", "unixd", "mime", "dir", "alias", "log_config"}

// Apache starts Apache httpd in the foreground with the given extra modules
// (names as in mod_NAME.so) and config lines. Children run as www-data.
// "{{DIR}}" in conf is replaced with the server's directory.
func Apache(t testing.TB, modules []string, conf string) *Server {
	t.Helper()
	bin := Need(t, "apache2")[0]
	s := &Server{Dir: Dir(t), Port: FreePort(t)}
	s.URL = fmt.Sprintf("http://127.0.0.1:%d", s.Port)
	s.ErrorLog = filepath.Join(s.Dir, "error.log")
	var b strings.Builder
	seen := map[string]bool{}
	for _, m := range append(append([]string{}, apacheBase...), modules...) {
		if seen[m] {
			continue
		}
		seen[m] = true
		if _, err := os.Stat("/usr/lib/apache2/modules/mod_" + m + ".so"); err != nil {
			continue // built in (unixd, so, …)
		}
		if m == "mpm_prefork" {
			// replaces mpm_event
			continue
		}
		fmt.Fprintf(&b, "LoadModule %s_module /usr/lib/apache2/modules/mod_%s.so\n", m, m)
	}
	mods := b.String()
	if seen["mpm_prefork"] {
		mods = strings.Replace(mods, "LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so",
			"LoadModule mpm_prefork_module /usr/lib/apache2/modules/mod_mpm_prefork.so", 1)
	}
	full := fmt.Sprintf(`ServerRoot %[1]s
%[3]s
Listen 127.0.0.1:%[2]d
ServerName 127.0.0.1
User www-data
Group www-data
PidFile %[1]s/httpd.pid
ErrorLog %[1]s/error.log
LogLevel warn
Mutex file:%[1]s
DefaultRuntimeDir %[1]s
TypesConfig /etc/mime.types
%[4]s
`, s.Dir, s.Port, mods, strings.ReplaceAll(conf, "{{DIR}}", s.Dir))
	path := filepath.Join(s.Dir, "httpd.conf")
	if err := os.WriteFile(path, []byte(full), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-t", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("apache2 -t: %v\n%s\n%s", err, out, full)
	}
	start(t, s, exec.Command(bin, "-f", path, "-DFOREGROUND"), syscall.SIGWINCH)
	return s
}

// Lighttpd starts lighttpd in the foreground with the given config lines
// (modules included by the caller via server.modules += (...)), as root.
func Lighttpd(t testing.TB, conf string) *Server {
	t.Helper()
	return LighttpdAs(t, "", conf)
}

// LighttpdAs is Lighttpd switching to user (and that user's group) after
// start, as Debian's lighttpd runs as www-data; "" stays root.
func LighttpdAs(t testing.TB, user, conf string) *Server {
	t.Helper()
	if user != "" {
		conf = fmt.Sprintf("server.username = %q\nserver.groupname = %q\n", user, user) + conf
	}
	bin := Need(t, "lighttpd")[0]
	s := &Server{Dir: Dir(t), Port: FreePort(t)}
	s.URL = fmt.Sprintf("http://127.0.0.1:%d", s.Port)
	s.ErrorLog = filepath.Join(s.Dir, "error.log")
	os.MkdirAll(filepath.Join(s.Dir, "docroot"), 0o755)
	full := fmt.Sprintf(`server.bind = "127.0.0.1"
server.port = %[2]d
server.document-root = "%[1]s/docroot"
server.errorlog = "%[1]s/error.log"
server.pid-file = "%[1]s/lighttpd.pid"
server.upload-dirs = ( "%[1]s" )
%[3]s
`, s.Dir, s.Port, strings.ReplaceAll(conf, "{{DIR}}", s.Dir))
	path := filepath.Join(s.Dir, "lighttpd.conf")
	if err := os.WriteFile(path, []byte(full), 0o644); err != nil {
		t.Fatal(err)
	}
	if user != "" {
		// lighttpd opens its logs and uploads after switching user.
		chownToUser(t, user, s.Dir)
	}
	if out, err := exec.Command(bin, "-tt", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("lighttpd -tt: %v\n%s\n%s", err, out, full)
	}
	start(t, s, exec.Command(bin, "-D", "-f", path), syscall.SIGTERM)
	return s
}

// chownToUser gives path to the named user and that user's group.
func chownToUser(t testing.TB, name, path string) {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// Get fetches url and returns status and body, failing t on transport errors.
func Get(t testing.TB, c *http.Client, url string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, buf.String()
}
