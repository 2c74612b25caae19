// Command hello is the benchmark's application: "Hello, world!" served by
// the same serve loop (detection, gateway, FastCGI server) as mysite.fcgi, so the
// end-to-end benchmark measures the FastCGI path and nothing else.
package main

import (
	"io"
	"net/http"

	"github.com/fcgishim/fcgishim/serve"
)

func main() {
	serve.Main(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "Hello, world!")
	}))
}
