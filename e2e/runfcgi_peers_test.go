package e2e

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/fcgi"
	"github.com/fcgishim/fcgishim/internal/peertest"
)

// checkInfo fetches path and checks the info page's view of it.
func checkInfo(t *testing.T, c *http.Client, base, path, mode string) infoJSON {
	t.Helper()
	in, _, err := getInfo(c, "GET", base+path+"?q=1", nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	if in.ScriptName+in.PathInfo != path || in.QueryString != "q=1" || in.Mode != mode || in.Protocol != "fastcgi" || in.Method != "GET" {
		t.Errorf("GET %s: script_name=%q path_info=%q query=%q mode=%q protocol=%q method=%q; want the path split, q=1, %s, fastcgi, GET",
			path, in.ScriptName, in.PathInfo, in.QueryString, in.Mode, in.Protocol, in.Method, mode)
	}
	return in
}

// The guide's lighttpd section: fastcgi.server with "socket", with
// "host"+"port" and check-local disabled, each for a runfcgi server the
// test starts, and with "bin-path", where lighttpd spawns mysite.fcgi itself
// (max-procs 2) and it detects fd 0 as its listening socket.
func TestLighttpdRunfcgi(t *testing.T) {
	peertest.Need(t, "lighttpd")
	c := &http.Client{Timeout: 20 * time.Second}
	// The guide's rewrite: everything but media goes to /mysite.fcgi.
	const rewrite = `url.rewrite-once = ( "^(/media.*)$" => "$1", "^(/.*)$" => "/mysite.fcgi$1" )`

	t.Run("socket", func(t *testing.T) {
		dir := peertest.Dir(t)
		sock := filepath.Join(dir, "mysite.sock")
		cmd := startExternal(t, dir, "unix", sock, "runfcgi", "method=threaded", "socket="+sock, "daemonize=false")
		srv := peertest.Lighttpd(t, fmt.Sprintf(`server.modules += ( "mod_rewrite", "mod_fastcgi" )
fastcgi.server = ( "/mysite.fcgi" => ( "main" => ( "socket" => "%s", "check-local" => "disable" ) ) )
%s`, sock, rewrite))
		in := checkInfo(t, c, srv.URL, "/admin/login/", "external")
		if in.PID != cmd.Process.Pid {
			t.Errorf("pid %d, want the runfcgi server's %d", in.PID, cmd.Process.Pid)
		}
	})
	t.Run("host+port", func(t *testing.T) {
		dir := peertest.Dir(t)
		port := peertest.FreePort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		cmd := startExternal(t, dir, "tcp", addr, "runfcgi", "method=prefork", "host=127.0.0.1", fmt.Sprintf("port=%d", port), "daemonize=false")
		srv := peertest.Lighttpd(t, fmt.Sprintf(`server.modules += ( "mod_rewrite", "mod_fastcgi" )
fastcgi.server = ( "/mysite.fcgi" => ( "main" => ( "host" => "127.0.0.1", "port" => %d, "check-local" => "disable" ) ) )
%s`, port, rewrite))
		in := checkInfo(t, c, srv.URL, "/foo/bar", "external")
		if !contains(peertest.Children(cmd.Process.Pid), in.PID) {
			t.Errorf("pid %d is not one of the prefork workers %v", in.PID, peertest.Children(cmd.Process.Pid))
		}
	})
	t.Run("bin-path", func(t *testing.T) {
		dir := peertest.Dir(t)
		bin := install(t, dir, "mysite.fcgi")
		srv := peertest.Lighttpd(t, fmt.Sprintf(`server.modules += ( "mod_rewrite", "mod_fastcgi" )
fastcgi.server = ( "/mysite.fcgi" => ( "main" => ( "bin-path" => "%s", "socket" => "{{DIR}}/fcgi.sock", "max-procs" => 2, "check-local" => "disable" ) ) )
%s`, bin, rewrite))
		in := checkInfo(t, c, srv.URL, "/x/y", "fastcgi-stdin")
		// lighttpd started max-procs copies, all ours.
		lpid := lighttpdPID(t, srv)
		peertest.Eventually(t, 10*time.Second, "2 mysite.fcgi processes under lighttpd", func() bool { return len(peertest.Children(lpid)) == 2 })
		for _, p := range peertest.Children(lpid) {
			exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", p))
			if exe != bin {
				t.Errorf("lighttpd child %d runs %s, want %s", p, exe, bin)
			}
		}
		if !contains(peertest.Children(lpid), in.PID) {
			t.Errorf("answered by pid %d, not one of lighttpd's children %v", in.PID, peertest.Children(lpid))
		}
	})
}

func lighttpdPID(t *testing.T, srv *peertest.Server) int {
	t.Helper()
	var pid int
	peertest.Eventually(t, 5*time.Second, "lighttpd's pidfile", func() bool {
		b, err := os.ReadFile(filepath.Join(srv.Dir, "lighttpd.pid"))
		if err != nil {
			return false
		}
		_, err = fmt.Sscan(string(b), &pid)
		return err == nil && pid > 0
	})
	return pid
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Apache mod_proxy_fcgi in front of runfcgi servers: ProxyPass to TCP, and
// SetHandler "proxy:unix:…|fcgi://localhost" to a unix socket.
func TestApacheProxyFcgiRunfcgi(t *testing.T) {
	peertest.Need(t, "apache2")
	dir := peertest.Dir(t)
	port := peertest.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	tcp := startExternal(t, dir, "tcp", addr, "runfcgi", "method=threaded", "host=127.0.0.1", fmt.Sprintf("port=%d", port), "daemonize=false")
	udir := peertest.Dir(t)
	sock := filepath.Join(udir, "mysite.sock")
	unix := startExternal(t, udir, "unix", sock, "runfcgi", "method=prefork", "socket="+sock, "daemonize=false", "umask=001") // umask=000 means "unset" (0077) in serve.Options; 001 lets www-data connect
	docroot := peertest.Dir(t)
	srv := peertest.Apache(t, []string{"proxy", "proxy_fcgi"}, fmt.Sprintf(`
DocumentRoot %[1]s
<Directory %[1]s>
    Require all granted
</Directory>
ProxyPass /app/ fcgi://127.0.0.1:%[2]d/
<Location /sock/>
    SetHandler "proxy:unix:%[3]s|fcgi://localhost"
</Location>
`, docroot, port, sock))
	c := &http.Client{Timeout: 20 * time.Second}
	in, _, err := getInfo(c, "GET", srv.URL+"/app/admin/?q=1", nil)
	if err != nil {
		t.Fatalf("ProxyPass: %v\n%s", err, srv.Log())
	}
	if in.PID != tcp.Process.Pid || in.Mode != "external" || in.Protocol != "fastcgi" || in.QueryString != "q=1" ||
		!strings.HasSuffix(in.ScriptName+in.PathInfo, "/admin/") {
		t.Errorf("ProxyPass: %+v", in)
	}
	in, _, err = getInfo(c, "GET", srv.URL+"/sock/page?q=1", nil)
	if err != nil {
		t.Fatalf("SetHandler proxy:unix: %v\n%s", err, srv.Log())
	}
	if !contains(peertest.Children(unix.Process.Pid), in.PID) || in.Mode != "external" || in.Protocol != "fastcgi" || in.QueryString != "q=1" ||
		in.ScriptName+in.PathInfo != "/sock/page" {
		t.Errorf("SetHandler proxy:unix: %+v (workers %v)", in, peertest.Children(unix.Process.Pid))
	}
}

// mod_authnz_fcgi with our fcgi.Server's Authorizer role: Basic auth is
// checked by the FastCGI authenticator, access by the authorizer, which
// passes a Variable-X-User back; Apache hands it on as an environment
// variable (echoed here in a response header). Deny gives 403.
func TestApacheAuthnzFcgi(t *testing.T) {
	peertest.Need(t, "apache2")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	roles := make(chan string, 16)
	as := &fcgi.Server{Authorizer: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := fcgi.Params(r)
		select {
		case roles <- p["FCGI_APACHE_ROLE"]:
		default:
		}
		switch p["FCGI_APACHE_ROLE"] {
		case "AUTHENTICATOR":
			if p["REMOTE_PASSWD"] != "secret" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
		case "AUTHORIZER":
			if p["REMOTE_USER"] != "alice" {
				w.WriteHeader(http.StatusForbidden)
				fmt.Fprint(w, "no entry for "+p["REMOTE_USER"])
				return
			}
			w.Header().Set("Variable-X-User", p["REMOTE_USER"])
		}
		w.WriteHeader(http.StatusOK)
	})}
	go as.Serve(l)
	t.Cleanup(func() { as.Close() })

	dir := peertest.Dir(t)
	port := peertest.FreePort(t)
	startExternal(t, dir, "tcp", fmt.Sprintf("127.0.0.1:%d", port), "runfcgi", "method=threaded", "host=127.0.0.1", fmt.Sprintf("port=%d", port), "daemonize=false")
	docroot := peertest.Dir(t)
	srv := peertest.Apache(t, []string{"proxy", "proxy_fcgi", "authnz_fcgi", "authn_core", "auth_basic", "headers", "env"}, fmt.Sprintf(`
DocumentRoot %[1]s
AuthnzFcgiDefineProvider authn Checker fcgi://%[2]s/
AuthnzFcgiDefineProvider authz Gate fcgi://%[2]s/
<Location /secure/>
    AuthType Basic
    AuthName "members"
    AuthBasicProvider Checker
    Require Gate
    AuthzSendForbiddenOnFailure On
    ProxyPass fcgi://127.0.0.1:%[3]d/secure/
    Header always set X-Authz-User "%%{X-User}e"
</Location>
`, docroot, l.Addr(), port))
	c := &http.Client{Timeout: 20 * time.Second}
	do := func(user, pass string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", srv.URL+"/secure/page", nil)
		req.Header.Set("Accept", "application/json")
		req.SetBasicAuth(user, pass)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET as %s: %v", user, err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return resp, b.String()
	}
	resp, body := do("alice", "secret")
	if resp.StatusCode != 200 || !strings.Contains(body, `"mode": "external"`) {
		t.Fatalf("alice: %d %s\n%s", resp.StatusCode, body, srv.Log())
	}
	if got := resp.Header.Get("X-Authz-User"); got != "alice" {
		t.Errorf("the authorizer's Variable-X-User reached Apache as %q, want alice", got)
	}
	if resp, _ := do("bob", "secret"); resp.StatusCode != 403 {
		t.Errorf("bob (authorizer denies): status %d, want 403", resp.StatusCode)
	}
	if resp, _ := do("alice", "wrong"); resp.StatusCode != 401 {
		t.Errorf("wrong password (authenticator denies): status %d, want 401", resp.StatusCode)
	}
	seen := map[string]bool{}
	for len(roles) > 0 {
		seen[<-roles] = true
	}
	if !seen["AUTHENTICATOR"] || !seen["AUTHORIZER"] {
		t.Errorf("FCGI_APACHE_ROLE values seen: %v", seen)
	}
}

// HAProxy's fcgi-app with two runfcgi servers, round robin: both answer.
func TestHAProxyFcgiAppTwoBackends(t *testing.T) {
	bin := peertest.Need(t, "haproxy")[0]
	var ports []int
	var pids []int
	for i := 0; i < 2; i++ {
		dir := peertest.Dir(t)
		port := peertest.FreePort(t)
		cmd := startExternal(t, dir, "tcp", fmt.Sprintf("127.0.0.1:%d", port), "runfcgi", "method=threaded", "host=127.0.0.1", fmt.Sprintf("port=%d", port), "daemonize=false")
		ports = append(ports, port)
		pids = append(pids, cmd.Process.Pid)
	}
	dir := peertest.Dir(t)
	front := peertest.FreePort(t)
	conf := fmt.Sprintf(`global
    maxconn 256
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
fcgi-app mysite
    docroot %[1]s
    path-info ^()(/.*)$
frontend www
    bind 127.0.0.1:%[2]d
    default_backend apps
backend apps
    balance roundrobin
    use-fcgi-app mysite
    server app1 127.0.0.1:%[3]d proto fcgi
    server app2 127.0.0.1:%[4]d proto fcgi
`, dir, front, ports[0], ports[1])
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-db", "-f", path)
	out, err := os.Create(filepath.Join(dir, "haproxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	exited := startUntilCleanup(t, cmd, nil)
	waitDial(t, "tcp", fmt.Sprintf("127.0.0.1:%d", front), exited, out.Name())

	c := &http.Client{Timeout: 20 * time.Second}
	seen := map[int]int{}
	for i := 0; i < 10; i++ {
		in := checkInfo(t, c, fmt.Sprintf("http://127.0.0.1:%d", front), fmt.Sprintf("/r/%d", i), "external")
		seen[in.PID]++
	}
	if seen[pids[0]] == 0 || seen[pids[1]] == 0 || len(seen) != 2 {
		t.Errorf("answers by pid: %v; want both of %v", seen, pids)
	}
}
