package handler

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/appctl"
	"github.com/fcgishim/fcgishim/config"
)

// The test binary plays three more roles, chosen before m.Run:
//
//	_supervise --config PATH        the supervisor, as main.go dispatches it
//	FCGISHIM_TEST_APP=switches      the child app: "<exe> app ADDR"
//	FCGISHIM_TEST_CLIENT=CONFIG     a copy of mysite.fcgi that asks for the
//	                                app once, prints its pid, then blocks
func TestMain(m *testing.M) {
	if len(os.Args) == 4 && os.Args[1] == "_supervise" && os.Args[2] == "--config" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		err := appctl.Supervise(ctx, os.Args[3], os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "supervise:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if sw := os.Getenv("FCGISHIM_TEST_APP"); sw != "" {
		testApp(sw, os.Args[len(os.Args)-1])
		os.Exit(0)
	}
	if cfg := os.Getenv("FCGISHIM_TEST_CLIENT"); cfg != "" {
		testClient(cfg)
		os.Exit(0)
	}
	// The race runtime sleeps 1s at exit by default; the supervisor's first
	// stage and every app exit would pay it.
	os.Setenv("GORACE", "atexit_sleep_ms=0 "+os.Getenv("GORACE"))
	os.Exit(m.Run())
}

// testApp is the child app. switches (comma separated): crash-at-start,
// slow-start=DUR, hang (never listens), ignore-term, noisy (floods stderr),
// warm=DUR (listens at once but holds requests until DUR after its start,
// like gunicorn whose workers are still importing the app; each request
// that had to wait appends "cold USER-AGENT HOST PATH" to $TEST_EVENTS).
// On start it appends its pid to $TEST_STARTS; on SIGTERM it appends
// "term PID" to $TEST_EVENTS.
func testApp(switches, addr string) {
	sw := map[string]string{}
	for _, s := range strings.Split(switches, ",") {
		k, v, _ := strings.Cut(s, "=")
		sw[k] = v
	}
	if p := os.Getenv("TEST_STARTS"); p != "" {
		appendLine(p, strconv.Itoa(os.Getpid()))
	}
	if _, ok := sw["crash-at-start"]; ok {
		fmt.Fprintln(os.Stderr, "crashing at start as asked")
		os.Exit(3)
	}
	if _, ok := sw["noisy"]; ok {
		for i := range 20000 {
			fmt.Fprintf(os.Stderr, "noise line %d\n", i)
		}
	}
	if d, ok := sw["slow-start"]; ok {
		dur, _ := time.ParseDuration(d)
		time.Sleep(dur) // the app's own behaviour under test, not synchronisation
	}
	if _, ok := sw["hang"]; ok {
		select {}
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	_, ignore := sw["ignore-term"]
	network := "tcp"
	if strings.HasPrefix(addr, "/") {
		network = "unix"
	} else if !strings.Contains(addr, ":") {
		addr = "127.0.0.1:" + addr
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(2)
	}
	var h http.Handler = http.HandlerFunc(testAppServe)
	if d, ok := sw["warm"]; ok {
		h = warming(h, d)
	}
	srv := &http.Server{Handler: h}
	go func() {
		for range term {
			if p := os.Getenv("TEST_EVENTS"); p != "" {
				appendLine(p, "term "+strconv.Itoa(os.Getpid()))
			}
			if !ignore {
				os.Exit(0)
			}
		}
	}()
	srv.Serve(l)
}

func appendLine(path, line string) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	f.WriteString(line + "\n")
	f.Close()
}

// echo is what the test app reports about a request.
type echo struct {
	PID     int         `json:"pid"`
	Method  string      `json:"method"`
	URI     string      `json:"uri"`
	Path    string      `json:"path"`
	Query   string      `json:"query"`
	Host    string      `json:"host"`
	Header  http.Header `json:"header"`
	BodyLen int64       `json:"body_len"`
	Env     []string    `json:"env,omitempty"`
}

func testAppServe(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	switch {
	case strings.HasSuffix(r.URL.Path, "/sse"):
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select { // hold the response open until the client leaves
		case <-r.Context().Done():
		case <-time.After(20 * time.Second):
		}
		fmt.Fprint(w, "data: late\n\n")
		return
	case strings.HasSuffix(r.URL.Path, "/crash"):
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, strings.Repeat("partial ", 100))
		w.(http.Flusher).Flush()
		os.Exit(4)
	case strings.HasSuffix(r.URL.Path, "/slow"):
		d, _ := time.ParseDuration(q.Get("d"))
		select {
		case <-r.Context().Done():
		case <-time.After(d):
		}
		fmt.Fprint(w, "slow done")
		return
	case strings.HasSuffix(r.URL.Path, "/download"):
		n, _ := strconv.ParseInt(q.Get("n"), 10, 64)
		w.Header().Set("Content-Type", "application/octet-stream")
		buf := make([]byte, 32<<10)
		for n > 0 {
			k := min(n, int64(len(buf)))
			w.Write(buf[:k])
			n -= k
		}
		return
	case strings.HasSuffix(r.URL.Path, "/bigheader"):
		n, _ := strconv.Atoi(q.Get("n"))
		for i := range atoi(q.Get("count")) {
			w.Header().Add("Set-Cookie", fmt.Sprintf("c%d=%s", i, strings.Repeat("x", n)))
		}
		fmt.Fprint(w, "big")
		return
	case strings.HasSuffix(r.URL.Path, "/redirect"):
		w.Header().Set("Set-Cookie", "c=3; Path=/")
		http.Redirect(w, r, q.Get("to"), http.StatusFound)
		return
	case strings.HasSuffix(r.URL.Path, "/headers"):
		h := w.Header()
		h.Set("X-Sendfile", "/etc/passwd")
		h.Set("X-Accel-Redirect", "/internal")
		h.Set("X-Accel-Buffering", "no")
		h.Set("X-LIGHTTPD-send-file", "/etc/shadow")
		h.Add("Set-Cookie", "a=1; Path=/mysite; HttpOnly")
		h.Add("Set-Cookie", "b=2")
		h.Set("Location", "/mysite/next/")
		h["Content-Type"] = nil // no Content-Type at all
		w.WriteHeader(http.StatusFound)
		w.Write([]byte("<script>x</script>"))
		return
	}
	n, _ := io.Copy(io.Discard, r.Body)
	e := echo{PID: os.Getpid(), Method: r.Method, URI: r.RequestURI, Path: r.URL.Path,
		Query: r.URL.RawQuery, Host: r.Host, Header: r.Header, BodyLen: n}
	if q.Get("env") != "" {
		e.Env = os.Environ()
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(e)
}

// testClient is a copy of mysite.fcgi in its own process, to be killed.
func testClient(configPath string) {
	cfg, err := config.Load(configPath)
	if err != nil {
		fmt.Println("error", err)
		return
	}
	site, err := New(Options{Config: cfg, Process: &Process{}, Executable: os.Args[0]})
	if err != nil {
		fmt.Println("error", err)
		return
	}
	rec := httptest.NewRecorder()
	site.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
	var e echo
	json.Unmarshal(rec.Body.Bytes(), &e)
	fmt.Println("pid", e.PID)
	select {}
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func warming(h http.Handler, d string) http.Handler {
	dur, _ := time.ParseDuration(d)
	warm := time.Now().Add(dur)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if wait := time.Until(warm); wait > 0 {
			if p := os.Getenv("TEST_EVENTS"); p != "" {
				appendLine(p, "cold "+r.UserAgent()+" "+r.Host+" "+r.URL.Path)
			}
			time.Sleep(wait) // the app's own warm-up under test, not synchronisation
		}
		h.ServeHTTP(w, r)
	})
}
