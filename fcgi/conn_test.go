package fcgi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestSplitHeader_FCGI01(t *testing.T) {
	in := requestBytes(1, false, reqParams("POST", "/split", "CONTENT_LENGTH", "3"), []byte("abc"))
	whole := runConn(t, &Server{Handler: echo}, in)

	tc := serve(t, &Server{Handler: echo})
	for i := range in {
		tc.write(in[i : i+1]) // one byte per write: headers split everywhere
	}
	out, _ := tc.end(1)
	tc.expectClosed()
	r := parseCGI(t, out)
	if r.body != `POST /split body="abc" err=<nil>` {
		t.Fatalf("got %q", out)
	}
	if !bytes.Contains(whole, []byte(r.body)) {
		t.Fatalf("split and whole streams differ: %q vs %q", out, whole)
	}
}

// A handler that answers before the web server has sent all of the body
// (or the empty FCGI_STDIN ending it) must not make the server close with
// unread input: the kernel would reset the connection and the web server
// could lose the response it has not read yet. The connection half-closes
// and keeps discarding input until EOF.
func TestEarlyAnswerLingers(t *testing.T) {
	early := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "early")
	})
	tc := serve(t, &Server{Handler: early})
	body := bytes.Repeat([]byte("x"), 200<<10)
	all := requestBytes(1, false, reqParams("POST", "/early", "CONTENT_LENGTH", fmt.Sprint(len(body))), body)
	head := requestBytes(1, false, reqParams("POST", "/early", "CONTENT_LENGTH", fmt.Sprint(len(body))), nil)
	tc.write(head)
	out, _ := tc.end(1)
	if r := parseCGI(t, out); r.body != "early" {
		t.Fatalf("got %q", out)
	}
	tc.write(all[len(head):]) // fails with EPIPE/ECONNRESET if the server closed
	tc.expectClosed()
}

func TestVersion_FCGI02(t *testing.T) {
	var called atomic.Bool
	tc := serve(t, &Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called.Store(true) })})
	in := requestBytes(1, true, reqParams("GET", "/"), []byte{})
	in[0] = 2
	tc.write(in)
	tc.expectClosed()
	if called.Load() {
		t.Fatal("handler ran")
	}
}

func TestUnknownManagementType_FCGI03(t *testing.T) {
	tc := serve(t, &Server{Handler: echo})
	for _, typ := range []recType{0, 12, 255, typeStdin} {
		tc.write(rec(typ, 0, []byte("xyz"), 5))
		r, err := tc.read()
		if err != nil {
			t.Fatal(err)
		}
		if r.h.Type != typeUnknownType || r.h.ID != 0 || len(r.content) != 8 || recType(r.content[0]) != typ {
			t.Fatalf("type %d: got %+v %v", typ, r.h, r.content)
		}
	}
	if r := tc.do(1, reqParams("GET", "/after"), []byte{}); r.status != 200 {
		t.Fatalf("conn unusable: %q", r.raw)
	}
}

func TestBeginID0_FCGI04(t *testing.T) {
	var called atomic.Bool
	tc := serve(t, &Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called.Store(true) })})
	tc.write(requestBytes(0, true, reqParams("GET", "/"), []byte{}))
	tc.expectClosed()
	if called.Load() {
		t.Fatal("handler ran for id 0")
	}
}

func TestDuplicateBegin_FCGI05(t *testing.T) {
	tc := serve(t, &Server{Handler: echo})
	tc.write(rec(typeBeginRequest, 3, beginBody(roleResponder, flagKeepConn), 0))
	tc.c.Write(rec(typeBeginRequest, 3, beginBody(roleResponder, flagKeepConn), 0))
	tc.expectClosed()
}

func TestManyBegins_FCGI06(t *testing.T) {
	tc := serve(t, &Server{Handler: echo, MaxReqsPerConn: 4})
	for id := uint16(1); id <= 6; id++ {
		tc.write(rec(typeBeginRequest, id, beginBody(roleResponder, flagKeepConn), 0))
	}
	for _, id := range []uint16{5, 6} {
		if _, proto := tc.end(id); proto != statusOverloaded {
			t.Fatalf("id %d: protocol status %d, want FCGI_OVERLOADED", id, proto)
		}
	}
	// Finish one open request; its id frees a slot for a new one.
	tc.write(rec(typeAbortRequest, 1, nil, 0))
	tc.end(1)
	if r := tc.do(7, reqParams("GET", "/seven"), []byte{}); r.status != 200 {
		t.Fatalf("got %q", r.raw)
	}
}

func TestRoles_FCGI07(t *testing.T) {
	tc := serve(t, &Server{Handler: echo})
	for _, role := range []uint16{roleFilter, roleAuthorizer, 0, 9} {
		tc.write(rec(typeBeginRequest, 1, beginBody(role, flagKeepConn), 0))
		if _, proto := tc.end(1); proto != statusUnknownRole {
			t.Fatalf("role %d: protocol status %d", role, proto)
		}
		// The rest of that request is ignored.
		tc.write(rec(typeParams, 1, pairs("A", "b"), 0))
	}
	if r := tc.do(1, reqParams("GET", "/ok"), []byte{}); r.status != 200 {
		t.Fatalf("got %q", r.raw)
	}
	for _, n := range []int{7, 9, 0} {
		tc := serve(t, &Server{Handler: echo})
		tc.c.Write(rec(typeBeginRequest, 1, make([]byte, n), 0))
		tc.expectClosed()
	}
}

func TestParamsStraddle_FCGI08(t *testing.T) {
	tc := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s|%d", Params(r)["LONG"], len(Params(r)["HUGE"]))
	})})
	long := strings.Repeat("L", 300)
	pb := pairs(append(reqParams("GET", "/"), "LONG", long, "HUGE", strings.Repeat("h", 70000))...)
	var b []byte
	b = append(b, rec(typeBeginRequest, 1, beginBody(roleResponder, flagKeepConn), 0)...)
	// Cut inside a 4-byte length, inside a name and inside a value.
	for _, cut := range [][2]int{{0, 3}, {3, 17}, {17, len(pb) - 70010}, {len(pb) - 70010, len(pb) - 60000}, {len(pb) - 60000, len(pb)}} {
		chunk := pb[cut[0]:cut[1]]
		b = append(b, rec(typeParams, 1, chunk, 255-len(chunk)%200)...)
	}
	b = append(b, rec(typeParams, 1, nil, 0)...)
	b = append(b, rec(typeStdin, 1, nil, 0)...)
	tc.write(b)
	out, _ := tc.end(1)
	if r := parseCGI(t, out); r.body != long+"|70000" {
		t.Fatalf("got %q", r.body[:min(len(r.body), 50)])
	}
}

func TestParamsMalformed_FCGI08(t *testing.T) {
	for _, row := range pairRows {
		if !row.err {
			continue
		}
		t.Run(row.name, func(t *testing.T) {
			var called atomic.Bool
			tc := serve(t, &Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called.Store(true) })})
			// Good pairs first: they must not be served on their own.
			pb := append(pairs(reqParams("GET", "/")...), row.wire...)
			tc.write(rec(typeBeginRequest, 1, beginBody(roleResponder, flagKeepConn), 0))
			tc.write(rec(typeParams, 1, pb, 0))
			tc.write(rec(typeParams, 1, nil, 0))
			out, _ := tc.end(1)
			if r := parseCGI(t, out); r.status != 400 {
				t.Fatalf("got %q", out)
			}
			tc.expectClosed()
			if called.Load() {
				t.Fatal("handler ran with a partial parameter set")
			}
		})
	}
}

func TestParamsTooLarge_FCGI09(t *testing.T) {
	tc := serve(t, &Server{Handler: echo, MaxParamsBytes: 1024})
	tc.write(rec(typeBeginRequest, 1, beginBody(roleResponder, flagKeepConn), 0))
	tc.write(rec(typeParams, 1, pairs("A", strings.Repeat("a", 600)), 0))
	tc.write(rec(typeParams, 1, pairs("B", strings.Repeat("b", 600)), 0))
	out, _ := tc.end(1)
	if r := parseCGI(t, out); r.status != 431 {
		t.Fatalf("got %q", out)
	}
	tc.expectClosed()

	// A 1 GiB value announced but never sent is malformed, not allocated.
	tc = serve(t, &Server{Handler: echo})
	tc.write(rec(typeBeginRequest, 1, beginBody(roleResponder, flagKeepConn), 0))
	tc.write(rec(typeParams, 1, []byte("\x01\xc0\x00\x00\x00Xabc"), 0))
	tc.write(rec(typeParams, 1, nil, 0))
	out, _ = tc.end(1)
	if r := parseCGI(t, out); r.status != 400 {
		t.Fatalf("got %q", out)
	}
}

func TestPadding_FCGI10(t *testing.T) {
	for _, pad := range []int{0, 1, 7, 8, 200, 255} {
		tc := serve(t, &Server{Handler: echo})
		var b []byte
		b = append(b, rec(typeBeginRequest, 1, beginBody(roleResponder, flagKeepConn), pad)...)
		b = append(b, rec(typeParams, 1, pairs(reqParams("POST", "/pad", "CONTENT_LENGTH", "2")...), pad)...)
		b = append(b, rec(typeParams, 1, nil, pad)...)
		b = append(b, rec(typeStdin, 1, []byte("hi"), pad)...)
		b = append(b, rec(typeStdin, 1, nil, pad)...)
		b = append(b, rec(typeGetValues, 0, nil, pad)...)
		tc.write(b)
		out, _ := tc.end(1)
		if r := parseCGI(t, out); r.body != `POST /pad body="hi" err=<nil>` {
			t.Fatalf("pad %d: got %q", pad, out)
		}
		if r, err := tc.readMgmt(); err != nil || r.h.Type != typeGetValuesResult {
			t.Fatalf("pad %d: %+v %v", pad, r.h, err)
		}
	}
}

func TestLargeResponse_FCGI11(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320 000 bytes
	tc := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-test")
		w.Write(big[:1000])
		w.Write(big[1000:]) // one call far beyond 65535
	})})
	r := tc.do(1, reqParams("GET", "/big"), []byte{})
	if r.body != string(big) {
		t.Fatalf("body differs: %d bytes", len(r.body))
	}
}

func TestNoEmptyStdout_FCGI12(t *testing.T) {
	tc := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(nil)
		w.(http.Flusher).Flush()
		w.(http.Flusher).Flush()
		w.Write([]byte{})
		w.Write([]byte("x"))
		w.(http.Flusher).Flush()
		w.(http.Flusher).Flush()
		io.WriteString(w, "")
	})})
	tc.write(requestBytes(1, true, reqParams("GET", "/"), []byte{}))
	var empties int
	for {
		r, err := tc.read()
		if err != nil {
			t.Fatal(err)
		}
		if r.h.Type == typeStdout && len(r.content) == 0 {
			empties++
		}
		if r.h.Type == typeEndRequest {
			break
		}
	}
	if empties != 1 {
		t.Fatalf("%d empty STDOUT records, want only the final one", empties)
	}
}

func TestGetValues_FCGI13(t *testing.T) {
	tc := serve(t, &Server{Handler: echo, MaxConns: 7, MaxReqsPerConn: 3})
	ask := func(names ...string) map[string]string {
		t.Helper()
		var kv []string
		for _, n := range names {
			kv = append(kv, n, "")
		}
		tc.write(rec(typeGetValues, 0, pairs(kv...), 0))
		r, err := tc.read()
		if err != nil || r.h.Type != typeGetValuesResult || r.h.ID != 0 {
			t.Fatalf("%+v %v", r.h, err)
		}
		got, err := decodeAll(string(r.content))
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for i := 0; i < len(got); i += 2 {
			m[got[i]] = got[i+1]
		}
		return m
	}
	want := map[string]string{"FCGI_MAX_CONNS": "7", "FCGI_MAX_REQS": "3", "FCGI_MPXS_CONNS": "1"}
	if got := ask("FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS", "FCGI_UNKNOWN"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v", got)
	}
	tc.do(1, reqParams("GET", "/"), []byte{})
	if got := ask("FCGI_MAX_REQS"); fmt.Sprint(got) != "map[FCGI_MAX_REQS:3]" {
		t.Fatalf("got %v", got)
	}
	if got := ask("NOPE"); len(got) != 0 {
		t.Fatalf("got %v", got)
	}
	if r := tc.do(1, reqParams("GET", "/again"), []byte{}); r.status != 200 {
		t.Fatal(r.raw)
	}
}

func TestKeepConn_FCGI14(t *testing.T) {
	tc := serve(t, &Server{Handler: echo})
	for i := range 3 {
		if r := tc.do(1, reqParams("GET", fmt.Sprintf("/k%d", i)), []byte{}); !strings.Contains(r.body, fmt.Sprintf("/k%d", i)) {
			t.Fatal(r.raw)
		}
	}
	tc.write(requestBytes(1, false, reqParams("GET", "/last"), []byte{}))
	out, _ := tc.end(1)
	if !strings.Contains(out, "/last") {
		t.Fatal(out)
	}
	tc.expectClosed()
}

func TestAbortThenReuseID_FCGI15(t *testing.T) {
	started := make(chan struct{})
	cancelled := make(chan struct{})
	release := make(chan struct{})
	tc := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/new" {
			io.WriteString(w, "new response")
			return
		}
		io.WriteString(w, "old partial")
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
		close(cancelled)
		<-release
		// Everything after the abort must vanish.
		io.WriteString(w, "OLD LEAK")
		w.(http.Flusher).Flush()
		io.WriteString(w, "OLD LEAK 2")
	})})
	tc.write(requestBytes(1, true, reqParams("POST", "/old", "CONTENT_LENGTH", "100"), nil))
	tc.write(rec(typeStdin, 1, []byte("part of the body"), 0))
	<-started
	tc.write(rec(typeAbortRequest, 1, nil, 0))
	tc.end(1)
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("context not cancelled by FCGI_ABORT_REQUEST")
	}
	tc.write(requestBytes(1, true, reqParams("GET", "/new"), []byte{}))
	close(release)
	out, _ := tc.end(1)
	if r := parseCGI(t, out); r.body != "new response" {
		t.Fatalf("got %q", out)
	}
	// Nothing else may follow: a GET_VALUES answer must be the next record.
	tc.write(rec(typeGetValues, 0, nil, 0))
	if r, err := tc.read(); err != nil || r.h.Type != typeGetValuesResult {
		t.Fatalf("got %+v %q %v", r.h, r.content, err)
	}
}

func TestPeerCloseMidResponse_FCGI16(t *testing.T) {
	done := make(chan error, 1)
	tc := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for {
			if _, err := w.Write(make([]byte, 32<<10)); err != nil {
				break
			}
		}
		<-r.Context().Done()
		done <- r.Context().Err()
	})})
	tc.write(requestBytes(1, true, reqParams("GET", "/stream"), []byte{}))
	tc.read()
	tc.c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler not cancelled after the peer closed")
	}
}

func TestNoStdin_FCGI17(t *testing.T) {
	tc := serve(t, &Server{Handler: echo})
	for _, cl := range []string{"0"} {
		tc.write(requestBytes(1, true, reqParams("POST", "/nostdin", "CONTENT_LENGTH", cl), nil)) // no STDIN at all
		out, _ := tc.end(1)
		if r := parseCGI(t, out); r.body != `POST /nostdin body="" err=<nil>` {
			t.Fatalf("got %q", out)
		}
	}
	// Handlers that do not read the body run without any STDIN too.
	tc = serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hi") })})
	tc.write(requestBytes(1, true, reqParams("GET", "/"), nil))
	if out, _ := tc.end(1); !strings.HasSuffix(out, "hi") {
		t.Fatal(out)
	}
}

func TestTimeouts_FCGI18(t *testing.T) {
	tc := serve(t, &Server{Handler: echo, IdleTimeout: 50 * time.Millisecond})
	tc.expectClosed() // nothing sent

	tc = serve(t, &Server{Handler: echo, IdleTimeout: 50 * time.Millisecond})
	tc.do(1, reqParams("GET", "/"), []byte{})
	tc.expectClosed() // idle after a request

	tc = serve(t, &Server{Handler: echo, HeaderTimeout: 50 * time.Millisecond})
	tc.write(rec(typeBeginRequest, 1, beginBody(roleResponder, flagKeepConn), 0))
	tc.write(rec(typeParams, 1, pairs("A", "b"), 0)) // trickle, never finish
	tc.expectClosed()

	// RequestTimeout cancels a handler reading a body that never comes.
	tc = serve(t, &Server{Handler: echo, RequestTimeout: 50 * time.Millisecond})
	tc.write(requestBytes(1, true, reqParams("POST", "/slow", "CONTENT_LENGTH", "10"), nil))
	out, _ := tc.end(1)
	if !strings.Contains(out, "unexpected EOF") {
		t.Fatal(out)
	}
}

func TestBodyLength_FCGI19(t *testing.T) {
	tc := serve(t, &Server{Handler: echo, MaxBodyBytes: 8})
	cases := []struct {
		name, cl string
		stdin    []byte
		want     string
	}{
		{"longer", "3", []byte("abcdef"), `body="abc" err=<nil>`},
		{"shorter", "5", []byte("ab"), `body="ab" err=unexpected EOF`},
		{"absent streams to EOF", "", []byte("chunk"), `body="chunk" err=<nil>`},
		{"absent over MaxBodyBytes", "", []byte("0123456789"), `body="01234567" err=http: request body too large`},
	}
	for _, c := range cases {
		r := tc.do(1, reqParams("POST", "/b", "CONTENT_LENGTH", c.cl), c.stdin)
		if !strings.HasSuffix(r.body, c.want) {
			t.Errorf("%s: got %q", c.name, r.body)
		}
	}
	if r := tc.do(1, reqParams("POST", "/b", "CONTENT_LENGTH", "9"), []byte("012345678")); r.status != 413 {
		t.Errorf("over MaxBodyBytes: got %q", r.raw)
	}
	// Aborted mid-body: the handler sees a truncated body, not EOF.
	got := make(chan string, 1)
	tc = serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		got <- fmt.Sprintf("%q %v", b, err)
	})})
	tc.write(requestBytes(1, true, reqParams("POST", "/", "CONTENT_LENGTH", "10"), nil))
	tc.write(rec(typeStdin, 1, []byte("abc"), 0))
	tc.write(rec(typeAbortRequest, 1, nil, 0))
	tc.end(1)
	if s := <-got; s != `"abc" unexpected EOF` {
		t.Fatal(s)
	}
}
