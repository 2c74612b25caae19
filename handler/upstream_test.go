package handler

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fcgishim/fcgishim/config"
)

// rawApp is an app written byte by byte, to hold the proxy's client to
// what HTTP/1.1 allows rather than to what Go's server forgives.
type rawApp struct {
	mu     sync.Mutex
	conns  int
	reqs   []*http.Request // as read, bodies read
	bodies []string
	closed chan struct{} // a token each time the app has closed a connection
}

// startRawApp serves each connection with serve until it returns false,
// then closes it. network is "unix" or "tcp"; the result is for [app]
// upstream.
func startRawApp(t *testing.T, network string, serve func(a *rawApp, c net.Conn, br *bufio.Reader) bool) (*rawApp, string) {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "app.sock")
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	a := &rawApp{closed: make(chan struct{}, 100)}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			a.mu.Lock()
			a.conns++
			a.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				br := bufio.NewReader(c)
				for serve(a, c, br) {
				}
				c.Close()
				a.closed <- struct{}{}
			}()
		}
	}()
	if network == "unix" {
		return a, "unix:" + addr
	}
	return a, "http://" + l.Addr().String()
}

// answer is a serve function for startRawApp: it reads each request and
// writes resp; keep says whether the connection stays open after it.
func answer(resp string, keep bool) func(*rawApp, net.Conn, *bufio.Reader) bool {
	return func(a *rawApp, c net.Conn, br *bufio.Reader) bool {
		if _, _, ok := a.readRequest(br); !ok {
			return false
		}
		io.WriteString(c, resp)
		return keep
	}
}

// readRequest reads one request and its body, and records both.
func (a *rawApp) readRequest(br *bufio.Reader) (*http.Request, string, bool) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, "", false
	}
	b, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, "", false
	}
	a.mu.Lock()
	a.reqs = append(a.reqs, req)
	a.bodies = append(a.bodies, string(b))
	a.mu.Unlock()
	return req, string(b), true
}

func (a *rawApp) counts() (conns, reqs int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.conns, len(a.reqs)
}

func upstreamSite(t *testing.T, upstream string) *Site {
	t.Helper()
	site, err := New(Options{Config: &config.Config{App: config.App{Upstream: upstream}}, Process: &Process{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { site.Close(context.Background()) })
	return site
}

func do(site http.Handler, method, target, body string) *httptest.ResponseRecorder {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	rec := httptest.NewRecorder()
	site.ServeHTTP(rec, httptest.NewRequest(method, target, r))
	return rec
}

// An app that closes every connection after one response, without saying
// so (as an app's keep-alive timeout does while a connection is idle): the
// pooled connection is dead when reused. A GET goes again on a new
// connection; a POST is never sent on one found dead, and never twice.
func TestUpstreamClosedIdleConnection(t *testing.T) {
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			app, up := startRawApp(t, network, func(a *rawApp, c net.Conn, br *bufio.Reader) bool {
				req, body, ok := a.readRequest(br)
				if !ok {
					return false
				}
				msg := req.Method + " " + body
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(msg), msg)
				return false
			})
			site := upstreamSite(t, up)
			for i, m := range []string{"GET", "POST", "GET", "POST", "POST", "GET"} {
				body := ""
				if m == "POST" {
					body = fmt.Sprint("form=", i)
				}
				rec := do(site, m, "/x", body)
				if want := m + " " + body; rec.Code != 200 || rec.Body.String() != want {
					t.Fatalf("request %d (%s): %d %q, want 200 %q", i, m, rec.Code, rec.Body, want)
				}
				<-app.closed // the connection in our pool is now closed at the other end
			}
			if _, n := app.counts(); n != 6 {
				t.Errorf("the app saw %d requests, want 6 (none twice)", n)
			}
		})
	}
}

// Without CONTENT_LENGTH a request usually has no body (a GET through
// FastCGI): it is not sent chunked. One that does have a body is.
func TestUpstreamUnknownLengthBody(t *testing.T) {
	app, up := startRawApp(t, "unix", answer("HTTP/1.1 204 No Content\r\n\r\n", true))
	site := upstreamSite(t, up)
	for _, body := range []string{"", "streamed body"} {
		req := httptest.NewRequest("GET", "/x", io.NopCloser(strings.NewReader(body)))
		req.ContentLength = -1
		rec := httptest.NewRecorder()
		site.ServeHTTP(rec, req)
		if rec.Code != 204 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	app.mu.Lock()
	defer app.mu.Unlock()
	if te := app.reqs[0].TransferEncoding; len(te) != 0 || app.reqs[0].ContentLength != 0 || app.bodies[0] != "" {
		t.Errorf("body-less request sent with Transfer-Encoding %q, length %d, body %q", te, app.reqs[0].ContentLength, app.bodies[0])
	}
	if te := app.reqs[1].TransferEncoding; len(te) != 1 || te[0] != "chunked" || app.bodies[1] != "streamed body" {
		t.Errorf("streamed request sent with Transfer-Encoding %q, body %q", te, app.bodies[1])
	}
}

// Hop-by-hop fields, and fields the other side names in Connection, stay
// on their own hop in both directions (RFC 9110 7.6.1).
func TestUpstreamHopByHopFields(t *testing.T) {
	app, up := startRawApp(t, "unix", answer("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: X-App-Private\r\n"+
		"X-App-Private: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok", true))
	site := upstreamSite(t, up)
	req := httptest.NewRequest("GET", "/x", nil)
	for k, v := range map[string]string{"Connection": "X-Client-Private", "X-Client-Private": "1", "Te": "trailers",
		"Upgrade": "websocket", "Keep-Alive": "300", "Proxy-Authorization": "Basic eDp5", "Expect": "100-continue", "X-Kept": "yes"} {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	site.ServeHTTP(rec, req)
	if rec.Code != 200 || rec.Body.String() != "ok" {
		t.Fatalf("%d %q", rec.Code, rec.Body)
	}
	for _, k := range []string{"Connection", "X-App-Private", "Keep-Alive"} {
		if v, ok := rec.Header()[k]; ok {
			t.Errorf("response field %s passed to the client: %q", k, v)
		}
	}
	if rec.Header().Get("X-Kept") != "yes" || rec.Header().Get("Content-Length") != "2" {
		t.Errorf("end-to-end response fields lost: %v", rec.Header())
	}
	app.mu.Lock()
	defer app.mu.Unlock()
	got := app.reqs[0].Header
	for _, k := range []string{"X-Client-Private", "Te", "Upgrade", "Keep-Alive", "Proxy-Authorization", "Expect"} {
		if v, ok := got[k]; ok {
			t.Errorf("request field %s reached the app: %q", k, v)
		}
	}
	if got.Get("X-Kept") != "yes" {
		t.Errorf("end-to-end request field lost: %v", got)
	}
}

// An app may answer (413, say) before reading a large body, and close. The
// client gets that answer; nothing hangs; the connection is not reused.
func TestUpstreamEarlyAnswer(t *testing.T) {
	app, up := startRawApp(t, "unix", func(a *rawApp, c net.Conn, br *bufio.Reader) bool {
		req, err := http.ReadRequest(br)
		if err != nil {
			return false
		}
		a.mu.Lock()
		a.reqs = append(a.reqs, req)
		a.mu.Unlock()
		if req.Method == "POST" {
			io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nbig")
			return false
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	site := upstreamSite(t, up)
	rec := do(site, "POST", "/upload", strings.Repeat("x", 8<<20))
	if rec.Code != 413 || rec.Body.String() != "big" {
		t.Fatalf("%d %q", rec.Code, rec.Body)
	}
	if rec := do(site, "GET", "/after", ""); rec.Code != 200 {
		t.Fatalf("next request: %d %q", rec.Code, rec.Body)
	}
	if conns, _ := app.counts(); conns != 2 {
		t.Errorf("%d connections, want 2 (the one the app closed is not reused)", conns)
	}
}

// Interim 1xx responses (103 Early Hints) cannot pass through CGI; the
// final response does.
func TestUpstreamInterimResponses(t *testing.T) {
	_, up := startRawApp(t, "unix", answer("HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"+
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nfinal", true))
	rec := do(upstreamSite(t, up), "GET", "/x", "")
	if rec.Code != 200 || rec.Body.String() != "final" {
		t.Fatalf("%d %q", rec.Code, rec.Body)
	}
}

// A response header block without end is cut off at the limit: 502, not
// memory without bound.
func TestUpstreamEndlessHeader(t *testing.T) {
	_, up := startRawApp(t, "unix", func(a *rawApp, c net.Conn, br *bufio.Reader) bool {
		if _, _, ok := a.readRequest(br); !ok {
			return false
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		line := "X-Filler: " + strings.Repeat("f", 1000) + "\r\n"
		for range 10000 { // 10 MB, never ending the header
			if _, err := io.WriteString(c, line); err != nil {
				return false
			}
		}
		return false
	})
	rec := do(upstreamSite(t, up), "GET", "/x", "")
	if rec.Code != 502 {
		t.Fatalf("%d %q", rec.Code, rec.Body)
	}
}

// An app that answers before the client has finished sending its body
// ends the request at once: the proxy does not wait for the client's next
// bytes (which may never come) before it is done with the request.
func TestUpstreamEarlyAnswerSlowClient(t *testing.T) {
	_, up := startRawApp(t, "unix", func(a *rawApp, c net.Conn, br *bufio.Reader) bool {
		if _, err := http.ReadRequest(br); err != nil {
			return false
		}
		io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nbig")
		return false
	})
	site := upstreamSite(t, up)
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write(make([]byte, 1024)) // then nothing: a client that stalls
	req := httptest.NewRequest("POST", "/upload", pr)
	req.ContentLength = 1 << 20
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		site.ServeHTTP(rec, req)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not end after the app's answer: waiting for the client's body")
	}
	if rec.Code != 413 || rec.Body.String() != "big" {
		t.Fatalf("%d %q", rec.Code, rec.Body)
	}
}

// FastCGI cannot carry an upgraded stream (PROXY-03): an app that switches
// protocols anyway gets a 502, not a half-open tunnel.
func TestUpstreamSwitchingProtocolsIs502(t *testing.T) {
	_, up := startRawApp(t, "unix", answer("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", true))
	rec := do(upstreamSite(t, up), "GET", "/ws", "")
	if rec.Code != 502 {
		t.Fatalf("%d %q", rec.Code, rec.Body)
	}
}

// rawIO, the proxy's own reads and writes on a connection to the app,
// behaves as the net.Conn would: a write larger than the socket buffer
// waits for the reader and arrives whole, a read past the deadline is a
// timeout, a closed peer is io.EOF, and a write to it an error.
func TestRawIOLikeConn(t *testing.T) {
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	r := newRawIO(c)
	if r == nil {
		t.Fatal("no rawIO for a unix connection")
	}

	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	got := make(chan []byte)
	go func() { b, _ := io.ReadAll(io.LimitReader(peer, int64(len(big)))); got <- b }()
	if n, err := r.Write(big); n != len(big) || err != nil {
		t.Fatalf("write: %d, %v", n, err)
	}
	if b := <-got; !bytes.Equal(b, big) {
		t.Fatalf("peer got %d bytes, not what was written", len(b))
	}

	peer.Write([]byte("hello"))
	buf := make([]byte, 64)
	if n, err := r.Read(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read: %q, %v", buf[:n], err)
	}

	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := r.Read(buf); !isTimeout(err) || !strings.Contains(err.Error(), "read unix") {
		t.Fatalf("read past the deadline: %v, want a timeout that says what timed out", err)
	}
	c.SetReadDeadline(time.Time{})

	peer.Close()
	if n, err := r.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read after the peer closed: %d, %v, want io.EOF", n, err)
	}
	var werr error
	for i := 0; i < 100 && werr == nil; i++ { // the first write may still be accepted
		_, werr = r.Write([]byte("x"))
	}
	if werr == nil {
		t.Fatal("writes to a closed peer kept succeeding")
	}
}

// With [app] proxy_protocol a connection's PROXY line names one visitor:
// it is reused for that visitor's later requests and never for another's.
func TestUpstreamProxyProtocolReusePerVisitor(t *testing.T) {
	app, up := startRawApp(t, "unix", func(a *rawApp, c net.Conn, br *bufio.Reader) bool {
		line, err := br.ReadString('\n')
		if err != nil {
			return false
		}
		named := strings.Fields(line)
		for {
			if _, _, ok := a.readRequest(br); !ok {
				return false
			}
			body := named[2]
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
	site, err := New(Options{Config: &config.Config{App: config.App{Upstream: up, ProxyProtocol: true}}, Process: &Process{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { site.Close(context.Background()) })
	steps := []struct {
		remote    string
		wantConns int
	}{
		{"192.0.2.1:1000", 1},
		{"192.0.2.1:1001", 1}, // the same visitor: the same connection
		{"192.0.2.2:1000", 2}, // another visitor: a connection of its own
		{"192.0.2.1:1002", 2},
		{"192.0.2.2:1001", 2},
	}
	for _, s := range steps {
		req := httptest.NewRequest("GET", "/", nil)
		req.RemoteAddr = s.remote
		rec := httptest.NewRecorder()
		site.ServeHTTP(rec, req)
		ip, _, _ := net.SplitHostPort(s.remote)
		if rec.Code != 200 || rec.Body.String() != ip {
			t.Fatalf("request from %s: %d %q, want the app to see %s", s.remote, rec.Code, rec.Body, ip)
		}
		if conns, _ := app.counts(); conns != s.wantConns {
			t.Fatalf("after a request from %s: %d connections to the app, want %d", s.remote, conns, s.wantConns)
		}
	}
}

// Idle connections are closed once they have waited idleTimeout, with no
// later request to trigger it.
func TestConnPoolReapsWithoutTraffic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var p connPool
		var peers []net.Conn
		for _, key := range []string{"a", "a", "b"} {
			ours, theirs := net.Pipe()
			peers = append(peers, theirs)
			p.put(newUpConn(ours, key))
			time.Sleep(time.Second)
		}
		if n := p.count(); n != 3 {
			t.Fatalf("%d idle, want 3", n)
		}
		time.Sleep(idleTimeout - 2*time.Second) // the first has waited idleTimeout + 1s
		synctest.Wait()
		if n := p.count(); n != 1 {
			t.Fatalf("%d idle after the first two timed out, want 1", n)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if n := p.count(); n != 0 {
			t.Fatalf("%d idle after all timed out, want 0", n)
		}
		for i, c := range peers {
			if _, err := c.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("connection %d: read %v, want EOF (closed by the pool)", i, err)
			}
		}
		p.closeIdle(true)
	})
}
