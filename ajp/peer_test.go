package ajp

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// peerHandler answers what the front-end tests check: the request as the
// handler saw it, the CGI view, and a digest of the body. /big answers 1 MiB.
var peerHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/big" {
		w.Header().Set("Content-Type", "application/x-big")
		w.Write(bytes.Repeat([]byte("0123456789abcdef"), 1<<16))
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p := Params(r)
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("X-Seen-Uri", r.URL.String())
	fmt.Fprintf(w, "%s %s x-test=%s proxy=%q remote=%t port=%t path_info=%s len=%d sha=%x\n",
		r.Method, r.URL, r.Header.Get("X-Test"), r.Header.Get("Proxy"),
		p["REMOTE_ADDR"] == "127.0.0.1", p["REMOTE_PORT"] != "", p["PATH_INFO"], len(body), sha256.Sum256(body))
})

// countingListener counts accepted connections, to observe reuse.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func serveOn(t *testing.T, s *Server) (*countingListener, string) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &countingListener{Listener: inner}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != ErrServerClosed {
			t.Errorf("Serve = %v", err)
		}
	})
	return l, inner.Addr().String()
}

type client struct {
	t    *testing.T
	base string
	log  func() string
	c    http.Client
}

func (c *client) do(method, path string, body io.Reader, hdr ...string) (int, http.Header, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.c.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v\n%s", method, path, err, c.log())
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v\n%s", method, path, err, c.log())
	}
	return resp.StatusCode, resp.Header, string(b)
}

// quirks are where a front end departs from mod_proxy_ajp. lighttpd 1.4.69's
// mod_ajp13 keeps no connection pool, sends no AJP_REMOTE_PORT, sends its
// SCRIPT_NAME (the path up to the second '/' for a "/" mapping) as req_uri,
// and frames request body packets without the 2-byte data length that the
// AJP13 spec and Tomcat require.
type quirks struct {
	noReuse, noRemotePort, scriptNameAsURI, rawBodyPackets bool
}

// exercise runs the checks every AJP front end must pass; l counts the
// connections it opened to us.
func exercise(t *testing.T, base string, log func() string, l *countingListener, q quirks) {
	t.Helper()
	c := &client{t: t, base: base, log: log}

	path := "/hello/world"
	if q.scriptNameAsURI {
		path = "/hello"
	}
	code, h, body := c.do("GET", path+"?x=1&y=%20", nil, "X-Test", "t1", "Proxy", "http://evil/", "X_Test", "underscore")
	want := fmt.Sprintf("GET %[1]s?x=1&y=%%20 x-test=t1 proxy=\"\" remote=true port=%[2]t path_info=%[1]s len=0 sha=%[3]x\n",
		path, !q.noRemotePort, sha256.Sum256(nil))
	if code != 200 || body != want || h.Get("Content-Type") != "text/plain" {
		t.Fatalf("GET: %d %q %q\nwant %q\n%s", code, h, body, want, log())
	}

	post := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	code, _, body = c.do("POST", "/post", bytes.NewReader(post))
	want = fmt.Sprintf("len=%d sha=%x\n", len(post), sha256.Sum256(post))
	switch {
	case q.rawBodyPackets && code == 200 && !strings.HasSuffix(body, want):
		t.Fatalf("POST 1 MiB: misread body accepted: %q", body)
	case q.rawBodyPackets:
		// Refused or read intact; never silently corrupted.
	case code != 200 || !strings.HasSuffix(body, want):
		t.Fatalf("POST 1 MiB: %d %q, want suffix %q\n%s", code, body, want, log())
	}

	code, h, body = c.do("GET", "/big", nil)
	if code != 200 || len(body) != 1<<20 || h.Get("Content-Type") != "application/x-big" {
		t.Fatalf("GET /big: %d %q, %d bytes", code, h, len(body))
	}

	code, _, body = c.do("HEAD", "/big", nil)
	if code != 200 || body != "" {
		t.Fatalf("HEAD: %d %q", code, body)
	}

	// Keep-alive: sequential requests reuse the front end's connections.
	before := l.n.Load()
	for i := range 20 {
		if code, _, body := c.do("GET", fmt.Sprintf("/seq?i=%d", i), nil); code != 200 || !strings.HasPrefix(body, fmt.Sprintf("GET /seq?i=%d ", i)) {
			t.Fatalf("sequential %d: %d %q", i, code, body)
		}
	}
	if opened := l.n.Load() - before; opened > 5 && !q.noReuse {
		t.Errorf("20 sequential requests opened %d connections: AJP connections not reused", opened)
	}

	var wg sync.WaitGroup
	errs := make(chan string, 32)
	for i := range 32 {
		wg.Go(func() {
			resp, err := c.c.Get(fmt.Sprintf("%s/c?i=%d", base, i))
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

func TestApacheProxyAJP(t *testing.T) {
	t.Run("no secret", func(t *testing.T) {
		l, addr := serveOn(t, &Server{Handler: peerHandler})
		a := peertest.Apache(t, []string{"proxy", "proxy_ajp"}, "ProxyPass / ajp://"+addr+"/\n")
		exercise(t, a.URL, a.Log, l, quirks{})
	})
	t.Run("secret", func(t *testing.T) {
		s := &Server{Handler: peerHandler, Secret: "s3cret"}
		l, addr := serveOn(t, s)
		_, addr2 := serveOn(t, s) // a second address: Apache shares workers per URL
		a := peertest.Apache(t, []string{"proxy", "proxy_ajp"}, "ProxyPass /wrong/ ajp://"+addr2+"/ secret=wrong\n"+
			"ProxyPass / ajp://"+addr+"/ secret=s3cret\n")
		exercise(t, a.URL, a.Log, l, quirks{})
		c := &client{t: t, base: a.URL, log: a.Log}
		if code, _, body := c.do("GET", "/wrong/x", nil); code != 403 {
			t.Fatalf("wrong secret: %d %q", code, body)
		}
		if code, _, _ := c.do("GET", "/after", nil); code != 200 {
			t.Fatalf("right secret after a refusal: %d", code)
		}
	})
	t.Run("AJP-05 attribute from SetEnv AJP_", func(t *testing.T) {
		_, addr := serveOn(t, &Server{Handler: peerHandler})
		a := peertest.Apache(t, []string{"proxy", "proxy_ajp", "env"}, "ProxyPass / ajp://"+addr+"/\n"+
			"<Location /ghost>\nSetEnv AJP_javax.servlet.include.request_uri /WEB-INF/web.xml\n</Location>\n")
		c := &client{t: t, base: a.URL, log: a.Log}
		if code, _, body := c.do("GET", "/ghost", nil); code != 403 {
			t.Fatalf("Ghostcat attribute: %d %q", code, body)
		}
		if code, _, _ := c.do("GET", "/fine", nil); code != 200 {
			t.Fatalf("plain request: %d", code)
		}
	})
	t.Run("chunked request body", func(t *testing.T) {
		_, addr := serveOn(t, &Server{Handler: peerHandler})
		a := peertest.Apache(t, []string{"proxy", "proxy_ajp"}, "ProxyPass / ajp://"+addr+"/\n")
		c := &client{t: t, base: a.URL, log: a.Log}
		body := strings.Repeat("chunked!", 4000)
		code, _, got := c.do("POST", "/chunked", io.MultiReader(strings.NewReader(body))) // unknown length: chunked
		if want := fmt.Sprintf("len=%d sha=%x\n", len(body), sha256.Sum256([]byte(body))); code != 200 || !strings.HasSuffix(got, want) {
			t.Fatalf("chunked POST: %d %q, want suffix %q\n%s", code, got, want, a.Log())
		}
	})
}

func TestLighttpdAJP13(t *testing.T) {
	l, addr := serveOn(t, &Server{Handler: peerHandler})
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	s := peertest.Lighttpd(t, fmt.Sprintf(`server.modules += ( "mod_ajp13" )
ajp13.server = ( "/" => (( "host" => "%s", "port" => %s, "check-local" => "disable" )) )
`, host, port))
	exercise(t, s.URL, s.Log, l, quirks{noReuse: true, noRemotePort: true, scriptNameAsURI: true, rawBodyPackets: true})
}
