package serve

import (
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"
)

// limitConcurrency lets at most n requests run at once (runfcgi's
// maxchildren for method=threaded); the rest wait their turn.
func limitConcurrency(h http.Handler, n int) http.Handler {
	sem := make(chan struct{}, n)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case sem <- struct{}{}:
		case <-r.Context().Done():
			return
		}
		defer func() { <-sem }()
		h.ServeHTTP(w, r)
	})
}

// debugPanics turns a handler panic into a traceback page, as flup's
// debug=true did. Only for runfcgi debug=true: it shows code paths.
func debugPanics(h http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			p := recover()
			if p == nil || p == http.ErrAbortHandler {
				if p != nil {
					panic(p)
				}
				return
			}
			stack := debug.Stack()
			log.Error("handler panic", "panic", fmt.Sprint(p), "path", r.URL.Path)
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, "Unhandled panic (debug=true shows this page; turn it off in production):\n\n%v\n\n%s", p, stack)
		}()
		h.ServeHTTP(w, r)
	})
}

// logSlow warns about each request still running after d, and logs its
// total time when it ends ([limits] slow_request, like PHP-FPM's slowlog).
// Only the method and path are logged: a query string can carry tokens.
func logSlow(h http.Handler, d time.Duration, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		method, path := r.Method, r.URL.Path
		logged := make(chan struct{})
		t := time.AfterFunc(d, func() {
			log.Warn("slow request: still running", "method", method, "path", path, "after", d)
			close(logged)
		})
		defer func() {
			if !t.Stop() {
				<-logged
				log.Warn("slow request: done", "method", method, "path", path,
					"took", time.Since(start).Round(time.Millisecond))
			}
		}()
		h.ServeHTTP(w, r)
	})
}
