package fcgi

import (
	"fmt"
	"io"
	"net/http"
	"testing"
)

// echo answers with the method, URI and body it saw.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "%s %s body=%q err=%v", r.Method, r.RequestURI, b, err)
})

func TestBasic(t *testing.T) {
	tc := serve(t, &Server{Handler: echo})
	r := tc.do(1, reqParams("GET", "/a?b=c"), []byte{})
	if r.status != 200 || r.body != `GET /a?b=c body="" err=<nil>` {
		t.Fatalf("got %q", r.raw)
	}
	r = tc.do(1, reqParams("POST", "/p", "CONTENT_LENGTH", "5"), []byte("hello"))
	if r.status != 200 || r.body != `POST /p body="hello" err=<nil>` {
		t.Fatalf("got %q", r.raw)
	}
	t.Logf("%q", r.raw)
}
