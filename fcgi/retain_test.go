package fcgi

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// describe is what a handler sees of r, as one string.
func describe(r *http.Request) string {
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s %s host=%s remote=%s cl=%d tls=%v",
		r.Method, r.URL, r.RequestURI, r.Proto, r.Host, r.RemoteAddr, r.ContentLength, r.TLS != nil)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%q", k, r.Header[k])
	}
	fmt.Fprintf(&b, " param=%s params=%d n=%s", Param(r, "REQUEST_URI"), len(Params(r)), Params(r)["HTTP_X_N"])
	return b.String()
}

// A handler may keep its request, and what it reaches, after returning:
// none of it may change while later requests on the connection are served,
// its context is done, and its body gives no more data. Every request
// differs from the others in each field, so reuse of any of the request's
// memory shows.
func TestHandlerKeepsRequest(t *testing.T) {
	type kept struct {
		r    *http.Request
		seen string
	}
	var mu sync.Mutex
	var all []kept
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("read body: %v", err)
		}
		mu.Lock()
		all = append(all, kept{r, describe(r) + " body=" + string(body)})
		mu.Unlock()
	})}
	tc := serve(t, s)
	const n = 12
	for i := range n {
		method, body := "GET", []byte{}
		extra := []string{"HTTP_X_N", strconv.Itoa(i), "REMOTE_ADDR", fmt.Sprintf("10.0.%d.%d", i, i),
			"REMOTE_PORT", strconv.Itoa(1000 + i), "HTTP_HOST", fmt.Sprintf("h%d.test", i),
			"HTTP_USER_AGENT", strings.Repeat("u", i+1), "HTTPS", map[bool]string{true: "on"}[i%3 == 0]}
		if i%2 == 1 {
			method, body = "POST", []byte(strings.Repeat("b", i))
			extra = append(extra, "CONTENT_LENGTH", strconv.Itoa(i), "CONTENT_TYPE", fmt.Sprintf("text/x%d", i))
		}
		if r := tc.do(1, reqParams(method, fmt.Sprintf("/k%d?q=%d", i, i), extra...), body); r.status != 200 {
			t.Fatalf("request %d: %s", i, r.raw)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(all) != n {
		t.Fatalf("%d requests served, want %d", len(all), n)
	}
	for i, k := range all {
		if !strings.Contains(k.seen, fmt.Sprintf("/k%d?q=%d", i, i)) || !strings.Contains(k.seen, fmt.Sprintf(" n=%d ", i)) {
			t.Fatalf("request %d was seen as %s", i, k.seen)
		}
		got := describe(k.r)
		var rest []byte
		var err error
		if k.r.Body != http.NoBody {
			rest, err = io.ReadAll(k.r.Body)
		}
		if got+" body=" != k.seen && got+" body="+strings.Repeat("b", i) != k.seen {
			t.Errorf("request %d changed after the handler returned:\nseen %s\nnow  %s", i, k.seen, got)
		}
		if len(rest) > 0 || (k.r.Body != http.NoBody && err == nil) {
			t.Errorf("request %d: body read after the handler returned gave %q, %v", i, rest, err)
		}
		select {
		case <-k.r.Context().Done(): // the last one may end just after its answer
		case <-time.After(5 * time.Second):
			t.Errorf("request %d: context not done after the handler returned", i)
		}
	}
}
