//go:build !race

// The race detector allocates on its own, so these counts hold only in a
// build without it: test.sh runs them so, beside the -race run.

package fcgi

import (
	"io"
	"net/http"
	"runtime"
	"testing"
)

// A request's own allocations on a keep-conn connection (the hello
// handler's Header().Set included): the request (with its http.Request,
// URL, context, body reader and response writer inside), its params, the
// header map (two), the header values, the handler goroutine's start.
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
	if n > 7 {
		t.Fatalf("%.1f allocations per request, want at most 7", n)
	}
}

// A POST whose handler reads its small body allocates no more than a GET:
// the body reader lives in the request, and its pooled buffer goes back to
// the pool without a new pool entry each time.
func TestServeAllocsPost(t *testing.T) {
	h := func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		helloHandler(w, r)
	}
	bc := newBenchClient(t, startServer(t, &Server{Handler: http.HandlerFunc(h)}))
	defer bc.c.Close()
	bc.req = requestBytes(1, true, reqParams("POST", "/form",
		"CONTENT_LENGTH", "11", "CONTENT_TYPE", "application/x-www-form-urlencoded"), []byte("a=1&b=2&c=3"))
	for range 10 {
		bc.roundTrip()
	}
	n := testing.AllocsPerRun(500, func() {
		if err := bc.roundTrip(); err != nil {
			t.Fatal(err)
		}
	})
	if n > 7 {
		t.Fatalf("%.1f allocations per POST, want at most 7", n)
	}
}

// The bytes those allocations take, for the request of BenchmarkServe
// (nginx's variables, 410 bytes of params, two request headers): 704 for
// the request, 448 for the params, 400 for the header map, 32 for its
// values, 16 for the handler's header value and 16 for its goroutine.
func TestServeAllocsBytes(t *testing.T) {
	bc := newBenchClient(t, startServer(t, &Server{Handler: http.HandlerFunc(helloHandler)}))
	defer bc.c.Close()
	for range 10 {
		bc.roundTrip()
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const runs = 500
	least := uint64(1 << 62)
	for range 3 { // the least of three: anything else running only adds
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range runs {
			if err := bc.roundTrip(); err != nil {
				t.Fatal(err)
			}
		}
		runtime.ReadMemStats(&after)
		least = min(least, (after.TotalAlloc-before.TotalAlloc)/runs)
	}
	if least > 1640 {
		t.Fatalf("%d bytes allocated per request, want at most 1640", least)
	}
	t.Logf("%d bytes allocated per request", least)
}
