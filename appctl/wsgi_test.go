package appctl

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// wsgiTestApp is the WSGI app the runner serves in these tests.
const wsgiTestApp = `
import json, os, time

class Closing:
    """An iterable whose close() is recorded in closed.txt."""
    def __init__(self, path, fail):
        self.path, self.fail = path, fail
    def __iter__(self):
        yield b"one,"
        if self.fail:
            raise RuntimeError("failed mid-body")
        yield b"two"
    def close(self):
        with open("closed.txt", "a") as f:
            f.write(self.path + "\n")

def echo(env, start_response):
    """Never fails: for the fuzz target."""
    body = json.dumps({"PATH_INFO": env["PATH_INFO"], "body": env["wsgi.input"].read().decode("latin-1")}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]

def application(env, start_response):
    path = env["PATH_INFO"]
    if path == "/wait":
        open("started", "w").close()
        while not os.path.exists("go"):
            time.sleep(0.01)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"finished"]
    if path == "/spin":
        t = time.process_time()
        while time.process_time() - t < 0.03:
            pass
    if path == "/nocontent":
        start_response("204 No Content", [])
        return [b"a body a 204 must not have"]
    if path == "/boom":
        raise RuntimeError("boom")
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"part%d;" % i for i in range(3))
    if path == "/file":
        f = open(__file__, "rb")
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(os.path.getsize(__file__)))])
        return env["wsgi.file_wrapper"](f, 4096)
    if path == "/sys-path":
        import sys
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["\n".join(sys.path).encode()]
    if path in ("/closing", "/closing-fail"):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Closing(path, path == "/closing-fail")
    keys = ("REMOTE_ADDR", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "wsgi.url_scheme", "SERVER_NAME",
            "SERVER_PORT", "CONTENT_LENGTH", "HTTP_X_ODD", "HTTP_X_GOOD", "REQUEST_METHOD", "REMOTE_USER")
    out = {k: env[k] for k in keys if k in env}
    out["body"] = env["wsgi.input"].read().decode("latin-1")
    out["pid"] = os.getpid()
    body = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
`

type wsgiRunnerProc struct {
	sock string
	dir  string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
}

func (r *wsgiRunnerProc) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.Write(p)
}

func (r *wsgiRunnerProc) log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String()
}

// startWSGIRunner runs the embedded runner with python3 on wsgiTestApp,
// as the supervisor would (written into a private directory, its own
// process group), and waits until it answers.
func startWSGIRunner(t testing.TB, app, workers string, extra ...string) *wsgiRunnerProc {
	t.Helper()
	python := peertest.Need(t, "python3")[0]
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "wsgitestapp.py"), []byte(wsgiTestApp), 0o600); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run") // the runtime directory, apart from the app's
	if err := os.Mkdir(run, 0o700); err != nil {
		t.Fatal(err)
	}
	runner, err := writeWSGIRunner(run)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(runner); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("runner file %s: %v %v, want mode 0600", runner, fi.Mode(), err)
	}
	r := &wsgiRunnerProc{sock: filepath.Join(run, "app.sock"), dir: dir}
	args := append([]string{runner, "--socket", r.sock, "--app", app, "--workers", workers}, extra...)
	r.cmd = exec.Command(python, args...)
	r.cmd.Dir = dir
	r.cmd.Stdout, r.cmd.Stderr = r, r
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { r.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-r.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			t.Errorf("runner still running 10 s after SIGTERM")
		}
		if t.Failed() {
			t.Logf("runner output:\n%s", r.log())
		}
	})
	peertest.Eventually(t, 20*time.Second, "the runner to answer", func() bool {
		c, err := net.Dial("unix", r.sock)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	return r
}

func (r *wsgiRunnerProc) dial(t testing.TB) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", r.sock)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes raw and reads one response from br.
func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, raw string) (*http.Response, string) {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatalf("write %q: %v", raw, err)
	}
	method, _, _ := strings.Cut(raw, " ")
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("response to %q: %v", raw, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("body of the response to %q: %v", raw, err)
	}
	return resp, string(b)
}

type wsgiEnv struct {
	RemoteAddr string  `json:"REMOTE_ADDR"`
	ScriptName string  `json:"SCRIPT_NAME"`
	PathInfo   string  `json:"PATH_INFO"`
	Query      string  `json:"QUERY_STRING"`
	Scheme     string  `json:"wsgi.url_scheme"`
	ServerName string  `json:"SERVER_NAME"`
	ServerPort string  `json:"SERVER_PORT"`
	Length     string  `json:"CONTENT_LENGTH"`
	Odd        *string `json:"HTTP_X_ODD"`
	Good       string  `json:"HTTP_X_GOOD"`
	Body       string  `json:"body"`
	RemoteUser string  `json:"REMOTE_USER"`
	PID        int     `json:"pid"`
}

func decodeEnv(t *testing.T, body string) wsgiEnv {
	t.Helper()
	var e wsgiEnv
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("environ %q: %v", body, err)
	}
	return e
}

// What our proxy sends becomes the environ a WSGI app expects, on one
// keep-alive connection: the visitor from X-Real-Ip, the scheme from
// X-Forwarded-Proto, SCRIPT_NAME from X-Forwarded-Prefix, bodies with
// Content-Length and chunked, HEAD without a body, streaming chunked, a
// header name with "_" dropped.
func TestWSGIRunnerEnvironAndFraming(t *testing.T) {
	r := startWSGIRunner(t, "wsgitestapp", "1")
	c := r.dial(t)
	br := bufio.NewReader(c)

	resp, body := roundTrip(t, c, br, "GET /mysite/a%20b/?x=1&y=2 HTTP/1.1\r\nHost: example.test:8443\r\nX-Real-Ip: 192.0.2.7\r\n"+
		"X-Forwarded-Proto: https\r\nX-Forwarded-Prefix: /mysite\r\nX_Odd: forged\r\nX-Good: yes\r\nX-Remote-User: alice\r\n\r\n")
	e := decodeEnv(t, body)
	want := wsgiEnv{RemoteAddr: "192.0.2.7", ScriptName: "/mysite", PathInfo: "/a b/", Query: "x=1&y=2", Scheme: "https",
		ServerName: "example.test", ServerPort: "8443", Good: "yes", RemoteUser: "alice", PID: e.PID}
	if resp.StatusCode != 200 || e != want {
		t.Fatalf("environ %+v (status %d), want %+v", e, resp.StatusCode, want)
	}

	resp, body = roundTrip(t, c, br, "POST /form HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\na=1&b=2")
	if e2 := decodeEnv(t, body); resp.StatusCode != 200 || e2.Body != "a=1&b=2" || e2.Length != "7" || e2.PID != e.PID {
		t.Fatalf("Content-Length body: %d %+v", resp.StatusCode, e2)
	}

	resp, body = roundTrip(t, c, br, "POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\nTrailer-X: 1\r\n\r\n")
	if e2 := decodeEnv(t, body); resp.StatusCode != 200 || e2.Body != "abcdefg" || e2.Length != "7" || e2.PID != e.PID {
		t.Fatalf("chunked body: %d %+v", resp.StatusCode, e2)
	}

	resp, body = roundTrip(t, c, br, "GET /stream HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp.StatusCode != 200 || body != "part0;part1;part2;" || len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("streaming: %d %q, Transfer-Encoding %v (want chunked)", resp.StatusCode, body, resp.TransferEncoding)
	}

	resp, body = roundTrip(t, c, br, "HEAD /env HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp.StatusCode != 200 || body != "" || resp.ContentLength <= 0 {
		t.Fatalf("HEAD: %d %q, Content-Length %d (want the GET's, no body)", resp.StatusCode, body, resp.ContentLength)
	}
	// A 204 has no body, whatever the app returns.
	resp, body = roundTrip(t, c, br, "GET /nocontent HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp.StatusCode != 204 || body != "" {
		t.Fatalf("204: %d %q", resp.StatusCode, body)
	}
	// The HEAD and 204 responses had no body: the next request on the
	// connection is read from the right place.
	resp, body = roundTrip(t, c, br, "GET /after-head HTTP/1.1\r\nHost: h\r\n\r\n")
	if e2 := decodeEnv(t, body); resp.StatusCode != 200 || e2.PathInfo != "/after-head" {
		t.Fatalf("after HEAD: %d %q", resp.StatusCode, body)
	}
}

// wsgi.file_wrapper sends a file whole; the app's directory is first on
// sys.path, and the runner's (the private runtime directory) is not on it.
func TestWSGIRunnerFileAndSysPath(t *testing.T) {
	r := startWSGIRunner(t, "wsgitestapp", "1")
	c := r.dial(t)
	br := bufio.NewReader(c)
	want, err := os.ReadFile(filepath.Join(r.dir, "wsgitestapp.py"))
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := roundTrip(t, c, br, "GET /file HTTP/1.1\r\nHost: h\r\n\r\n"); resp.StatusCode != 200 || body != string(want) {
		t.Fatalf("file_wrapper: %d, %d bytes, want %d", resp.StatusCode, len(body), len(want))
	}
	_, body := roundTrip(t, c, br, "GET /sys-path HTTP/1.1\r\nHost: h\r\n\r\n")
	path := strings.Split(body, "\n")
	if path[0] != r.dir || slices.Contains(path, filepath.Join(r.dir, "run")) {
		t.Fatalf("sys.path = %q, want the app's directory %q first and not the runtime directory", path, r.dir)
	}
}

// strip_prefix: the proxy already sent the path below the prefix, so the
// prefix is not SCRIPT_NAME (else the app would put it in URLs twice).
func TestWSGIRunnerStripPrefix(t *testing.T) {
	r := startWSGIRunner(t, "wsgitestapp", "1", "--strip-prefix")
	c := r.dial(t)
	_, body := roundTrip(t, c, bufio.NewReader(c), "GET /mysite/x HTTP/1.1\r\nHost: h\r\nX-Forwarded-Prefix: /mysite\r\n\r\n")
	if e := decodeEnv(t, body); e.ScriptName != "" || e.PathInfo != "/mysite/x" {
		t.Fatalf("SCRIPT_NAME %q PATH_INFO %q, want \"\" and /mysite/x", e.ScriptName, e.PathInfo)
	}
}

// An app that raises gets a 500 and a closed connection, its traceback goes
// to the log, and the next connection is served; the iterable's close() is
// called when the body ends and when it fails half-way.
func TestWSGIRunnerAppErrors(t *testing.T) {
	r := startWSGIRunner(t, "wsgitestapp", "1")
	c := r.dial(t)
	br := bufio.NewReader(c)
	resp, _ := roundTrip(t, c, br, "GET /boom HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp.StatusCode != 500 || !resp.Close {
		t.Fatalf("raising app: %d, close %v; want 500 and Connection: close", resp.StatusCode, resp.Close)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("connection after a 500: %v, want EOF", err)
	}
	peertest.Eventually(t, 5*time.Second, "the traceback in the log", func() bool {
		return strings.Contains(r.log(), "RuntimeError: boom")
	})

	c = r.dial(t)
	br = bufio.NewReader(c)
	if resp, body := roundTrip(t, c, br, "GET /closing HTTP/1.1\r\nHost: h\r\n\r\n"); resp.StatusCode != 200 || body != "one,two" {
		t.Fatalf("closing iterable: %d %q", resp.StatusCode, body)
	}
	io.WriteString(c, "GET /closing-fail HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err == nil {
		if b, err := io.ReadAll(resp.Body); err == nil {
			t.Fatalf("a body that failed half-way ended cleanly: %q", b)
		}
	}
	peertest.Eventually(t, 5*time.Second, "close() called for both responses", func() bool {
		b, _ := os.ReadFile(filepath.Join(r.dir, "closed.txt"))
		return string(b) == "/closing\n/closing-fail\n"
	})
	c = r.dial(t)
	if resp, _ := roundTrip(t, c, bufio.NewReader(c), "GET /env HTTP/1.1\r\nHost: h\r\n\r\n"); resp.StatusCode != 200 {
		t.Fatalf("after the failures: %d", resp.StatusCode)
	}
}

// Hostile input straight on the socket: each malformed request gets a 400
// and a closed connection, and the runner goes on serving.
func TestWSGIRunnerRejectsMalformed(t *testing.T) {
	r := startWSGIRunner(t, "wsgitestapp", "1")
	cases := []struct{ name, raw string }{
		{"obs-fold", "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n folded\r\n\r\n"},
		{"tab fold", "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\tfolded\r\n\r\n"},
		{"two spaces in request line", "GET  / HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"no version", "GET /\r\nHost: h\r\n\r\n"},
		{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: h\r\n\r\n"},
		{"bad method", "G@T / HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"absolute-form target", "GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"control byte in target", "GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"header without colon", "GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n"},
		{"empty header name", "GET / HTTP/1.1\r\n: v\r\n\r\n"},
		{"space in header name", "GET / HTTP/1.1\r\nBad Name: v\r\n\r\n"},
		{"space before colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n"},
		{"NUL in value", "GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n"},
		{"bare CR in value", "GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n"},
		{"negative Content-Length", "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"},
		{"Content-Length not a number", "POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n"},
		{"two Content-Lengths", "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"},
		{"unknown Transfer-Encoding", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"},
		{"chunked and Content-Length", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"},
		{"chunk size not hex", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"},
		{"chunk without its CRLF", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n"},
		{"header over 1 MiB", "GET / HTTP/1.1\r\nX-A: " + strings.Repeat("a", 1<<20+10)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := r.dial(t)
			go io.WriteString(c, tc.raw) // may fail once the runner has closed
			got, _ := io.ReadAll(c)
			if !bytes.HasPrefix(got, []byte("HTTP/1.1 400 ")) {
				t.Fatalf("answer %q, want a 400 and EOF", got)
			}
			good := r.dial(t)
			if resp, _ := roundTrip(t, good, bufio.NewReader(good), "GET /env HTTP/1.1\r\nHost: h\r\n\r\n"); resp.StatusCode != 200 {
				t.Fatalf("next request: %d", resp.StatusCode)
			}
		})
	}
}

// A client that sends half a request header does not hold up a worker: with
// one worker, another connection is answered meanwhile (the selector loop
// reads headers without blocking), and the slow request is answered once
// complete.
func TestWSGIRunnerSlowHeaderDoesNotBlock(t *testing.T) {
	r := startWSGIRunner(t, "wsgitestapp", "1")
	slow := r.dial(t)
	io.WriteString(slow, "GET /slow HTTP/1.1\r\nHost: h\r\n")
	fast := r.dial(t)
	if resp, _ := roundTrip(t, fast, bufio.NewReader(fast), "GET /fast HTTP/1.1\r\nHost: h\r\n\r\n"); resp.StatusCode != 200 {
		t.Fatalf("fast request: %d", resp.StatusCode)
	}
	if resp, body := roundTrip(t, slow, bufio.NewReader(slow), "\r\n"); resp.StatusCode != 200 || decodeEnv(t, body).PathInfo != "/slow" {
		t.Fatalf("slow request: %d %q", resp.StatusCode, body)
	}
}

// A client stalled in the middle of its body holds one worker (a request is
// read to its end before the app is called); the other worker joins (the
// first is busy, and --spare 0 whatever the machine's load) and serves the
// next connection.
func TestWSGIRunnerSlowBodyLeavesOtherWorker(t *testing.T) {
	r := startWSGIRunner(t, "wsgitestapp", "2", "--spare", "0")
	slow := r.dial(t)
	io.WriteString(slow, "POST /slow HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabcde")
	// The stalled worker may have accepted a connection just before it
	// read the body; a new one then goes to the free worker.
	var body string
	for try := 0; body == "" && try < 5; try++ {
		fast := r.dial(t)
		fast.SetDeadline(time.Now().Add(2 * time.Second))
		io.WriteString(fast, "GET /fast HTTP/1.1\r\nHost: h\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(fast), nil)
		if err != nil {
			continue
		}
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode == 200 {
			body = string(b)
		}
	}
	if body == "" {
		t.Fatal("no worker answered while one client stalled in its body")
	}
	resp, body2 := roundTrip(t, slow, bufio.NewReader(slow), "fghij")
	if e := decodeEnv(t, body2); resp.StatusCode != 200 || e.Body != "abcdefghij" || e.PID == decodeEnv(t, body).PID {
		t.Fatalf("slow request: %d %+v, served by the fast one's worker %d", resp.StatusCode, e, decodeEnv(t, body).PID)
	}
}

// SIGTERM to the process group (what the supervisor sends): the request in
// hand is finished and answered, then every process exits.
func TestWSGIRunnerGracefulStop(t *testing.T) {
	r := startWSGIRunner(t, "wsgitestapp", "2")
	c := r.dial(t)
	io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: h\r\n\r\n")
	peertest.Eventually(t, 10*time.Second, "the app to start the request", func() bool {
		_, err := os.Stat(filepath.Join(r.dir, "started"))
		return err == nil
	})
	if err := syscall.Kill(-r.cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(r.dir, "go"), nil, 0o600)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the request in hand at SIGTERM: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "finished" || !resp.Close {
		t.Fatalf("the request in hand at SIGTERM: %d %q, Connection: close %v (want 200, finished, true)", resp.StatusCode, b, resp.Close)
	}
	peertest.Eventually(t, 10*time.Second, "the runner to exit after SIGTERM", func() bool {
		return syscall.Kill(r.cmd.Process.Pid, 0) != nil || processState(r.cmd.Process.Pid) == "Z"
	})
}

// processState is the state letter of pid from /proc ("" when gone).
func processState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// A worker that dies is replaced, and the others serve meanwhile.
func TestWSGIRunnerRestartsDeadWorker(t *testing.T) {
	r := startWSGIRunner(t, "wsgitestapp", "2")
	master := r.cmd.Process.Pid
	var before []int
	peertest.Eventually(t, 10*time.Second, "two workers", func() bool {
		before = peertest.Children(master)
		return len(before) == 2
	})
	if err := syscall.Kill(before[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	peertest.Eventually(t, 10*time.Second, "a new worker in place of the killed one", func() bool {
		now := peertest.Children(master)
		return len(now) == 2 && !slices.Contains(now, before[0])
	})
	for range 4 {
		c := r.dial(t)
		if resp, _ := roundTrip(t, c, bufio.NewReader(c), "GET /env HTTP/1.1\r\nHost: h\r\n\r\n"); resp.StatusCode != 200 {
			t.Fatalf("after a worker died: %d", resp.StatusCode)
		}
	}
}

// An app that cannot be imported stops the runner before it listens, with
// the traceback in its output: the supervisor then sees a failed start, not
// a socket that answers nothing.
func TestWSGIRunnerImportFailure(t *testing.T) {
	python := peertest.Need(t, "python3")[0]
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "brokenapp.py"), []byte("import no_such_module_fcgishim\n"), 0o600)
	runner, err := writeWSGIRunner(dir)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "app.sock")
	cmd := exec.Command(python, runner, "--socket", sock, "--app", "brokenapp", "--workers", "1")
	cmd.Dir = dir
	out, err := runWithDeadline(cmd, 20*time.Second)
	if err == nil || !strings.Contains(out, "No module named 'no_such_module_fcgishim'") {
		t.Fatalf("runner with a broken app: %v\n%s", err, out)
	}
	if _, err := os.Stat(sock); err == nil {
		t.Fatal("the socket exists although the app was never loaded")
	}
}

// runWithDeadline runs cmd and returns its output; past d it is killed.
func runWithDeadline(cmd *exec.Cmd, d time.Duration) (string, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(d):
		cmd.Process.Kill()
		<-done
		return out.String(), fmt.Errorf("still running after %s", d)
	}
}

// pidOf asks for path on a new connection (Connection: close) and returns
// the PID of the worker that answered.
func pidOf(r *wsgiRunnerProc, path string) (int, error) {
	c, err := net.Dial("unix", r.sock)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	var e wsgiEnv
	err = json.NewDecoder(resp.Body).Decode(&e)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return e.PID, err
}

// Under a light load only the first worker accepts connections: one
// Python process that stays busy serves them faster on a small machine than
// two taking turns beside the web server.
func TestWSGIRunnerOneWorkerWhenLight(t *testing.T) {
	r := startWSGIRunner(t, "wsgitestapp", "2")
	pids := map[int]int{}
	for range 30 {
		pid, err := pidOf(r, "/env")
		if err != nil {
			t.Fatal(err)
		}
		pids[pid]++
	}
	if len(pids) != 1 {
		t.Fatalf("30 light requests on new connections were answered by %d workers (%v), want 1", len(pids), pids)
	}
}

// When the first worker is busy all the time (and, with --spare 0, however
// loaded the machine running the test is), the second one joins.
func TestWSGIRunnerSecondWorkerJoinsUnderLoad(t *testing.T) {
	r := startWSGIRunner(t, "wsgitestapp", "2", "--spare", "0")
	var mu sync.Mutex
	pids := map[int]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				pid, err := pidOf(r, "/spin")
				mu.Lock()
				pids[pid] = err == nil
				mu.Unlock()
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	peertest.Eventually(t, 20*time.Second, "a second worker to answer under load", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(pids) == 2
	})
}

// A request that runs long does not hold up the requests queued behind it
// on its worker's other keep-alive connections, nor new connections: its
// worker hands the others to the free worker, which also starts accepting.
// Without the hand-off, B's request and C's connection wait for /wait.
func TestWSGIRunnerSlowRequestHandsOffNeighbours(t *testing.T) {
	r := startWSGIRunner(t, "wsgitestapp", "2")
	a, b := r.dial(t), r.dial(t)
	ar, br := bufio.NewReader(a), bufio.NewReader(b)
	_, bodyA := roundTrip(t, a, ar, "GET /env HTTP/1.1\r\nHost: h\r\n\r\n")
	_, bodyB := roundTrip(t, b, br, "GET /env HTTP/1.1\r\nHost: h\r\n\r\n")
	first := decodeEnv(t, bodyA).PID
	if pid := decodeEnv(t, bodyB).PID; pid != first {
		t.Fatalf("under a light load both connections should be the first worker's; got %d and %d", first, pid)
	}
	if _, err := io.WriteString(a, "GET /wait HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	peertest.Eventually(t, 10*time.Second, "the slow request to start", func() bool {
		_, err := os.Stat(filepath.Join(r.dir, "started"))
		return err == nil
	})

	b.SetDeadline(time.Now().Add(5 * time.Second))
	resp, body := roundTrip(t, b, br, "GET /env HTTP/1.1\r\nHost: h\r\n\r\n")
	if pid := decodeEnv(t, body).PID; resp.StatusCode != 200 || pid == first {
		t.Fatalf("queued request: status %d from worker %d, want 200 from the other worker than %d", resp.StatusCode, pid, first)
	}
	c := r.dial(t)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	resp, body = roundTrip(t, c, bufio.NewReader(c), "GET /env HTTP/1.1\r\nHost: h\r\n\r\n")
	if pid := decodeEnv(t, body).PID; resp.StatusCode != 200 || pid == first {
		t.Fatalf("new connection: status %d from worker %d, want 200 from the other worker than %d", resp.StatusCode, pid, first)
	}

	if err := os.WriteFile(filepath.Join(r.dir, "go"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	a.SetDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(ar, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(resp.Body); string(got) != "finished" {
		t.Fatalf("slow request answered %q, want finished", got)
	}
}
