package scgi

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// peerHandler answers what a front end's tests check: the request line as
// our handler saw it, selected CGI variables, and a digest of the body.
var peerHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p := Params(r)
	host := r.Host // Debian's scgi_params sends $host, without the port
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("X-Seen-Uri", r.URL.String())
	fmt.Fprintf(w, "%s %s host=%s x-test=%s proxy=%q remote=%t scgi=%s len=%d sha=%x\n",
		r.Method, r.URL, host, r.Header.Get("X-Test"), r.Header.Get("Proxy"),
		strings.HasPrefix(r.RemoteAddr, "127.0.0.1:"), p["SCGI"], len(body), sha256.Sum256(body))
})

// serveOn runs a Server on l for the test's lifetime.
func serveOn(t *testing.T, l net.Listener) {
	t.Helper()
	s := &Server{Handler: peerHandler}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != ErrServerClosed {
			t.Errorf("Serve = %v", err)
		}
	})
}

func listenTCP(t *testing.T) (net.Listener, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l, l.Addr().String()
}

// exercise runs the same checks through any front end at base.
func exercise(t *testing.T, base string, log func() string) {
	t.Helper()
	c := &http.Client{}
	do := func(method, path string, body []byte, hdr ...string) (int, http.Header, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", method, path, err, log())
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: read body: %v\n%s", method, path, err, log())
		}
		return resp.StatusCode, resp.Header, string(b)
	}

	code, h, body := do("GET", "/hello/world?x=1&y=%20", nil, "X-Test", "t1", "Proxy", "http://evil/")
	want := fmt.Sprintf("GET /hello/world?x=1&y=%%20 host=%s x-test=t1 proxy=\"\" remote=true scgi=1 len=0 sha=%x\n",
		"127.0.0.1", sha256.Sum256(nil))
	if code != 200 || body != want || h.Get("Content-Type") != "text/plain" {
		t.Fatalf("GET: %d %q %q\nwant %q\n%s", code, h, body, want, log())
	}

	post := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	code, _, body = do("POST", "/post", post)
	if want := fmt.Sprintf("len=%d sha=%x\n", len(post), sha256.Sum256(post)); code != 200 || !strings.HasSuffix(body, want) {
		t.Fatalf("POST: %d %q, want suffix %q\n%s", code, body, want, log())
	}

	code, h, body = do("GET", "/raw", nil)
	if code != 200 || h.Get("Content-Type") != "text/plain" || h.Get("X-Seen-Uri") != "/raw" {
		t.Fatalf("GET /raw: %d %q %q", code, h, body)
	}

	var wg sync.WaitGroup
	errs := make(chan string, 32)
	for i := range 32 {
		wg.Go(func() {
			resp, err := c.Get(fmt.Sprintf("%s/c?i=%d", base, i))
			if err != nil {
				errs <- err.Error()
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || !strings.HasPrefix(string(b), fmt.Sprintf("GET /c?i=%d ", i)) {
				errs <- fmt.Sprintf("request %d: %d %q", i, resp.StatusCode, b)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("concurrent: %s", e)
	}
}

func TestNginx(t *testing.T) {
	t.Run("tcp", func(t *testing.T) {
		l, addr := listenTCP(t)
		serveOn(t, l)
		s := peertest.Nginx(t, "", "location / { include /etc/nginx/scgi_params; scgi_pass "+addr+"; }")
		exercise(t, s.URL, s.Log)
	})
	t.Run("unix", func(t *testing.T) {
		sock := filepath.Join(peertest.Dir(t), "scgi.sock")
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		serveOn(t, l)
		s := peertest.Nginx(t, "", "location / { include /etc/nginx/scgi_params; scgi_pass unix:"+sock+"; }")
		exercise(t, s.URL, s.Log)
	})
}

func TestApacheProxySCGI(t *testing.T) {
	l, addr := listenTCP(t)
	serveOn(t, l)
	s := peertest.Apache(t, []string{"proxy", "proxy_scgi"}, "ProxyPass / scgi://"+addr+"/\n")
	exercise(t, s.URL, s.Log)
}

func TestLighttpdSCGI(t *testing.T) {
	l, addr := listenTCP(t)
	serveOn(t, l)
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	s := peertest.Lighttpd(t, fmt.Sprintf(`server.modules += ( "mod_scgi" )
scgi.server = ( "/" => (( "host" => "%s", "port" => %s, "check-local" => "disable" )) )
`, host, port))
	exercise(t, s.URL, s.Log)
}
