package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// moduleRoot is the repository's top directory, which holds the main
// package the tests build and the files they check (README.md, demo.sh).
// go test runs a package's tests in the package's directory, one below it.
const moduleRoot = ".."

// The integration tests run the real binary, built once per test run into a
// directory the web servers' users can read.
var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fcgishim-bin-")
		if err != nil {
			buildErr = err
			return
		}
		os.Chmod(dir, 0o755)
		binPath = filepath.Join(dir, "mysite.fcgi")
		out, err := exec.Command("go", "build", "-o", binPath, moduleRoot).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// install copies the binary into dir under name, as a user would.
func install(t testing.TB, dir, name string) string {
	t.Helper()
	src, err := os.ReadFile(binary(t))
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, name)
	if err := os.WriteFile(dst, src, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

// infoJSON is the info page's JSON: the keys the README promises.
type infoJSON struct {
	PID            int    `json:"pid"`
	Mode           string `json:"mode"`
	Protocol       string `json:"protocol"`
	Method         string `json:"method"`
	ScriptName     string `json:"script_name"`
	PathInfo       string `json:"path_info"`
	RequestURI     string `json:"request_uri"`
	QueryString    string `json:"query_string"`
	RemoteAddr     string `json:"remote_addr"`
	HTTPS          bool   `json:"https"`
	RequestsServed int64  `json:"requests_served"`
	Started        string `json:"started"`
	Version        string `json:"version"`
	BodyBytes      int64  `json:"body_bytes"`
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

func getInfo(c *http.Client, method, url string, body io.Reader) (infoJSON, int, error) {
	var in infoJSON
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return in, 0, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return in, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return in, resp.StatusCode, err
	}
	if resp.StatusCode != 200 {
		return in, resp.StatusCode, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, &in); err != nil {
		return in, resp.StatusCode, fmt.Errorf("decode %q: %v", b, err)
	}
	return in, resp.StatusCode, nil
}

// The guide's .htaccess for mod_fcgid.
const htaccessFcgid = `AddHandler fcgid-script .fcgi
RewriteEngine On
RewriteCond %{REQUEST_FILENAME} !-f
RewriteRule ^(.*)$ mysite.fcgi/$1 [QSA,L]
`

// sharedHost starts Apache + mod_fcgid as a shared host would run it:
// AllowOverride All, ExecCGI, the site's .htaccess doing the rest.
func sharedHost(t testing.TB, docroot string, extra string) *peertest.Server {
	t.Helper()
	return peertest.Apache(t, []string{"fcgid", "rewrite"}, fmt.Sprintf(`
DocumentRoot %[1]s
FcgidIPCDir {{DIR}}/fcgid
FcgidProcessTableFile {{DIR}}/fcgid_shm
FcgidMaxRequestsPerProcess 0
%[2]s
<Directory %[1]s>
    Options +ExecCGI +FollowSymLinks
    AllowOverride All
    Require all granted
</Directory>
`, docroot, extra))
}

func TestApacheFcgidInfoPage(t *testing.T) {
	root := peertest.Dir(t)
	install(t, root, "mysite.fcgi")
	os.WriteFile(filepath.Join(root, ".htaccess"), []byte(htaccessFcgid), 0o644)
	sub := filepath.Join(root, "app")
	os.Mkdir(sub, 0o755)
	install(t, sub, "mysite.fcgi")
	os.WriteFile(filepath.Join(sub, ".htaccess"), []byte(htaccessFcgid), 0o644)
	srv := sharedHost(t, root, "")
	c := &http.Client{Timeout: 20 * time.Second}

	cases := []struct {
		path, script, info, query string
	}{
		{"/", "", "/", ""},
		{"/foo/bar?x=1&y=2", "", "/foo/bar", "x=1&y=2"},
		{"/app/", "/app", "/", ""},
		{"/app/admin/login/?next=/app/", "/app", "/admin/login/", "next=/app/"},
	}
	for _, tc := range cases {
		in, _, err := getInfo(c, "GET", srv.URL+tc.path, nil)
		if err != nil {
			t.Fatalf("GET %s: %v\n%s", tc.path, err, srv.Log())
		}
		if in.ScriptName != tc.script || in.PathInfo != tc.info || in.QueryString != tc.query {
			t.Errorf("GET %s: script_name=%q path_info=%q query=%q; want %q %q %q",
				tc.path, in.ScriptName, in.PathInfo, in.QueryString, tc.script, tc.info, tc.query)
		}
		if in.Mode != "fastcgi-stdin" || in.Protocol != "fastcgi" || in.Method != "GET" || in.RemoteAddr != "127.0.0.1" {
			t.Errorf("GET %s: mode=%q protocol=%q method=%q remote=%q", tc.path, in.Mode, in.Protocol, in.Method, in.RemoteAddr)
		}
		if _, err := time.Parse(time.RFC3339Nano, in.Started); err != nil {
			t.Errorf("started %q: %v", in.Started, err)
		}
	}
	// The info page reads a body to the end and reports its size.
	body := make([]byte, 100_000)
	in, _, err := getInfo(c, "POST", srv.URL+"/upload", bytesReader(body))
	if err != nil || in.BodyBytes != int64(len(body)) {
		t.Fatalf("POST 100000 bytes: body_bytes=%d err=%v", in.BodyBytes, err)
	}
	// HTML for browsers.
	resp, err := c.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("HTML page Content-Type = %q", ct)
	}
}

// A touch of mysite.fcgi restarts it in place and loses no request, under
// sequential load, three times in a row.
func TestApacheFcgidTouchRestartLosesNothing(t *testing.T) {
	root := peertest.Dir(t)
	bin := install(t, root, "mysite.fcgi")
	os.WriteFile(filepath.Join(root, ".htaccess"), []byte(htaccessFcgid), 0o644)
	srv := sharedHost(t, root, "")
	c := &http.Client{Timeout: 20 * time.Second}

	first, _, err := getInfo(c, "GET", srv.URL+"/warmup", nil)
	if err != nil {
		t.Fatalf("warm-up: %v\n%s", err, srv.Log())
	}
	startedSeen := make(chan string, 1000)
	done := make(chan error, 1)
	stop := make(chan struct{})
	go func() {
		last := first.Started
		for i := 0; ; i++ {
			if i >= 300 { // at least 300 requests, and until the touches are done
				select {
				case <-stop:
					t.Logf("%d requests, 0 failed", i)
					done <- nil
					return
				default:
				}
			}
			in, _, err := getInfo(c, "GET", fmt.Sprintf("%s/load/%d", srv.URL, i), nil)
			if err != nil {
				done <- fmt.Errorf("request %d: %v", i, err)
				return
			}
			if in.Started != last {
				last = in.Started
				startedSeen <- in.Started
			}
		}
	}()
	deadline := time.After(60 * time.Second)
	for touch := 1; touch <= 3; touch++ {
		now := time.Now()
		if err := os.Chtimes(bin, now, now); err != nil {
			t.Fatal(err)
		}
		select {
		case <-startedSeen:
		case err := <-done:
			t.Fatalf("after touch %d: %v\n%s", touch, err, srv.Log())
		case <-deadline:
			t.Fatalf("touch %d: no new program within 60s\n%s", touch, srv.Log())
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("%v\n%s", err, srv.Log())
	}
}

// [server] max_lifetime recycles the copy mod_fcgid spawned in place (the
// same process runs a fresh program: its start time changes, its pid does
// not), again and again, losing no request of a sequential load.
func TestApacheFcgidMaxLifetimeRecycles(t *testing.T) {
	root := peertest.Dir(t)
	install(t, root, "mysite.fcgi")
	os.WriteFile(filepath.Join(root, ".htaccess"), []byte(htaccessFcgid), 0o644)
	os.WriteFile(filepath.Join(root, "mysite.toml"), []byte("[server]\nmax_lifetime = \"1s\"\n"), 0o644)
	srv := sharedHost(t, root, "")
	c := &http.Client{Timeout: 20 * time.Second}

	first, _, err := getInfo(c, "GET", srv.URL+"/warmup", nil)
	if err != nil {
		t.Fatalf("warm-up: %v\n%s", err, srv.Log())
	}
	// By pid: mod_fcgid may run more than one copy; each recycles itself.
	started := map[int]string{first.PID: first.Started}
	deadline := time.Now().Add(30 * time.Second)
	for i, recycled := 0, 0; recycled < 2; i++ {
		in, _, err := getInfo(c, "GET", fmt.Sprintf("%s/load/%d", srv.URL, i), nil)
		if err != nil {
			t.Fatalf("request %d: %v\n%s", i, err, srv.Log())
		}
		if prev, ok := started[in.PID]; ok && prev != in.Started {
			t0, _ := time.Parse(time.RFC3339Nano, prev)
			t1, _ := time.Parse(time.RFC3339Nano, in.Started)
			if age := t1.Sub(t0); age < time.Second {
				t.Fatalf("pid %d recycled after %s; max_lifetime is 1s", in.PID, age)
			}
			recycled++
		}
		started[in.PID] = in.Started
		if time.Now().After(deadline) {
			t.Fatalf("%d recycles within 30s of max_lifetime = 1s\n%s", recycled, srv.Log())
		}
	}
	if !strings.Contains(srv.Log(), "max_lifetime reached") {
		t.Errorf("the error log does not say why it restarted:\n%s", srv.Log())
	}
}

// ping_path and status_path through a real Apache + mod_fcgid: Apache does
// not pass Authorization to FastCGI by default, so the X-Status-Token
// header is the one that must get through.
func TestApacheFcgidPingAndStatus(t *testing.T) {
	root := peertest.Dir(t)
	install(t, root, "mysite.fcgi")
	os.WriteFile(filepath.Join(root, ".htaccess"), []byte(htaccessFcgid), 0o644)
	const token = "apache-status-token-0123"
	os.WriteFile(filepath.Join(root, "mysite.toml"), []byte(
		"[server]\nping_path = \"/-/ping\"\nstatus_path = \"/-/status\"\nstatus_token = \""+token+"\"\n"), 0o644)
	srv := sharedHost(t, root, "")
	c := &http.Client{Timeout: 20 * time.Second}
	get := func(path, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if token != "" {
			req.Header.Set("X-Status-Token", token)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v\n%s", path, err, srv.Log())
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/-/ping", ""); code != 200 || body != "pong\n" {
		t.Fatalf("ping: %d %q\n%s", code, body, srv.Log())
	}
	if code, _ := get("/-/status", ""); code != 401 {
		t.Fatalf("status without the token: %d", code)
	}
	code, body := get("/-/status", token)
	var st struct {
		PID      int    `json:"pid"`
		Mode     string `json:"mode"`
		Requests int64  `json:"requests"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || st.Mode != "fastcgi-stdin" || st.PID == 0 || st.Requests < 1 {
		t.Fatalf("status: %d %q", code, body)
	}
	if strings.Contains(body, root) || strings.Contains(body, token) {
		t.Fatalf("status shows a path or the token: %s", body)
	}
}
