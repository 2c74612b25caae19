package fcgi

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
)

// show renders what a handler sees of its request.
var show = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	var keys []string
	for k := range r.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var hs []string
	for _, k := range keys {
		hs = append(hs, k+"="+strings.Join(r.Header[k], ","))
	}
	fmt.Fprintf(w, "method=%s url=%s path=%s query=%s proto=%s/%d.%d host=%s remote=%s tls=%v cl=%d uri=%s headers=%s",
		r.Method, r.URL, r.URL.Path, r.URL.RawQuery, r.Proto, r.ProtoMajor, r.ProtoMinor, r.Host, r.RemoteAddr,
		r.TLS != nil, r.ContentLength, r.RequestURI, strings.Join(hs, ";"))
})

func TestRequestFromParams(t *testing.T) {
	tc := serve(t, &Server{Handler: show})
	cases := []struct {
		name   string
		params []string
		want   []string // substrings
	}{
		{"nginx", reqParams("GET", "/a/b?x=1&y=%20"), []string{
			"method=GET", "path=/a/b", "query=x=1&y=%20", "proto=HTTP/1.1/1.1", "host=example.test",
			"remote=127.0.0.1:54321", "tls=false", "cl=-1", "uri=/a/b?x=1&y=%20", "Accept=*/*", "User-Agent=test"}},
		{"escaped path", reqParams("GET", "/a%2Fb/c%20d"), []string{"path=/a/b/c d", "url=/a%2Fb/c%20d"}},
		{"no REQUEST_URI", reqParams("GET", "", "SCRIPT_NAME", "/app", "PATH_INFO", "/x", "QUERY_STRING", "q=1"), []string{"path=/app/x", "query=q=1"}},
		{"no HTTP_HOST", dropParam(reqParams("GET", "/"), "HTTP_HOST"), []string{"host=localhost"}},
		{"no REMOTE_PORT", dropParam(reqParams("GET", "/"), "REMOTE_PORT"), []string{"remote=127.0.0.1 "}},
		{"IPv6 remote", reqParams("GET", "/", "REMOTE_ADDR", "::1"), []string{"remote=[::1]:54321"}},
		{"HTTP/1.0", reqParams("GET", "/", "SERVER_PROTOCOL", "HTTP/1.0"), []string{"proto=HTTP/1.0/1.0"}},
		{"HTTP/2.0", reqParams("GET", "/", "SERVER_PROTOCOL", "HTTP/2.0"), []string{"proto=HTTP/2.0/2.0"}},
		{"no SERVER_PROTOCOL", dropParam(reqParams("GET", "/"), "SERVER_PROTOCOL"), []string{"proto=HTTP/1.1/1.1"}},
		{"headers", reqParams("GET", "/", "HTTP_X_FOO_BAR", "v", "HTTP_COOKIE", "a=1; b=2", "CONTENT_TYPE", "text/x"),
			[]string{"Content-Type=text/x", "Cookie=a=1; b=2", "X-Foo-Bar=v"}},
		{"content length", reqParams("POST", "/", "CONTENT_LENGTH", "0"), []string{"cl=0", "Content-Length=0"}},
	}
	for _, c := range cases {
		r := tc.do(1, c.params, []byte{})
		for _, w := range c.want {
			if !strings.Contains(r.body+" ", w) {
				t.Errorf("%s: want %q in %q", c.name, w, r.body)
			}
		}
	}
}

func dropParam(p []string, name string) []string {
	var out []string
	for i := 0; i+1 < len(p); i += 2 {
		if p[i] != name {
			out = append(out, p[i], p[i+1])
		}
	}
	return out
}

func TestHTTPProxyDropped_PARAM01(t *testing.T) {
	tc := serve(t, &Server{Handler: show})
	r := tc.do(1, reqParams("GET", "/", "HTTP_PROXY", "http://evil:1"), []byte{})
	if strings.Contains(r.body, "Proxy") || strings.Contains(r.body, "evil") {
		t.Fatal(r.body)
	}
}

func TestDuplicateParams_PARAM03(t *testing.T) {
	tc := serve(t, &Server{Handler: show})
	for _, name := range []string{"REMOTE_ADDR", "REMOTE_USER", "AUTH_TYPE", "HTTPS", "CONTENT_LENGTH", "SERVER_NAME", "SERVER_PORT", "REMOTE_PORT"} {
		p := append(reqParams("GET", "/"), name, "1", name, "2")
		if r := tc.do(1, p, []byte{}); r.status != 400 {
			t.Errorf("duplicate %s: got %q", name, r.raw)
		}
	}
	// Other duplicates: the last value wins, deterministically.
	p := append(reqParams("GET", "/"), "HTTP_X_A", "1", "HTTP_X_A", "2")
	if r := tc.do(1, p, []byte{}); r.status != 200 || !strings.Contains(r.body, "X-A=2") {
		t.Errorf("got %q", r.raw)
	}
}

func TestJoinedHeaderKept_PARAM04(t *testing.T) {
	tc := serve(t, &Server{Handler: show})
	r := tc.do(1, reqParams("GET", "/", "HTTP_X_FORWARDED_FOR", "1.1.1.1, 2.2.2.2"), []byte{})
	if !strings.Contains(r.body, "X-Forwarded-For=1.1.1.1, 2.2.2.2") {
		t.Fatal(r.body)
	}
}

func TestContentLength_PARAM05(t *testing.T) {
	tc := serve(t, &Server{Handler: show})
	for _, cl := range []string{"-1", "+5", " 5", "5 ", "5,5", "1e3", "0x10", "99999999999999999999", "9223372036854775808"} {
		if r := tc.do(1, reqParams("POST", "/", "CONTENT_LENGTH", cl), []byte{}); r.status != 400 {
			t.Errorf("CONTENT_LENGTH %q: got %q", cl, r.raw)
		}
	}
	if r := tc.do(1, reqParams("POST", "/", "CONTENT_LENGTH", "9223372036854775807"), []byte{}); r.status != 200 {
		t.Errorf("max int64: %q", r.raw)
	}
}

func TestFramingHeadersDropped_PARAM06(t *testing.T) {
	tc := serve(t, &Server{Handler: show})
	p := reqParams("POST", "/", "CONTENT_LENGTH", "0",
		"HTTP_CONTENT_LENGTH", "100", "HTTP_TRANSFER_ENCODING", "chunked", "HTTP_CONNECTION", "close",
		"HTTP_UPGRADE", "h2c", "HTTP_TE", "trailers", "HTTP_EXPECT", "100-continue", "HTTP_KEEP_ALIVE", "1",
		"HTTP_PROXY_CONNECTION", "x")
	r := tc.do(1, p, []byte{})
	for _, h := range []string{"Transfer-Encoding", "Connection", "Upgrade", "Te=", "Expect", "Keep-Alive", "Proxy-Connection", "Content-Length=100"} {
		if strings.Contains(r.body, h) {
			t.Errorf("%s reached the handler: %s", h, r.body)
		}
	}
	if !strings.Contains(r.body, "Content-Length=0") {
		t.Error(r.body)
	}
}

func TestCRLFRejected_PARAM07(t *testing.T) {
	tc := serve(t, &Server{Handler: show})
	for _, p := range [][]string{
		reqParams("GET", "/", "HTTP_X_FOO", "a\r\nTransfer-Encoding: chunked"),
		reqParams("GET", "/", "HTTP_X_FOO", "a\nb"),
		reqParams("GET", "/", "HTTP_X_FOO", "a\x00b"),
		reqParams("GET", "/", "HTTP_HOST", "evil\r\nX: y"),
		reqParams("GET", "/a\r\nb"),
		reqParams("GET", "/a\x00"),
	} {
		if r := tc.do(1, p, []byte{}); r.status != 400 {
			t.Errorf("got %q", r.raw)
		}
	}
}

func TestHTTPS_PARAM11(t *testing.T) {
	tc := serve(t, &Server{Handler: show})
	for v, want := range map[string]bool{"on": true, "ON": true, "1": true, "off": false, "": false} {
		r := tc.do(1, reqParams("GET", "/", "HTTPS", v, "HTTP_X_FORWARDED_PROTO", "https"), []byte{})
		if got := strings.Contains(r.body, "tls=true"); got != want {
			t.Errorf("HTTPS=%q: %s", v, r.body)
		}
	}
}

func TestBadMethodOrProtocol_PARAM12(t *testing.T) {
	tc := serve(t, &Server{Handler: show})
	for _, p := range [][]string{
		dropParam(reqParams("GET", "/"), "REQUEST_METHOD"),
		reqParams("G ET", "/"),
		reqParams("GET", "/", "SERVER_PROTOCOL", "HTTP/9"),
		reqParams("GET", "/", "SERVER_PROTOCOL", "garbage"),
		reqParams("GET", "not a uri"),
	} {
		if r := tc.do(1, p, []byte{}); r.status != 400 {
			t.Errorf("got %q", r.raw)
		}
	}
}

func TestParamsAccessor_PARAM13(t *testing.T) {
	tc := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := Params(r)
		fmt.Fprintf(w, "%s|%s|%s|%s|%s|%d", p["SCRIPT_NAME"], p["PATH_INFO"], p["REMOTE_USER"], p["APP_KEY"], p["HTTP_PROXY"], len(p))
		if Params(r.WithContext(r.Context())) == nil {
			t.Error("Params lost through WithContext")
		}
		for k, v := range p {
			if got := Param(r, k); got != v {
				t.Errorf("Param(%s) = %q, Params has %q", k, got, v)
			}
		}
		if got := Param(r, "NOT_SENT"); got != "" {
			t.Errorf("Param(NOT_SENT) = %q", got)
		}
	})})
	p := reqParams("GET", "/sub/app.fcgi/x", "SCRIPT_NAME", "/sub/app.fcgi", "PATH_INFO", "/x", "REMOTE_USER", "bob", "APP_KEY", "s3cret")
	r := tc.do(1, p, []byte{})
	if want := fmt.Sprintf("/sub/app.fcgi|/x|bob|s3cret||%d", len(p)/2); r.body != want {
		t.Fatalf("got %q want %q", r.body, want)
	}
	if Params(&http.Request{}) != nil || Param(&http.Request{}, "SCRIPT_NAME") != "" {
		t.Fatal("Params of a foreign request")
	}
}
