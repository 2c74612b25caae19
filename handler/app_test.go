package handler

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/appctl"
	"github.com/fcgishim/fcgishim/config"
	"github.com/fcgishim/fcgishim/internal/peertest"
)

// testSite is one configured site: its files, and handlers built from it.
type testSite struct {
	t       *testing.T
	dir     string // config dir
	cfgPath string
	runDir  string
	log     string // the app's and the supervisor's output
	starts  string // one line per app start
	events  string // "term PID" lines
}

// newTestSite writes mysite.toml for the test app with the given switches
// and extra [app] lines, and makes sure at the end of the test that the
// supervisor and the app are gone.
func newTestSite(t *testing.T, switches, extra string) *testSite {
	t.Helper()
	dir := t.TempDir()
	s := &testSite{t: t, dir: dir, cfgPath: filepath.Join(dir, "mysite.toml"),
		runDir: filepath.Join(dir, "run"), log: filepath.Join(dir, "app.log"),
		starts: filepath.Join(dir, "starts"), events: filepath.Join(dir, "events")}
	if !strings.Contains(extra, "command") {
		extra = fmt.Sprintf("command = [%q, \"app\", \"{socket}\"]\n", os.Args[0]) + extra
	}
	if !strings.Contains(extra, "env_allow") {
		extra += "env_allow = [\"GORACE\"]\n"
	}
	if !strings.Contains(extra, "idle_stop") {
		extra += "idle_stop = \"300ms\"\n"
	}
	if !strings.Contains(extra, "stop_grace") {
		extra += "stop_grace = \"2s\"\n"
	}
	toml := fmt.Sprintf("[app]\n%sruntime_dir = %q\nlog = %q\nenv = { FCGISHIM_TEST_APP = %q, TEST_STARTS = %q, TEST_EVENTS = %q }\n",
		extra, s.runDir, s.log, "on,"+switches, s.starts, s.events)
	if err := os.WriteFile(s.cfgPath, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.waitGone)
	return s
}

// handler builds a Site (one copy of mysite.fcgi) behind a Gateway that
// forces the mount prefix /mysite, served by an httptest server.
func (s *testSite) handler() (*Site, *httptest.Server) {
	s.t.Helper()
	return s.handlerOf(os.Args[0])
}

// handlerOf is handler with exe as our binary (the one started as the
// supervisor).
func (s *testSite) handlerOf(exe string) (*Site, *httptest.Server) {
	s.t.Helper()
	cfg, err := config.Load(s.cfgPath)
	if err != nil {
		s.t.Fatal(err)
	}
	site, err := New(Options{Config: cfg, Process: &Process{}, Executable: exe})
	if err != nil {
		s.t.Fatal(err)
	}
	prefix := "/mysite"
	g := &Gateway{Next: site, ForceScriptName: &prefix, Vars: func(r *http.Request) map[string]string {
		if u := r.Header.Get("Test-Remote-User"); u != "" {
			return map[string]string{"REMOTE_USER": u}
		}
		return nil
	}}
	srv := httptest.NewServer(g)
	s.t.Cleanup(func() {
		srv.Close()
		site.Close(context.Background())
	})
	return site, srv
}

// waitGone waits until the supervisor has stopped (idle_stop after the last
// client) and removed the state, and no app process it started remains.
func (s *testSite) waitGone() {
	deadline := time.Now().Add(20 * time.Second)
	for appctl.SupervisorRunning(s.runDir) {
		if time.Now().After(deadline) {
			s.t.Errorf("supervisor still running 20s after the test; log:\n%s", s.logText())
			return
		}
		time.Sleep(20 * time.Millisecond) // polling a condition
	}
	for _, pid := range s.startPIDs() {
		for appctl.Alive(pid) && !isZombie(pid) {
			if time.Now().After(deadline) {
				s.t.Errorf("app pid %d still alive after the supervisor exited", pid)
				break
			}
			time.Sleep(20 * time.Millisecond) // polling another process's exit
		}
	}
}

func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] == "Z"
}

func (s *testSite) logText() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

func (s *testSite) startPIDs() []int {
	b, _ := os.ReadFile(s.starts)
	var pids []int
	for _, l := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(l); err == nil {
			pids = append(pids, n)
		}
	}
	return pids
}

func getEcho(t *testing.T, req *http.Request) (echo, *http.Response) {
	t.Helper()
	var e echo
	resp := getJSON(t, req, &e)
	return e, resp
}

// getJSON does req, wants a 200 and decodes the JSON body into v.
func getJSON(t *testing.T, req *http.Request, v any) *http.Response {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
	return resp
}

func TestProxyHeadersAndPath(t *testing.T) {
	t.Parallel()
	s := newTestSite(t, "", "")
	_, srv := s.handler()
	req, _ := http.NewRequest("GET", srv.URL+"/mysite/a%2Fb/c?x=1&y=%20", nil)
	req.Header.Set("X-Forwarded-For", "1.2.3.4")
	req.Header.Set("X-Real-IP", "1.2.3.4")
	req.Header.Set("Forwarded", "for=1.2.3.4")
	req.Header.Set("X-Forwarded-Host", "evil.example")
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("Proxy", "http://evil.example:3128")
	req.Header["X_Forwarded_For"] = []string{"1.2.3.4"}
	req.Header["SCRIPT_NAME"] = []string{"/evil"}
	req.Header.Set("X-Remote-User", "admin")
	req.Header.Set("Connection", "X-Forwarded-For, X-Real-IP")
	req.Header.Set("Test-Remote-User", "alice")
	req.Host = "site.example"
	e, _ := getEcho(t, req)

	h := e.Header
	checks := map[string]string{
		"X-Forwarded-For":    "127.0.0.1",
		"X-Real-Ip":          "127.0.0.1",
		"X-Forwarded-Host":   "site.example",
		"X-Forwarded-Proto":  "http",
		"X-Forwarded-Prefix": "/mysite",
		"Forwarded":          `for="127.0.0.1";host="site.example";proto=http`,
		"X-Remote-User":      "alice",
	}
	for k, want := range checks {
		if got := strings.Join(h.Values(k), ","); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	// Go's server canonicalises the header name to Script_name.
	if got := h["Script_name"]; len(got) != 1 || got[0] != "/mysite" {
		t.Errorf("SCRIPT_NAME header = %q, want [/mysite]", got)
	}
	for _, k := range []string{"Proxy", "X_Forwarded_For", "Test-Remote-User-X"} {
		if v, ok := h[k]; ok {
			t.Errorf("%s reached the app: %q", k, v)
		}
	}
	if e.URI != "/mysite/a%2Fb/c?x=1&y=%20" {
		t.Errorf("request URI = %q, want the original", e.URI)
	}
	if e.Host != "site.example" {
		t.Errorf("Host = %q", e.Host)
	}
}

func TestProxyChildEnvironment(t *testing.T) {
	t.Setenv("HTTP_PROXY", "http://evil.example:3128")
	t.Setenv("SECRET_TOKEN", "s3cr3t")
	t.Setenv("ALLOWED_ONE", "yes")
	s := newTestSite(t, "", `env_allow = ["ALLOWED_ONE", "HTTP_PROXY", "GORACE"]`+"\n")
	_, srv := s.handler()
	req, _ := http.NewRequest("GET", srv.URL+"/mysite/?env=1", nil)
	e, _ := getEcho(t, req)
	env := strings.Join(e.Env, "\n")
	for _, bad := range []string{"HTTP_PROXY", "SECRET_TOKEN", "FCGISHIM_RUNTIME_DIR"} {
		if strings.Contains(env, bad) {
			t.Errorf("app environment has %s:\n%s", bad, env)
		}
	}
	for _, good := range []string{"ALLOWED_ONE=yes", "SOCKET=" + s.runDir, "PATH="} {
		if !strings.Contains(env, good) {
			t.Errorf("app environment lacks %s:\n%s", good, env)
		}
	}
}

func TestProxyResponseHeaders(t *testing.T) {
	t.Parallel()
	s := newTestSite(t, "", "")
	_, srv := s.handler()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(srv.URL + "/mysite/headers")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 302 || resp.Header.Get("Location") != "/mysite/next/" {
		t.Errorf("status %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if got := resp.Header.Values("Set-Cookie"); len(got) != 2 || got[0] != "a=1; Path=/mysite; HttpOnly" || got[1] != "b=2" {
		t.Errorf("Set-Cookie = %q", got)
	}
	for _, k := range []string{"X-Sendfile", "X-Accel-Redirect", "X-Accel-Buffering", "X-Lighttpd-Send-File"} {
		if v := resp.Header.Get(k); v != "" {
			t.Errorf("%s passed through: %q", k, v)
		}
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("Content-Type = %q, want an explicit application/octet-stream", ct)
	}
}

func TestProxyStreamingBodies(t *testing.T) {
	t.Parallel()
	s := newTestSite(t, "", "")
	_, srv := s.handler()
	// A chunked upload (unknown length) arrives whole.
	pr, pw := io.Pipe()
	go func() {
		for range 100 {
			pw.Write(make([]byte, 10000))
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", srv.URL+"/mysite/up", pr)
	e, _ := getEcho(t, req)
	if e.BodyLen != 1000000 {
		t.Errorf("app read %d bytes, want 1000000", e.BodyLen)
	}
	// A streamed download of unknown length arrives whole.
	resp, err := http.Get(srv.URL + "/mysite/download?n=5000000")
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != 5000000 {
		t.Errorf("downloaded %d bytes, err %v", n, err)
	}
}

func TestProxySSEFlushes(t *testing.T) {
	t.Parallel()
	s := newTestSite(t, "", "")
	_, srv := s.handler()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/mysite/sse", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(resp.Body).ReadString('\n')
		got <- line
	}()
	select {
	case line := <-got:
		if line != "data: first\n" {
			t.Errorf("first line %q", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("first event did not arrive while the app held the response open")
	}
}

func TestProxyCrashMidResponseIsBroken(t *testing.T) {
	t.Parallel()
	s := newTestSite(t, "", "")
	_, srv := s.handler()
	resp, err := http.Get(srv.URL + "/mysite/crash")
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Fatal("a response cut by the app's death was read as complete")
	}
	// The app is restarted and answers again.
	peertest.Eventually(t, 20*time.Second, "the app to be back", func() bool {
		resp, err := http.Get(srv.URL + "/mysite/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func TestProxySlowStartWaits(t *testing.T) {
	t.Parallel()
	s := newTestSite(t, "slow-start=1500ms", "")
	_, srv := s.handler()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(srv.URL + "/mysite/")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("status %d while the app was starting", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	if n := len(s.startPIDs()); n != 1 {
		t.Errorf("%d app starts, want 1", n)
	}
}

func TestProxyCrashLoop503(t *testing.T) {
	t.Parallel()
	s := newTestSite(t, "crash-at-start", "")
	_, srv := s.handler()
	resp, err := http.Get(srv.URL + "/mysite/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d Retry-After %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if !strings.Contains(string(body), "exited right after it started") || strings.Contains(string(body), s.dir) {
		t.Errorf("page: %s", body)
	}
	// Backoff: the gaps between starts grow.
	peertest.Eventually(t, 20*time.Second, "four starts", func() bool { return len(s.startPIDs()) >= 4 })
	if n := strings.Count(s.logText(), "exited right after it started"); n < 3 || n > len(s.startPIDs())+1 {
		t.Errorf("%d cause lines for %d starts:\n%s", n, len(s.startPIDs()), s.logText())
	}
}

func TestProxyCommandNotFound(t *testing.T) {
	t.Parallel()
	s := newTestSite(t, "", `command = ["/nonexistent/bin/gunicorn", "{socket}"]`+"\n")
	_, srv := s.handler()
	resp, err := http.Get(srv.URL + "/mysite/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "command was not found") {
		t.Errorf("status %d: %s", resp.StatusCode, body)
	}
	if strings.Contains(string(body), "/nonexistent") {
		t.Errorf("page shows the command: %s", body)
	}
	if !strings.Contains(s.logText(), "command was not found") || !strings.Contains(s.logText(), "/nonexistent/bin/gunicorn") {
		t.Errorf("log does not name the cause:\n%s", s.logText())
	}
}

func TestProxyNeverListens(t *testing.T) {
	t.Parallel()
	s := newTestSite(t, "hang", `ready_timeout = "500ms"`+"\n")
	_, srv := s.handler()
	resp, err := http.Get(srv.URL + "/mysite/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("status %d, want 503", resp.StatusCode)
	}
	peertest.Eventually(t, 10*time.Second, "the log line", func() bool {
		return strings.Contains(s.logText(), "never opened its socket")
	})
}

func TestProxyUpstreamDown502(t *testing.T) {
	dir := t.TempDir()
	cfg := &config.Config{App: config.App{Upstream: "unix:" + filepath.Join(dir, "none.sock")}}
	site, err := New(Options{Config: cfg, Process: &Process{}})
	if err != nil {
		t.Fatal(err)
	}
	defer site.Close(context.Background())
	rec := httptest.NewRecorder()
	site.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
	if rec.Code != 502 || strings.Contains(rec.Body.String(), dir) {
		t.Errorf("status %d: %s", rec.Code, rec.Body)
	}
}

func TestProxyTimeout504(t *testing.T) {
	t.Parallel()
	s := newTestSite(t, "", `timeout = "300ms"`+"\n")
	_, srv := s.handler()
	resp, err := http.Get(srv.URL + "/mysite/slow?d=10s")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 504 {
		t.Errorf("status %d, want 504", resp.StatusCode)
	}
}

// Several copies of mysite.fcgi (in-process Sites hold separate flocks,
// just as processes do) started at once share one app instance.
func TestSharedInstance(t *testing.T) {
	t.Parallel()
	s := newTestSite(t, "slow-start=300ms", "")
	var srvs []*httptest.Server
	for range 6 {
		_, srv := s.handler()
		srvs = append(srvs, srv)
	}
	pids := make(chan int, len(srvs)*3)
	var wg sync.WaitGroup
	for _, srv := range srvs {
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest("GET", srv.URL+"/mysite/", nil)
				e, _ := getEcho(t, req)
				pids <- e.PID
			}()
		}
	}
	wg.Wait()
	close(pids)
	seen := map[int]bool{}
	for p := range pids {
		seen[p] = true
	}
	if len(seen) != 1 || len(s.startPIDs()) != 1 {
		t.Errorf("app pids seen %v, starts %v; want one", seen, s.startPIDs())
	}
}

// A new config (or binary) replaces the app once: a new pid answers, the
// old one got SIGTERM.
func TestReplacement(t *testing.T) {
	t.Parallel()
	s := newTestSite(t, "", "")
	_, srv1 := s.handler()
	_, srv2 := s.handler()
	req, _ := http.NewRequest("GET", srv1.URL+"/mysite/", nil)
	first, _ := getEcho(t, req)
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(s.cfgPath, later, later); err != nil {
		t.Fatal(err)
	}
	var second echo
	peertest.Eventually(t, 20*time.Second, "a new app pid", func() bool {
		for _, srv := range []*httptest.Server{srv1, srv2} {
			req, _ := http.NewRequest("GET", srv.URL+"/mysite/", nil)
			second, _ = getEcho(t, req)
			if second.PID == first.PID {
				return false
			}
		}
		return true
	})
	peertest.Eventually(t, 10*time.Second, "SIGTERM to the old app", func() bool {
		b, _ := os.ReadFile(s.events)
		return strings.Contains(string(b), "term "+strconv.Itoa(first.PID))
	})
	if n := len(s.startPIDs()); n != 2 {
		t.Errorf("%d starts for one replacement, want 2", n)
	}
}

// An app that ignores SIGTERM gets SIGKILL after stop_grace when replaced.
func TestReplacementKillsStubbornApp(t *testing.T) {
	t.Parallel()
	s := newTestSite(t, "ignore-term", `stop_grace = "300ms"`+"\n")
	_, srv := s.handler()
	req, _ := http.NewRequest("GET", srv.URL+"/mysite/", nil)
	first, _ := getEcho(t, req)
	os.WriteFile(filepath.Join(s.dir, "restart.txt"), nil, 0o600)
	peertest.Eventually(t, 20*time.Second, "the stubborn app to be killed", func() bool {
		return !appctl.Alive(first.PID) || isZombie(first.PID)
	})
}

// Copies killed with SIGKILL leave no app behind: the supervisor notices
// that no client holds clients.lock and stops the app after idle_stop.
func TestNoOrphansAfterSIGKILL(t *testing.T) {
	t.Parallel()
	s := newTestSite(t, "", "")
	var clients []*os.Process
	var appPID int
	for range 3 {
		cmd := execTestClient(s.cfgPath)
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, cmd.Process)
		line, _ := bufio.NewReader(out).ReadString('\n')
		pid, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "pid ")))
		if pid == 0 || appPID != 0 && pid != appPID {
			t.Fatalf("client said %q (app pid so far %d); log:\n%s", line, appPID, s.logText())
		}
		appPID = pid
		defer cmd.Wait()
	}
	for _, p := range clients {
		p.Signal(syscall.SIGKILL)
	}
	peertest.Eventually(t, 30*time.Second, "the app to be gone", func() bool {
		return !appctl.Alive(appPID) || isZombie(appPID)
	})
	if !strings.Contains(s.logText(), "no client left") {
		t.Errorf("log:\n%s", s.logText())
	}
}

func TestNoisyAppIsRateLimited(t *testing.T) {
	t.Parallel()
	s := newTestSite(t, "noisy", "")
	_, srv := s.handler()
	req, _ := http.NewRequest("GET", srv.URL+"/mysite/", nil)
	getEcho(t, req)
	peertest.Eventually(t, 10*time.Second, "the drop notice", func() bool {
		return strings.Contains(s.logText(), "lines dropped")
	})
	if n := strings.Count(s.logText(), "noise line"); n > appctl.OutputBurst+appctl.OutputRate*5 {
		t.Errorf("%d noise lines logged", n)
	}
	if !strings.Contains(s.logText(), "handler.test[") {
		t.Errorf("lines lack the app's name prefix:\n%.300s", s.logText())
	}
}

// BODY-01: a 256 MiB upload streams through with bounded memory.
func TestProxyUploadMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("256 MiB upload")
	}
	s := newTestSite(t, "", "")
	_, srv := s.handler()
	// Warm up, then measure the peak heap while the upload runs.
	req, _ := http.NewRequest("GET", srv.URL+"/mysite/", nil)
	getEcho(t, req)
	var before, after runtimeMem
	before.read()
	if before.sys == 0 {
		t.Fatal("cannot read VmRSS from /proc/self/status: the bound would be unmeasured")
	}
	const size = 256 << 20
	stop := make(chan struct{})
	peak := make(chan uint64)
	go func() {
		var m runtimeMem
		var max uint64
		for {
			m.read()
			max = maxU(max, m.sys)
			select {
			case <-stop:
				peak <- max
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	req, _ = http.NewRequest("POST", srv.URL+"/mysite/upload", io.LimitReader(zeroReader{}, size))
	req.ContentLength = size
	e, _ := getEcho(t, req)
	close(stop)
	p := <-peak
	after.read()
	if e.BodyLen != size {
		t.Errorf("app read %d bytes, want %d", e.BodyLen, size)
	}
	grow := int64(p) - int64(before.sys)
	t.Logf("RSS before %d MiB, peak %d MiB (growth %d MiB) during a 256 MiB upload", before.sys>>20, p>>20, grow>>20)
	if grow > 64<<20 {
		t.Errorf("memory grew by %d MiB during the upload", grow>>20)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func maxU(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

// runtimeMem is our resident set size, from /proc/self/status.
type runtimeMem struct{ sys uint64 }

func (m *runtimeMem) read() {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			m.sys = kb << 10
		}
	}
}

func execTestClient(cfgPath string) *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "FCGISHIM_TEST_CLIENT="+cfgPath)
	return cmd
}

// {port} gives a loopback port; ready_path is asked before forwarding.
func TestProxyPortAndReadyPath(t *testing.T) {
	t.Parallel()
	s := newTestSite(t, "", fmt.Sprintf("command = [%q, \"app\", \"{port}\"]\nready_path = \"/ready\"\n", os.Args[0]))
	_, srv := s.handler()
	req, _ := http.NewRequest("GET", srv.URL+"/mysite/p", nil)
	e, _ := getEcho(t, req)
	if e.Path != "/mysite/p" {
		t.Errorf("path %q", e.Path)
	}
	st, err := appctl.ReadState(s.runDir)
	if err != nil || !strings.HasPrefix(st.Addr, "tcp:127.0.0.1:") {
		t.Errorf("state %+v, %v", st, err)
	}
}

// RESP-05: an app response header the web server would reject (a line
// over 8 KiB, or a block over max_response_header_bytes) becomes a clear
// 502 from us, logged, instead of the web server's opaque 500; ordinary
// large cookies still pass.
func TestProxyOversizedResponseHeaders_RESP05(t *testing.T) {
	t.Parallel()
	s := newTestSite(t, "", "")
	_, srv := s.handler()
	for _, c := range []struct {
		query string
		want  int
	}{
		{"n=4000&count=3", 200},  // 12 KB of cookies in lines under 8 KiB
		{"n=9000&count=1", 502},  // one line over 8 KiB
		{"n=8000&count=10", 502}, // 80 KB block over the 64 KiB default
	} {
		resp, err := http.Get(srv.URL + "/mysite/bigheader?" + c.query)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: status %d, want %d: %.200s", c.query, resp.StatusCode, c.want, b)
		}
		if c.want == 502 && (len(resp.Header.Values("Set-Cookie")) != 0 || !strings.Contains(string(b), "too large")) {
			t.Errorf("%s: 502 page leaks headers or says nothing: %v %.200s", c.query, resp.Header, b)
		}
	}
}

// Traffic goes to a new instance only once it has answered the readiness
// request (sent with the site's Host): an app that listens at once but needs a while before it can
// answer (gunicorn's workers importing Django) gets no visitor's request
// during that while, neither at the first start nor after a restart.
func TestReadyMeansAnswered(t *testing.T) {
	t.Parallel()
	s := newTestSite(t, "warm=1s", "")
	_, srv := s.handler()
	get := func() echo {
		req, _ := http.NewRequest("GET", srv.URL+"/mysite/page", nil)
		req.Header.Set("User-Agent", "visitor")
		e, _ := getEcho(t, req)
		return e
	}
	first := get()
	os.WriteFile(filepath.Join(s.dir, "restart.txt"), nil, 0o600)
	peertest.Eventually(t, 20*time.Second, "a new app pid", func() bool { return get().PID != first.PID })
	b, _ := os.ReadFile(s.events)
	colds := 0
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "cold ") {
			continue
		}
		colds++
		if !strings.HasPrefix(l, "cold "+appctl.ReadyUserAgent+" ") {
			t.Errorf("a request reached an app still warming up: %q", l)
		}
		// The probe carries the site's Host, as a visitor would (an app
		// checking it, like Django's ALLOWED_HOSTS, must not see a stranger).
		if host := strings.TrimPrefix(srv.URL, "http://"); !strings.HasPrefix(l, "cold "+appctl.ReadyUserAgent+" "+host+" /") {
			t.Errorf("readiness request %q does not carry the site's Host %s", l, host)
		}
	}
	if colds < 2 {
		t.Errorf("%d readiness requests waited for the warm-up, want one per start (2): %q", colds, b)
	}
}

// copyFile writes a copy of src to dst by a rename, as an upload would.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst+".new", b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dst+".new", dst); err != nil {
		t.Fatal(err)
	}
}

// supervisorRuns reads the state and reports whether it names a ready
// app and a supervisor running the binary at exe (not a deleted one).
func supervisorRuns(runDir, exe string) (*appctl.State, bool) {
	st, err := appctl.ReadState(runDir)
	if err != nil || st.Status != "ready" {
		return st, false
	}
	link, err := os.Readlink("/proc/" + strconv.Itoa(st.Supervisor) + "/exe")
	return st, err == nil && link == exe
}

// mv new mysite.fcgi: the supervisor that runs afterwards is the new
// binary (not the deleted old one), the app is replaced once, and no
// request fails meanwhile.
func TestBinaryUpgradeRunsNewSupervisor(t *testing.T) {
	t.Parallel()
	s := newTestSite(t, "", "")
	exe := filepath.Join(s.dir, "mysite.fcgi")
	copyFile(t, os.Args[0], exe)
	_, srv := s.handlerOf(exe)
	get := func() (echo, error) {
		resp, err := http.Get(srv.URL + "/mysite/")
		if err != nil {
			return echo{}, err
		}
		defer resp.Body.Close()
		var e echo
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return e, fmt.Errorf("status %d: %s", resp.StatusCode, body)
		}
		return e, json.Unmarshal(body, &e)
	}
	first, err := get()
	if err != nil {
		t.Fatal(err)
	}
	old, ok := supervisorRuns(s.runDir, exe)
	if !ok {
		t.Fatalf("before the upgrade the supervisor does not run %s: %+v", exe, old)
	}
	// Requests all along, one at a time, until the test has seen enough.
	stop, done := make(chan struct{}), make(chan []error)
	go func() {
		var errs []error
		for {
			select {
			case <-stop:
				done <- errs
				return
			default:
			}
			if _, err := get(); err != nil {
				errs = append(errs, err)
			}
		}
	}()
	copyFile(t, os.Args[0], exe)
	var now *appctl.State
	peertest.Eventually(t, 30*time.Second, "a supervisor running the new binary", func() bool {
		var ok bool
		now, ok = supervisorRuns(s.runDir, exe)
		return ok && now.Supervisor != old.Supervisor
	})
	peertest.Eventually(t, 20*time.Second, "the old supervisor to exit", func() bool {
		return !appctl.Alive(old.Supervisor) || isZombie(old.Supervisor)
	})
	close(stop)
	for _, err := range <-done {
		t.Errorf("request during the upgrade: %v", err)
	}
	if e, err := get(); err != nil || e.PID == first.PID || e.PID != now.PID {
		t.Errorf("after the upgrade the app pid is %d (%v), want the new supervisor's app %d, not %d", e.PID, err, now.PID, first.PID)
	}
	if n := len(s.startPIDs()); n != 2 {
		t.Errorf("%d app starts for one upgrade, want 2:\n%s", n, s.logText())
	}
}

// The restart rule of the copies (package reload) holds for the
// supervisor too: a deleted binary is no change; a later restart.txt
// replaces the app once.
func TestDeletedBinaryIsNoChange(t *testing.T) {
	t.Parallel()
	s := newTestSite(t, "", "")
	exe := filepath.Join(s.dir, "mysite.fcgi")
	copyFile(t, os.Args[0], exe)
	_, srv := s.handlerOf(exe)
	req, _ := http.NewRequest("GET", srv.URL+"/mysite/", nil)
	first, _ := getEcho(t, req)
	if err := os.Remove(exe); err != nil {
		t.Fatal(err)
	}
	// A non-event has no moment to wait for: watch the app for longer than
	// the watcher's debounce and several supervisor ticks.
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
		if e, _ := getEcho(t, req); e.PID != first.PID {
			t.Fatalf("deleting the binary replaced the app (pid %d, then %d)", first.PID, e.PID)
		}
	}
	os.WriteFile(filepath.Join(s.dir, "restart.txt"), nil, 0o600)
	peertest.Eventually(t, 20*time.Second, "a new app pid", func() bool {
		e, _ := getEcho(t, req)
		return e.PID != first.PID
	})
	if n := len(s.startPIDs()); n != 2 {
		t.Errorf("%d app starts for a deleted binary and one restart.txt, want 2:\n%s", n, s.logText())
	}
}

// [app] strip_prefix through the proxy: the app gets the path below the
// mount with the client's escaping, no SCRIPT_NAME header (gunicorn would
// take it for "the path starts with this"), X-Forwarded-Prefix still; a
// Location and a cookie path it sends come back under the mount.
func TestProxyStripPrefix(t *testing.T) {
	t.Parallel()
	s := newTestSite(t, "", "strip_prefix = true\n")
	_, srv := s.handler()
	req, _ := http.NewRequest("GET", srv.URL+"/mysite/a%2Fb/c?x=1", nil)
	e, _ := getEcho(t, req)
	if e.URI != "/a%2Fb/c?x=1" {
		t.Errorf("request URI = %q, want /a%%2Fb/c?x=1", e.URI)
	}
	if v, ok := e.Header["Script_name"]; ok {
		t.Errorf("SCRIPT_NAME header reached a stripped app: %q", v)
	}
	if got := e.Header.Get("X-Forwarded-Prefix"); got != "/mysite" {
		t.Errorf("X-Forwarded-Prefix = %q, want /mysite", got)
	}
	req, _ = http.NewRequest("GET", srv.URL+"/mysite/", nil)
	if e, _ = getEcho(t, req); e.URI != "/" {
		t.Errorf("the mount itself: request URI %q, want /", e.URI)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(srv.URL + "/mysite/headers")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// The test app answers /headers with Location /mysite/next/ (already
	// under the mount: kept), cookies a (Path=/mysite: kept) and b (none).
	if got := resp.Header.Get("Location"); got != "/mysite/next/" {
		t.Errorf("Location = %q", got)
	}
	if got := resp.Header.Values("Set-Cookie"); len(got) != 2 || got[0] != "a=1; Path=/mysite; HttpOnly" || got[1] != "b=2" {
		t.Errorf("Set-Cookie = %q", got)
	}
	// An app that knows nothing of the mount redirects to /login and sets
	// a cookie for Path=/: both are meant for the site.
	resp, err = c.Get(srv.URL + "/mysite/redirect?to=/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Location"); resp.StatusCode != 302 || got != "/mysite/login" {
		t.Errorf("redirect: %d Location %q, want 302 to /mysite/login", resp.StatusCode, got)
	}
	if got := resp.Header.Get("Set-Cookie"); got != "c=3; Path=/mysite/" {
		t.Errorf("Set-Cookie = %q, want c=3; Path=/mysite/", got)
	}
}

// A new binary that cannot run as the supervisor (here a program that
// exits at once, as one built for another processor would fail) is logged;
// the running supervisor stays and replaces the app itself.
func TestBinaryUpgradeThatCannotRun(t *testing.T) {
	t.Parallel()
	s := newTestSite(t, "", "")
	exe := filepath.Join(s.dir, "mysite.fcgi")
	copyFile(t, os.Args[0], exe)
	_, srv := s.handlerOf(exe)
	req, _ := http.NewRequest("GET", srv.URL+"/mysite/", nil)
	first, _ := getEcho(t, req)
	old, _ := supervisorRuns(s.runDir, exe)
	broken := filepath.Join(s.dir, "broken")
	os.WriteFile(broken, []byte("#!/bin/sh\nexit 3\n"), 0o755)
	copyFile(t, broken, exe)
	peertest.Eventually(t, 20*time.Second, "a new app pid", func() bool {
		e, _ := getEcho(t, req)
		return e.PID != first.PID
	})
	st, err := appctl.ReadState(s.runDir)
	if err != nil || st.Supervisor != old.Supervisor {
		t.Errorf("state %+v (%v): want the old supervisor %d still in charge", st, err, old.Supervisor)
	}
	if !strings.Contains(s.logText(), "binary replaced, but its supervisor exited (exit status 3)") {
		t.Errorf("log does not say why the new binary was not used:\n%s", s.logText())
	}
}
