package ajp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Set-Cookie", "a=1")
	w.Header().Set("X-Foo", strings.Repeat("x", 37))
	io.WriteString(w, "ok")
})

// echo describes the request it got: one line of facts, sorted headers,
// then the body or its read error.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	body, err := io.ReadAll(r.Body)
	fmt.Fprintf(w, "%s %s %s host=%s remote=%s tls=%t len=%d\n", r.Method, r.URL, r.Proto, r.Host, r.RemoteAddr, r.TLS != nil, r.ContentLength)
	for _, k := range slices.Sorted(maps.Keys(r.Header)) {
		fmt.Fprintf(w, "%s: %s\n", k, strings.Join(r.Header[k], ","))
	}
	fmt.Fprintf(w, "body=%q err=%v", body, err)
})

func ok(body string) string {
	return fmt.Sprintf("HEADERS 200 OK [Content-Length: %d, Content-Type: text/plain]\nBODY %q\nEND 1", len(body), body)
}

const okGet = "GET / HTTP/1.1 host=example.com remote=192.0.2.1:5555 tls=false len=-1\nbody=\"\" err=<nil>"

func refused(status int) string {
	text := http.StatusText(status)
	return fmt.Sprintf("HEADERS %d %s [Content-Type: text/plain; charset=utf-8, Content-Length: %d, X-Content-Type-Options: nosniff]\nBODY %q\nEND 0",
		status, text, len(text)+1, text+"\n")
}

// getEOF is the GET_BODY_CHUNK our echo handler sends for a body of unknown
// length, with the front end's empty answer.
var askAll = "GET 8186\n"

// requestTests: raw packets in, our packets (described) out.
var requestTests = []struct {
	id, in, want string
}{
	{"get", cat(get("/").bytes(), chunk("")), askAll + ok(okGet)},
	{"AJP-03 cping before and between", cat(cping, get("/").bytes(), chunk(""), cping, get("/").bytes(), chunk(""), cping),
		"CPONG\n" + askAll + ok(okGet) + "\nCPONG\n" + askAll + ok(okGet) + "\nCPONG"},
	{"AJP-04 shutdown packet closes", cat([]byte{0x12, 0x34, 0, 1, typeShutdown}, cping), ""},
	{"AJP-04 body chunk first closes", cat(chunk("x"), cping), ""},
	{"AJP-04 empty packet closes", cat(packet(nil), cping), ""},
	{"AJP-04 unknown type after a request closes", cat(get("/").bytes(), chunk(""), packet([]byte{0x42}), cping), askAll + ok(okGet)},
	{"AJP-01 bad magic closes", cat([]byte("AB\x00\x01\x0a")), ""},
	{"query, ssl, attributes", cat(get("/p%20q").with(attr{attrQueryString, "", "a=1&b"}, attr{attrRemoteUser, "", "bob"}).bytes(), chunk("")),
		askAll + ok("GET /p%20q?a=1&b HTTP/1.1 host=example.com remote=192.0.2.1:5555 tls=false len=-1\nbody=\"\" err=<nil>")},
	{"PARAM-11 ssl", cat(func() request { r := get("/"); r.ssl = true; return r }().bytes(), chunk("")),
		askAll + ok(strings.Replace(okGet, "tls=false", "tls=true", 1))},
	{"stored method", cat(func() request {
		r := get("/")
		r.method = methodStored
		return r.with(attr{attrStoredMethod, "", "PATCH"})
	}().bytes(), chunk("")), askAll + ok(strings.Replace(okGet, "GET", "PATCH", 1))},
	{"headers coded and named", cat(get("/", hdr{0xA00E, "", "ua"}, hdr{0, "x-multi", "1"}, hdr{0, "X-Multi", "2"}, hdr{0xA009, "", "c=1"}).bytes(), chunk("")),
		askAll + ok(strings.Replace(okGet, "\nbody", "\nCookie: c=1\nUser-Agent: ua\nX-Multi: 1,2\nbody", 1))},
	{"PARAM-02 underscore header dropped", cat(get("/", hdr{0, "X_Remote_User", "admin"}).bytes(), chunk("")), askAll + ok(okGet)},
	{"PARAM-01 Proxy and framing headers dropped", cat(get("/", hdr{0, "Proxy", "http://evil"}, hdr{0, "Transfer-Encoding", "chunked"},
		hdr{0xA006, "", "keep-alive"}, hdr{0, "Upgrade", "h2c"}, hdr{0, "TE", "trailers"}, hdr{0, "Expect", "100-continue"},
		hdr{0, "Keep-Alive", "1"}).bytes(), chunk("")), askAll + ok(okGet)},
	{"PARAM-09 absolute URI same host", cat(get("http://example.com/x").bytes(), chunk("")), askAll + ok(strings.Replace(okGet, "GET /", "GET /x", 1))},

	{"AJP-08 content-length body arrives unasked", cat(post("/", 5).bytes(), chunk("hello")),
		ok("POST / HTTP/1.1 host=example.com remote=192.0.2.1:5555 tls=false len=5\nbody=\"hello\" err=<nil>")},
	{"AJP-08 content-length body in chunks", cat(post("/", 8).bytes(), chunk("hello"), chunk("abc")),
		"GET 3\n" + ok("POST / HTTP/1.1 host=example.com remote=192.0.2.1:5555 tls=false len=8\nbody=\"helloabc\" err=<nil>")},
	{"AJP-08 zero content-length sends nothing", cat(post("/", 0).bytes(), cping),
		ok("POST / HTTP/1.1 host=example.com remote=192.0.2.1:5555 tls=false len=0\nbody=\"\" err=<nil>") + "\nCPONG"},
	{"AJP-08 unknown length read until empty chunk", cat(func() request { r := get("/"); r.method = 4; return r }().bytes(), chunk("ab"), chunk("cd"), chunk("")),
		"GET 8186\nGET 8186\nGET 8186\n" + ok("POST / HTTP/1.1 host=example.com remote=192.0.2.1:5555 tls=false len=-1\nbody=\"abcd\" err=<nil>")},
	{"AJP-08 body cut short", cat(post("/", 8).bytes(), chunk("hello"), chunk("")),
		"GET 3\n" + ok("POST / HTTP/1.1 host=example.com remote=192.0.2.1:5555 tls=false len=8\nbody=\"hello\" err=unexpected EOF")},
	{"AJP-08 chunk larger than announced ends with reuse=0", cat(post("/", 2).bytes(), chunk("hello"), cping),
		"HEADERS 200 OK [Content-Length: 127, Content-Type: text/plain]\n" +
			"BODY \"POST / HTTP/1.1 host=example.com remote=192.0.2.1:5555 tls=false len=2\\nbody=\\\"\\\" err=ajp: body chunk of 5 bytes: malformed packet\"\nEND 0"},

	{"AJP-05 include attribute rejected", cat(get("/").with(attr{attrReqAttribute, "javax.servlet.include.request_uri", "/WEB-INF/web.xml"}).bytes(), cping),
		refused(403)},
	{"AJP-05 allowed attributes", cat(get("/").with(attr{attrReqAttribute, "AJP_LOCAL_ADDR", "127.0.0.1"}, attr{attrReqAttribute, "AJP_SSL_PROTOCOL", "TLSv1.3"},
		attr{attrReqAttribute, "JK_LB_ACTIVATION", "ACT"}, attr{attrSSLKeySize, "", "256"}, attr{attrRoute, "", "r1"}, attr{attrContext, "", "/c"},
		attr{attrServletPath, "", "/s"}, attr{attrSSLCipher, "", "x"}, attr{attrSSLSession, "", "y"}, attr{attrSSLCert, "", "z"}, attr{attrAuthType, "", "Basic"}).bytes(), chunk("")),
		askAll + ok(okGet)},
	{"AJP-07 two content-lengths", cat(post("/", 5, hdr{0xA008, "", "5"}).bytes(), chunk("hello")), refused(400)},
	{"AJP-09 null uri", cat(func() request { r := get("/"); r.nullURI = true; return r }().bytes()), refused(400)},
	{"AJP-09 string past the end", cat(packet(append(get("/").payload()[:4], 0x7F, 0xFF, 'x'))), refused(400)},
	{"AJP-09 missing NUL", cat(packet(bytes.Replace(get("/").payload(), []byte("HTTP/1.1\x00"), []byte("HTTP/1.1x"), 1))), refused(400)},
	{"AJP-09 header count too large", cat(packet(bytes.Replace(get("/").payload(), []byte{0, 1, 0xA0, 0x0B}, []byte{0, 9, 0xA0, 0x0B}, 1))), refused(400)},
	{"AJP-09 unknown header code", cat(get("/", hdr{0xA0FF, "", "x"}).bytes()), refused(400)},
	{"AJP-09 unknown attribute code", cat(get("/").with(attr{0x42, "", "x"}).bytes()), refused(400)},
	{"AJP-09 bytes after terminator", cat(packet(append(get("/").payload(), 0))), refused(400)},
	{"AJP-09 unknown method code", cat(func() request { r := get("/"); r.method = 99; return r }().bytes()), refused(400)},
	{"PARAM-07 CRLF in header", cat(get("/", hdr{0, "X-A", "a\r\nB: c"}).bytes()), refused(400)},
	{"PARAM-07 CR in uri", cat(get("/a\rb").bytes()), refused(400)},
	{"PARAM-07 NUL in host", cat(request{method: 2, proto: "HTTP/1.1", uri: "/", headers: []hdr{{0xA00B, "", "a\x00b"}}}.bytes()), refused(400)},
	{"PARAM-05 bad content-length", cat(post("/", 0, hdr{0, "X", "1"}).bytes()[:0], get("/", hdr{0xA008, "", "+5"}).bytes()), refused(400)},
	{"PARAM-09 absolute URI other host", cat(get("http://other/x").bytes()), refused(400)},
	{"PARAM-12 bad protocol", cat(func() request { r := get("/"); r.proto = "HTTP/9"; return r }().bytes()), refused(400)},
	{"two hosts", cat(get("/", hdr{0, "host", "b"}).bytes()), refused(400)},
	{"bad header name", cat(get("/", hdr{0, "X Y", "1"}).bytes()), refused(400)},
}

func TestRequests_AJP(t *testing.T) {
	for _, tt := range requestTests {
		t.Run(tt.id, func(t *testing.T) {
			got := describe(serveRaw(&Server{Handler: echo}, tt.in))
			if got != tt.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// A handler that ignores the body: the unasked chunk is swallowed, and the
// next request is parsed from the next packet, not from body bytes.
func TestUnreadBodySwallowed_AJP08(t *testing.T) {
	s := &Server{Handler: okHandler}
	smuggled := get("/admin").bytes()
	in := cat(post("/", len(smuggled)).bytes(), chunk(string(smuggled)), get("/next").bytes())
	got := describe(serveRaw(s, in))
	if strings.Count(got, "END 1") != 2 {
		t.Fatalf("want two responses, got\n%s", got)
	}
	var uris []string
	s = &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { uris = append(uris, r.URL.Path) })}
	serveRaw(s, in)
	if !slices.Equal(uris, []string{"/", "/next"}) {
		t.Fatalf("handled %q", uris)
	}
}

func TestUnknownAttributeRejected_AJP05(t *testing.T) {
	called := false
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called = true })}
	for _, name := range []string{"javax.servlet.include.request_uri", "javax.servlet.include.path_info",
		"javax.servlet.include.servlet_path", "ajp_remote_port", "SECRET", ""} {
		got := describe(serveRaw(s, cat(get("/").with(attr{attrReqAttribute, name, "/WEB-INF/web.xml"}).bytes(), cping)))
		if got != refused(403) || called {
			t.Fatalf("%q: got\n%s\ncalled=%t", name, got, called)
		}
	}
}

func TestSecret_AJP06(t *testing.T) {
	s := &Server{Handler: echo, Secret: "s3cret"}
	for _, tt := range []struct {
		id   string
		in   request
		want string
	}{
		{"missing", get("/"), refused(403)},
		{"wrong", get("/").with(attr{attrSecret, "", "s3creT"}), refused(403)},
		{"prefix", get("/").with(attr{attrSecret, "", "s3cre"}), refused(403)},
		{"right", get("/").with(attr{attrSecret, "", "s3cret"}), askAll + ok(okGet) + "\nCPONG"},
	} {
		t.Run(tt.id, func(t *testing.T) {
			got := describe(serveRaw(s, cat(tt.in.bytes(), chunk(""), cping)))
			if got != tt.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
	// Without a configured secret, one sent by the front end is ignored.
	s = &Server{Handler: echo}
	if got := describe(serveRaw(s, cat(get("/").with(attr{attrSecret, "", "x"}).bytes(), chunk("")))); got != askAll+ok(okGet) {
		t.Fatalf("got\n%s", got)
	}
}

func TestParams(t *testing.T) {
	var got map[string]string
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = Params(r) })}
	r := get("/app/x", hdr{0, "X-A", "1"}, hdr{0xA009, "", "a=1"}, hdr{0xA009, "", "b=2"}, hdr{0, "X_B", "2"}, hdr{0, "Proxy", "p"},
		hdr{0xA007, "", "text/x"})
	r.ssl = true
	serveRaw(s, cat(r.with(attr{attrQueryString, "", "q=1"}, attr{attrRemoteUser, "", "bob"}, attr{attrAuthType, "", "Basic"},
		attr{attrSecret, "", "hidden"}, attr{attrReqAttribute, "AJP_LOCAL_ADDR", "127.0.0.2"}).bytes()))
	want := map[string]string{
		"GATEWAY_INTERFACE": "AJP/1.3", "REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1",
		"REQUEST_URI": "/app/x?q=1", "QUERY_STRING": "q=1", "SCRIPT_NAME": "", "PATH_INFO": "/app/x",
		"REMOTE_ADDR": "192.0.2.1", "REMOTE_PORT": "5555", "SERVER_NAME": "example.com", "SERVER_PORT": "80",
		"SERVER_ADDR": "127.0.0.2", "HTTPS": "on", "REMOTE_USER": "bob", "AUTH_TYPE": "Basic",
		"HTTP_HOST": "example.com", "HTTP_X_A": "1", "HTTP_COOKIE": "a=1; b=2", "CONTENT_TYPE": "text/x",
	}
	if !maps.Equal(got, want) {
		t.Fatalf("Params =\n%q\nwant\n%q", got, want)
	}
	if Params(httptestRequest(t)) != nil {
		t.Fatal("Params of a foreign request is not nil")
	}
}

func httptestRequest(t *testing.T) *http.Request {
	r, err := http.NewRequest("GET", "http://x/", nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var responseTests = []struct {
	id      string
	method  byte
	handler http.HandlerFunc
	want    string
}{
	{"no headers", 2, func(w http.ResponseWriter, r *http.Request) {},
		"HEADERS 200 OK [Content-Length: 0, Content-Type: application/octet-stream, X-Content-Type-Options: nosniff]\nEND 1"},
	{"RESP-01 html not sniffed", 2, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>") },
		"HEADERS 200 OK [Content-Length: 6, Content-Type: application/octet-stream, X-Content-Type-Options: nosniff]\nBODY \"<html>\"\nEND 1"},
	{"AJP-10 CRLF header dropped, others kept", 2, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header()["X-Evil"] = []string{"a\r\nSet-Cookie: x"}
		w.Header()["X Bad"] = []string{"1"}
		w.Header().Set("X-Ok", "1")
		w.Header().Set("Status", "500")
		w.Header().Set("Connection", "close")
		w.Header().Set("Location", "/l")
		w.WriteHeader(302)
	}, "HEADERS 302 Found [Content-Length: 0, Content-Type: text/plain, Location: /l, X-Ok: 1]\nEND 1"},
	{"AJP-10 header overflowing the packet dropped", 2, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("X-Big", strings.Repeat("b", 9000))
		w.Header().Set("X-Small", "s")
	}, "HEADERS 200 OK [Content-Length: 0, Content-Type: text/plain, X-Small: s]\nEND 1"},
	{"AJP-10 304 with body", 2, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(304)
		if _, err := io.WriteString(w, "body"); err != http.ErrBodyNotAllowed {
			panic(err)
		}
	}, "HEADERS 304 Not Modified []\nEND 1"},
	{"RESP-07 HEAD", 3, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "4")
		io.WriteString(w, "body")
	}, "HEADERS 200 OK [Content-Length: 4, Content-Type: text/plain]\nEND 1"},
	{"RESP-06 longer than declared is cut", 2, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "3")
		io.WriteString(w, "hello")
	}, "HEADERS 200 OK [Content-Length: 3, Content-Type: text/plain]\nBODY \"hel\"\nEND 1"},
	{"RESP-06 shorter than declared is not ended", 2, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "9")
		io.WriteString(w, "hello")
	}, "HEADERS 200 OK [Content-Length: 9, Content-Type: text/plain]\nBODY \"hello\""},
	{"flush", 2, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "a")
		w.(http.Flusher).Flush()
		io.WriteString(w, "b")
	}, "HEADERS 200 OK [Content-Type: text/event-stream]\nBODY \"a\"\nBODY \"b\"\nEND 1"},
	{"panic before output", 2, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Secret", "1")
		panic("boom")
	}, "HEADERS 500 Internal Server Error [Content-Length: 0, Content-Type: application/octet-stream, X-Content-Type-Options: nosniff]\nEND 1"},
	{"panic after output", 2, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}, "HEADERS 200 OK [Content-Type: text/plain]"},
}

func TestResponses_AJP10_RESP(t *testing.T) {
	for _, tt := range responseTests {
		t.Run(tt.id, func(t *testing.T) {
			r := get("/")
			r.method = tt.method
			got := describe(serveRaw(&Server{Handler: tt.handler}, cat(r.bytes(), cping)))
			if want := tt.want; strings.HasSuffix(want, "END 1") {
				tt.want += "\nCPONG"
			}
			if got != tt.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// A body larger than a packet goes out in chunks of at most packetSize-8.
func TestLargeResponse_AJP10(t *testing.T) {
	for _, size := range []int{0, 8192, 16000, 65536} {
		body := bytes.Repeat([]byte("0123456789"), 10000)
		s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write(body)
		}), PacketSize: size}
		out := describe(serveRaw(s, string(get("/").bytes())))
		ps := s.packetSize()
		var got strings.Builder
		lines := strings.Split(out, "\n")
		for _, l := range lines[1 : len(lines)-1] {
			var chunk string
			if _, err := fmt.Sscanf(l, "BODY %q", &chunk); err != nil {
				t.Fatalf("size %d: line %q", size, l)
			}
			if len(chunk) > ps-8 {
				t.Fatalf("size %d: chunk of %d bytes", size, len(chunk))
			}
			got.WriteString(chunk)
		}
		if got.String() != string(body) || lines[len(lines)-1] != "END 1" {
			t.Fatalf("size %d: body differs or no END:\n%.300s", size, out)
		}
	}
}

// A large request body with PacketSize 16000 (Tomcat's testLargeBody).
func TestLargeBody_AJP08(t *testing.T) {
	body := strings.Repeat("abcdefghij", 5000)
	s := &Server{Handler: echo, PacketSize: 16000}
	in := []byte{}
	in = append(in, post("/", len(body)).bytes()...)
	for rest := body; len(rest) > 0; {
		n := min(len(rest), 16000-6)
		in = append(in, chunk(rest[:n])...)
		rest = rest[n:]
	}
	got := describe(serveRaw(s, string(in)))
	if !strings.Contains(got, fmt.Sprintf("len=%d", len(body))) || !strings.Contains(got, "GET 15994\nGET 15994\nGET 2018\n") ||
		!strings.HasSuffix(got, "END 1") || strings.Contains(got, "err=unexpected") {
		t.Fatalf("got\n%.500s", got)
	}
}

func TestBodyLimit(t *testing.T) {
	s := &Server{Handler: echo, MaxBodyBytes: 4}
	if got := describe(serveRaw(s, cat(post("/", 5).bytes(), chunk("hello")))); got != refused(413) {
		t.Fatalf("known length: got\n%s", got)
	}
	unknown := get("/")
	unknown.method = 4
	got := describe(serveRaw(s, cat(unknown.bytes(), chunk("hel"), chunk("lo"), cping)))
	if !strings.Contains(got, "err=http: request body too large") || !strings.HasSuffix(got, "END 1\nCPONG") {
		t.Fatalf("unknown length: got\n%s", got)
	}
}

// A CPing that arrives once Shutdown has begun gets no CPong: the
// connection closes instead of promising more requests.
func TestCPingWhileDraining_AJP03(t *testing.T) {
	s := &Server{Handler: echo}
	front, back := net.Pipe()
	defer front.Close()
	served := make(chan error, 1)
	go func() { served <- s.cs.ServeConn(context.Background(), back, s.newConn(back)) }()
	if _, err := front.Write(cping[:1]); err != nil { // the connection has begun its first packet
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); err != context.Canceled { // begins draining, does not wait
		t.Fatalf("Shutdown: %v, want context.Canceled", err)
	}
	go front.Write(cping[1:])
	got, err := io.ReadAll(front)
	if len(got) != 0 {
		t.Fatalf("answered %q while draining (err %v)", got, err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

func FuzzForwardRequest(f *testing.F) {
	for _, tt := range requestTests {
		f.Add([]byte(tt.in))
	}
	s := &Server{Handler: echo}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) >= 5 && in[4] == typeForwardRequest {
			if fr, err := decodeForwardRequest(in[4:]); err == nil {
				fr.newRequest(context.Background()) // must not panic
			}
		}
		out := describe(serveRaw(s, string(in)))
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "BAD") || strings.HasPrefix(l, "GARBAGE") || strings.HasPrefix(l, "SHORT") || strings.HasPrefix(l, "UNKNOWN") {
				t.Fatalf("malformed output %s for %q", l, in)
			}
		}
	})
}

// listen starts s on a loopback listener and returns its address.
func listen(t *testing.T, s *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != ErrServerClosed {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return l.Addr().String()
}

// readPackets reads our packets from c until an END_RESPONSE or CPONG.
func readUntilEnd(c net.Conn) (string, error) {
	var out []byte
	hdr := make([]byte, 4)
	for {
		if _, err := io.ReadFull(c, hdr); err != nil {
			return describe(string(out)), err
		}
		p := make([]byte, int(hdr[2])<<8|int(hdr[3]))
		if _, err := io.ReadFull(c, p); err != nil {
			return describe(string(out)), err
		}
		out = append(append(out, hdr...), p...)
		if len(p) > 0 && (p[0] == typeEndResponse || p[0] == typeCPongReply) {
			return describe(string(out)), nil
		}
	}
}

func TestKeepAliveAndShutdown_AJP03(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, r.URL.Path)
	})}
	addr := listen(t, s)
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.SetDeadline(time.Now().Add(10 * time.Second))
	for _, path := range []string{"/1", "/2"} {
		if _, err := idle.Write(get(path).bytes()); err != nil {
			t.Fatal(err)
		}
		if got, err := readUntilEnd(idle); err != nil || !strings.HasSuffix(got, "END 1") {
			t.Fatalf("%s: %v\n%s", path, err, got)
		}
	}
	if _, err := idle.Write(cping); err != nil {
		t.Fatal(err)
	}
	if got, err := readUntilEnd(idle); got != "CPONG" {
		t.Fatalf("cping: %q %v", got, err)
	}

	busy, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busy.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := busy.Write(get("/slow").bytes()); err != nil {
		t.Fatal(err)
	}
	<-entered
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()

	// The idle connection is closed; the busy one finishes with reuse=0.
	if n, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("idle connection: read %d, %v; want EOF", n, err)
	}
	close(release)
	if got, err := readUntilEnd(busy); err != nil || !strings.HasSuffix(got, "BODY \"/slow\"\nEND 0") {
		t.Fatalf("busy: %v\n%s", err, got)
	}
	if n, err := busy.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("busy connection after END 0: read %d, %v; want EOF", n, err)
	}
	busy.Close() // as a front end does on reuse=0; the server lingers until then
	select {
	case err := <-shut:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestConcurrentConnections(t *testing.T) {
	addr := listen(t, &Server{Handler: echo})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Go(func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			for j := range 5 {
				body := strings.Repeat(fmt.Sprint(i, j), 5000)
				if _, err := c.Write([]byte(cat(post("/", len(body)).bytes()))); err != nil {
					errs <- err
					return
				}
				for rest := body; len(rest) > 0; {
					n := min(len(rest), 8186)
					if _, err := c.Write(chunk(rest[:n])); err != nil {
						errs <- err
						return
					}
					rest = rest[n:]
				}
				got, err := readUntilEnd(c)
				if err != nil || !strings.Contains(got, fmt.Sprintf("len=%d", len(body))) || !strings.HasSuffix(got, "END 1") {
					errs <- fmt.Errorf("conn %d request %d: %v\n%.300s", i, j, err, got)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestServeAfterClose(t *testing.T) {
	s := &Server{Handler: echo}
	s.Close()
	s.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(l); err != ErrServerClosed {
		t.Fatalf("Serve = %v", err)
	}
}

func TestIdleTimeout(t *testing.T) {
	addr := listen(t, &Server{Handler: echo, IdleTimeout: 50 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(cping); err != nil {
		t.Fatal(err)
	}
	if got, err := readUntilEnd(c); got != "CPONG" {
		t.Fatalf("cping: %q %v", got, err)
	}
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read %v, want EOF from the idle timeout", err)
	}
}

// Close cancels a request's context and returns without waiting for its
// handler: one that ignores the context cannot hang a stop once Shutdown
// has given up.
func TestCloseCancelsRequests(t *testing.T) {
	entered, cancelled, release := make(chan struct{}), make(chan struct{}), make(chan struct{})
	defer close(release)
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		context.AfterFunc(r.Context(), func() { close(cancelled) })
		close(entered)
		<-release // ignores its context
	})}
	c, err := net.Dial("tcp", listen(t, s))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(get("/").bytes()); err != nil {
		t.Fatal(err)
	}
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the deadline: the handler is stuck", err)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for a handler that ignores its context")
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not cancel the request's context")
	}
}

// BenchmarkRequest serves one typical mod_proxy_ajp request per iteration on
// a reused connection, in memory.
func BenchmarkRequest(b *testing.B) {
	one := get("/a", hdr{0xA00E, "", "bench"}, hdr{0xA001, "", "*/*"}, hdr{0xA009, "", "a=1; b=2"}).
		with(attr{attrQueryString, "", "b=c"}).bytes()
	in := string(bytes.Repeat(one, 100))
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello")
	})}
	b.ReportAllocs()
	for b.Loop() {
		serveRaw(s, in)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/request")
}
