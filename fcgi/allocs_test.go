//go:build !race

// The race detector allocates on its own, so this count holds only in a
// build without it: test.sh runs it so, beside the -race run.

package fcgi

import (
	"net/http"
	"testing"
)

// A request's own allocations on a keep-conn connection (the hello
// handler's Header().Set included): the request state, its params, the
// header map (two), the header values, the http.Request.
func TestServeAllocs(t *testing.T) {
	bc := newBenchClient(t, startServer(t, &Server{Handler: http.HandlerFunc(helloHandler)}))
	defer bc.c.Close()
	for range 10 {
		bc.roundTrip()
	}
	n := testing.AllocsPerRun(500, func() {
		if err := bc.roundTrip(); err != nil {
			t.Fatal(err)
		}
	})
	if n > 8 {
		t.Fatalf("%.1f allocations per request, want at most 8", n)
	}
}
