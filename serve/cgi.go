package serve

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// serveOneCGI runs h for req and writes a CGI response (a Status line,
// headers, a blank line, the body) to out. Like the protocol servers, it
// never sniffs a Content-Type into text/html.
func serveOneCGI(h http.Handler, req *http.Request, out io.Writer) (err error) {
	rw := &cgiResponse{w: bufio.NewWriter(out), h: http.Header{}, head: req.Method == http.MethodHead}
	defer func() {
		if p := recover(); p != nil {
			if !rw.wrote {
				rw.h = http.Header{}
				rw.WriteHeader(http.StatusInternalServerError)
				io.WriteString(rw, "internal server error\n")
			}
			err = fmt.Errorf("cgi: handler panic: %v", p)
		}
		if !rw.wrote {
			rw.WriteHeader(http.StatusOK)
		}
		if ferr := rw.w.Flush(); err == nil {
			err = ferr
		}
	}()
	h.ServeHTTP(rw, req)
	return nil
}

type cgiResponse struct {
	w     *bufio.Writer
	h     http.Header
	wrote bool
	head  bool
	body  bool // the status allows a body
}

func (r *cgiResponse) Header() http.Header { return r.h }

func (r *cgiResponse) WriteHeader(code int) {
	if r.wrote {
		return
	}
	r.wrote = true
	r.body = code != http.StatusNoContent && code != http.StatusNotModified && code >= 200
	if r.h.Get("Content-Type") == "" && r.body {
		r.h.Set("Content-Type", "application/octet-stream")
		r.h.Set("X-Content-Type-Options", "nosniff")
	}
	fmt.Fprintf(r.w, "Status: %d %s\r\n", code, http.StatusText(code))
	for k, vs := range r.h {
		if strings.ContainsAny(k, "\r\n:") {
			continue
		}
		for _, v := range vs {
			if strings.ContainsAny(v, "\r\n\x00") {
				continue
			}
			fmt.Fprintf(r.w, "%s: %s\r\n", k, v)
		}
	}
	r.w.WriteString("\r\n")
}

func (r *cgiResponse) Write(p []byte) (int, error) {
	if !r.wrote {
		if r.h.Get("Content-Type") == "" {
			r.h.Set("Content-Type", "application/octet-stream")
			r.h.Set("X-Content-Type-Options", "nosniff")
		}
		r.WriteHeader(http.StatusOK)
	}
	if r.head || !r.body {
		return len(p), nil
	}
	return r.w.Write(p)
}

func (r *cgiResponse) Flush() {
	if !r.wrote {
		r.WriteHeader(http.StatusOK)
	}
	r.w.Flush()
}
