package fcgi

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestContentType_RESP01(t *testing.T) {
	tc := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/html":
			io.WriteString(w, "<html><script>alert(1)</script>")
		case "/typed":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			io.WriteString(w, "<p>ok</p>")
		case "/204":
			w.WriteHeader(204)
		}
	})})
	r := tc.do(1, reqParams("GET", "/html"), []byte{})
	if r.header.Get("Content-Type") != "application/octet-stream" || r.header.Get("X-Content-Type-Options") != "nosniff" ||
		r.header.Get("Content-Length") != "31" {
		t.Fatalf("got %q", r.raw)
	}
	r = tc.do(1, reqParams("GET", "/typed"), []byte{})
	if r.header.Get("Content-Type") != "text/html; charset=utf-8" || r.header.Get("X-Content-Type-Options") != "" {
		t.Fatalf("got %q", r.raw)
	}
	r = tc.do(1, reqParams("GET", "/empty"), []byte{})
	if r.raw != "Status: 200 OK\r\nContent-Length: 0\r\n\r\n" {
		t.Fatalf("got %q", r.raw)
	}
	r = tc.do(1, reqParams("GET", "/204"), []byte{})
	if r.raw != "Status: 204 No Content\r\n\r\n" {
		t.Fatalf("got %q", r.raw)
	}
}

func TestStatusLineOnce_RESP02(t *testing.T) {
	tc := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Status", "302 Found")
		w.WriteHeader(418)
		w.WriteHeader(200) // superfluous
	})})
	r := tc.do(1, reqParams("GET", "/"), []byte{}) // parseCGI rejects a second Status
	if r.status != 418 || !strings.HasPrefix(r.raw, "Status: 418 I'm a teapot\r\n") {
		t.Fatalf("got %q", r.raw)
	}
}

func TestHeaderInjection_RESP04(t *testing.T) {
	var log logBuf
	tc := serve(t, &Server{ErrorLog: log.logger(), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["X-Bad"] = []string{"a\r\nSet-Cookie: evil=1"}
		w.Header()["X-Bad-Lf"] = []string{"ok", "a\nb"}
		w.Header()["Bad Name"] = []string{"v"}
		w.Header()["Bad\r\nName"] = []string{"v"}
		w.Header().Set("X-Good", "fine")
		io.WriteString(w, "body")
	})})
	r := tc.do(1, reqParams("GET", "/"), []byte{})
	if strings.Contains(r.raw, "evil") || strings.Contains(r.raw, "X-Bad") || strings.Contains(r.raw, "Name") ||
		r.header.Get("X-Good") != "fine" || r.body != "body" {
		t.Fatalf("got %q", r.raw)
	}
	if !strings.Contains(log.String(), "X-Bad") {
		t.Fatalf("not logged: %s", log.String())
	}
}

func TestContentLengthMismatch_RESP06(t *testing.T) {
	tc := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/long":
			w.Header().Set("Content-Length", "3")
			n, err := io.WriteString(w, "abcdef")
			if n != 3 || err != http.ErrContentLength {
				t.Errorf("Write = %d, %v", n, err)
			}
		case "/short":
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "abc")
		}
	})})
	r := tc.do(1, reqParams("GET", "/long"), []byte{})
	if r.body != "abc" || r.header.Get("Content-Length") != "3" {
		t.Fatalf("got %q", r.raw)
	}
	tc.write(requestBytes(1, true, reqParams("GET", "/short"), []byte{}))
	for {
		rec, err := tc.read()
		if err != nil {
			break // closed without END_REQUEST: the front end sees a failure
		}
		if rec.h.Type == typeEndRequest {
			t.Fatal("short body ended normally")
		}
	}
}

func TestHeadAndNoBody_RESP07(t *testing.T) {
	tc := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/304":
			w.WriteHeader(304)
		case "/204":
			w.WriteHeader(204)
		}
		if _, err := io.WriteString(w, "body bytes"); err != nil && r.Method == "HEAD" {
			t.Error(err)
		}
	})})
	r := tc.do(1, reqParams("HEAD", "/"), []byte{})
	if r.body != "" || r.header.Get("Content-Length") != "10" {
		t.Fatalf("HEAD: %q", r.raw)
	}
	for _, p := range []string{"/304", "/204"} {
		if r := tc.do(1, reqParams("GET", p), []byte{}); r.body != "" || r.header.Get("Content-Length") != "" {
			t.Fatalf("%s: %q", p, r.raw)
		}
	}
}
