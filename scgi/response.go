package scgi

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/fcgishim/fcgishim/internal/connserver"
	"github.com/fcgishim/fcgishim/internal/httpsyntax"
)

// response writes a CGI-style response: "Status:" line, headers, blank line,
// body; the connection's end marks the end of the body.
type response struct {
	bw     *bufio.Writer
	req    *http.Request
	header http.Header

	status   int   // 0 until WriteHeader
	sent     bool  // header block handed to bw
	noBody   bool  // HEAD, 1xx, 204, 304: body bytes are discarded
	declared int64 // Content-Length the handler set, or -1
	written  int64 // body bytes accepted
	aborted  bool  // body broke its declared length: drop the connection
	err      error // first write error
}

func newResponse(bw *bufio.Writer, req *http.Request) *response {
	return &response{bw: bw, req: req, header: make(http.Header), declared: -1}
}

func (w *response) Header() http.Header { return w.header }

// HeaderSent reports whether the header block went out.
func (w *response) HeaderSent() bool { return w.sent }

// Reset forgets everything the handler did, for the 500 after a panic.
func (w *response) Reset() {
	w.header = make(http.Header)
	w.status, w.written, w.declared = 0, 0, -1
}

func (w *response) WriteHeader(code int) {
	if w.status != 0 || w.sent {
		return
	}
	if connserver.FinalStatus(code) { // 1xx is not relayed through CGI framing
		w.status = code
	}
}

func (w *response) Write(p []byte) (int, error) {
	if !w.sent {
		if w.status == 0 {
			w.status = http.StatusOK
		}
		w.sendHeader()
	}
	if w.noBody {
		if w.req.Method == http.MethodHead {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.err != nil {
		return 0, w.err
	}
	n := len(p)
	if w.declared >= 0 && w.written+int64(n) > w.declared {
		n = int(w.declared - w.written) // the declared body is complete: cut, do not abort
	}
	n, err := w.bw.Write(p[:n])
	w.written += int64(n)
	if err != nil {
		w.err = err
		return n, err
	}
	if n < len(p) {
		return n, errors.New("scgi: wrote more than the declared Content-Length")
	}
	return n, nil
}

// Flush sends the header if needed and everything buffered.
func (w *response) Flush() {
	if !w.sent {
		if w.status == 0 {
			w.status = http.StatusOK
		}
		w.sendHeader()
	}
	if w.err == nil {
		w.err = w.bw.Flush()
	}
}

// finish completes the response after the handler returned; a body shorter
// than its declared Content-Length is reported as an error.
func (w *response) finish() error {
	if !w.sent {
		if w.status == 0 {
			w.status = http.StatusOK
		}
		if w.declared < 0 && !w.noBodyStatus() && w.req.Method != http.MethodHead {
			w.header.Set("Content-Length", "0")
		}
		w.sendHeader()
	}
	if w.err == nil {
		w.err = w.bw.Flush()
	}
	if w.err != nil {
		return w.err
	}
	if !w.noBody && w.declared >= 0 && w.written < w.declared {
		w.aborted = true
		return fmt.Errorf("handler wrote %d of %d declared bytes", w.written, w.declared)
	}
	return nil
}

func (w *response) noBodyStatus() bool {
	return w.status < 200 || w.status == http.StatusNoContent || w.status == http.StatusNotModified
}

// sendHeader writes the header block to bw. A status that allows a body gets
// an explicit Content-Type, application/octet-stream plus nosniff if the
// handler set none: never a sniffed type.
func (w *response) sendHeader() {
	w.sent = true
	w.noBody = w.noBodyStatus() || w.req.Method == http.MethodHead
	h := w.header
	if n, set := connserver.PrepareHeader(h, w.status, !w.noBodyStatus()); set {
		w.declared = n
	}
	fmt.Fprintf(w.bw, "Status: %d %s\r\n", w.status, statusText(w.status))
	for _, k := range slices.Sorted(maps.Keys(h)) {
		if !connserver.PassHeader(k) {
			continue
		}
		for _, v := range h[k] {
			if httpsyntax.BadText(v) {
				continue
			}
			w.bw.WriteString(k)
			w.bw.WriteString(": ")
			w.bw.WriteString(strings.TrimSpace(v))
			w.bw.WriteString("\r\n")
		}
	}
	_, w.err = w.bw.WriteString("\r\n")
}

func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return t
	}
	return "status code " + strconv.Itoa(code)
}

// writeError answers a request that never reached the handler.
func writeError(c io.Writer, code int) {
	fmt.Fprintf(c, "Status: %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: %d\r\n\r\n%s\n",
		code, statusText(code), len(statusText(code))+1, statusText(code))
}

// abort drops the connection so the front end cannot mistake a truncated
// body for a complete one: on TCP, closing with linger 0 sends a reset.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
