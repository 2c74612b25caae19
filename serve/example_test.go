package serve_test

import (
	"fmt"
	"net/http"

	"github.com/fcgishim/fcgishim/handler"
	"github.com/fcgishim/fcgishim/serve"
)

// A Go program serves its own handler the way mysite.fcgi serves a site:
// FastCGI on fd 0 under mod_fcgid, CGI, systemd sockets, or --listen /
// --http when started by hand; the mount prefix repaired; a touch of the
// binary restarts it without losing a request.
func Example() {
	serve.Main(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := handler.RequestOf(r)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "mounted at %q, you asked for %q\n", req.ScriptName, req.PathInfo)
	}))
}
