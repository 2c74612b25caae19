// Command app is the benchmarks' upstream HTTP application: "Hello, world!"
// on GET, and on POST it reads the body and answers with its size and
// SHA-256, so an upload that passed through the shim can be checked.
// Usage: app unix:/path/app.sock | app 127.0.0.1:8000
package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
)

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: app unix:/path | host:port")
	}
	addr := os.Args[1]
	network := "tcp"
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", p
		os.Remove(addr)
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if r.Method == http.MethodPost {
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			fmt.Fprintf(w, "%d %x\n", n, h.Sum(nil))
			return
		}
		io.WriteString(w, "Hello, world!")
	})))
}
