package ajp

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/fcgishim/fcgishim/internal/connserver"
	"github.com/fcgishim/fcgishim/internal/httpsyntax"
)

// responseHeaders maps response header names to their codes (0xA001 + index).
var responseHeaders = map[string]int{
	"Content-Type": 0xA001, "Content-Language": 0xA002, "Content-Length": 0xA003,
	"Date": 0xA004, "Last-Modified": 0xA005, "Location": 0xA006, "Set-Cookie": 0xA007,
	"Set-Cookie2": 0xA008, "Servlet-Engine": 0xA009, "Status": 0xA00A,
	"Www-Authenticate": 0xA00B,
}

// response writes SEND_HEADERS, SEND_BODY_CHUNKs and END_RESPONSE.
type response struct {
	c      *conn
	req    *http.Request
	header http.Header

	status   int
	sent     bool // SEND_HEADERS written
	noBody   bool
	declared int64 // Content-Length the handler set, or -1
	written  int64
	pending  []byte // body bytes not yet in a SEND_BODY_CHUNK
	aborted  bool   // body shorter than declared: close without END_RESPONSE
	err      error
}

func newResponse(c *conn, req *http.Request) *response {
	return &response{c: c, req: req, header: make(http.Header), declared: -1, pending: c.chunkBuf[:0]}
}

func (w *response) Header() http.Header { return w.header }

// HeaderSent reports whether SEND_HEADERS went out.
func (w *response) HeaderSent() bool { return w.sent }

// Reset forgets everything the handler did, for the 500 after a panic.
func (w *response) Reset() {
	w.header = make(http.Header)
	w.status, w.written, w.declared, w.pending = 0, 0, -1, w.pending[:0]
}

func (w *response) WriteHeader(code int) {
	if w.status != 0 || w.sent {
		return
	}
	if connserver.FinalStatus(code) { // 1xx has no AJP encoding
		w.status = code
	}
}

func (w *response) noBodyStatus() bool {
	return w.status == http.StatusNoContent || w.status == http.StatusNotModified
}

func (w *response) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.noBodyStatus() {
		return 0, http.ErrBodyNotAllowed
	}
	if w.req.Method == http.MethodHead {
		return len(p), nil
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.declared < 0 {
		if cl := w.header.Get("Content-Length"); cl != "" {
			if n, ok := httpsyntax.ParseLength(cl); ok {
				w.declared = n
			}
		}
	}
	n := len(p)
	if w.declared >= 0 && w.written+int64(n) > w.declared {
		n = int(w.declared - w.written)
	}
	for rest := p[:n]; len(rest) > 0; {
		k := copy(w.pending[len(w.pending):cap(w.pending)], rest)
		w.pending = w.pending[:len(w.pending)+k]
		rest = rest[k:]
		w.written += int64(k)
		if len(w.pending) == cap(w.pending) {
			if err := w.flushChunk(); err != nil {
				return n - len(rest), err
			}
		}
	}
	if n < len(p) {
		return n, errors.New("ajp: wrote more than the declared Content-Length")
	}
	return n, nil
}

// flushChunk sends the headers if needed and the pending body bytes.
func (w *response) flushChunk() error {
	if !w.sent {
		w.sendHeaders()
	}
	if len(w.pending) > 0 && w.err == nil && !w.noBody {
		w.err = w.c.writeBodyChunk(w.pending)
	}
	w.pending = w.pending[:0]
	return w.err
}

// Flush sends everything written so far to the front end.
func (w *response) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.flushChunk() == nil {
		w.err = w.c.flush()
	}
}

// finish completes the response; reuse is sent in END_RESPONSE. A body
// shorter than its declared length is not ended (aborted is set).
func (w *response) finish(reuse bool) error {
	if !w.sent {
		if w.status == 0 {
			w.status = http.StatusOK
		}
		// The whole body is pending: its length is known.
		if w.header.Get("Content-Length") == "" && !w.noBodyStatus() && w.req.Method != http.MethodHead {
			w.header.Set("Content-Length", strconv.Itoa(len(w.pending)))
		}
	}
	if err := w.flushChunk(); err != nil {
		return err
	}
	if !w.noBody && w.declared >= 0 && w.written < w.declared {
		w.aborted = true
		w.c.flush()
		return fmt.Errorf("handler wrote %d of %d declared bytes", w.written, w.declared)
	}
	if err := w.c.writeEndResponse(reuse); err != nil {
		return err
	}
	return w.c.flush()
}

// sendHeaders writes SEND_HEADERS. Values that cannot be carried safely (CR,
// LF, NUL) and headers that would overflow the packet are dropped (AJP-10).
func (w *response) sendHeaders() {
	w.sent = true
	w.noBody = w.noBodyStatus() || w.req.Method == http.MethodHead
	h := w.header
	if n, set := connserver.PrepareHeader(h, w.status, !w.noBodyStatus()); set {
		w.declared = n
	}
	e := &w.c.enc
	e.start(typeSendHeaders)
	e.int(w.status)
	e.string(statusText(w.status))
	countAt := len(e.b)
	e.int(0)
	count, limit := 0, w.c.packetSize
	for _, k := range slices.Sorted(maps.Keys(h)) {
		if !connserver.PassHeader(k) {
			continue
		}
		for _, v := range h[k] {
			v = strings.TrimSpace(v)
			size := 2 + len(v) + 3
			if _, coded := responseHeaders[k]; !coded {
				size += len(k) + 3
			}
			if httpsyntax.BadText(v) || len(e.b)+size > limit {
				w.c.srv.log().Warn("ajp: response header dropped", "name", k, "uri", w.req.RequestURI)
				continue
			}
			if code, ok := responseHeaders[k]; ok {
				e.int(code)
			} else {
				e.string(k)
			}
			e.string(v)
			count++
		}
	}
	e.b[countAt], e.b[countAt+1] = byte(count>>8), byte(count)
	w.err = w.c.writePacket(e.packet())
}

func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return t
	}
	return "Status " + strconv.Itoa(code)
}
