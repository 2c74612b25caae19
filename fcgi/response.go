package fcgi

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/fcgishim/fcgishim/internal/httpsyntax"
)

const (
	outBufSize = 16 << 10
	preBufSize = 4 << 10
	// maxChunk is the STDOUT content we put in one record; room is left
	// for padding and the closing empty STDOUT and END_REQUEST records.
	maxChunk = outBufSize - headerLen - 7 - 2*headerLen - 8
)

// outBuf holds a response's pooled buffers.
type outBuf struct {
	rec  []byte   // record being built: header placeholder, then content
	pre  []byte   // body bytes before the header is committed
	keys []string // header names, sorted at commit
}

// response is the http.ResponseWriter for one request. Until the header is
// committed, body bytes collect in pre so that a small response gets an
// exact Content-Length and goes out in one write with its END_REQUEST.
type response struct {
	r           *request
	ob          *outBuf
	header      http.Header
	status      int32 // beside the flags: response lives in the request
	head        bool
	wroteHeader bool
	committed   bool  // header serialized into ob.rec
	sent        bool  // bytes reached the connection
	written     int64 // body bytes accepted from the handler
	declared    int64 // Content-Length set by the handler, -1 if none
	err         error
}

var (
	errBodyNotAllowed = http.ErrBodyNotAllowed
	errTooLong        = http.ErrContentLength
)

func (w *response) start(head bool) {
	w.head = head
	w.declared = -1
}

func (w *response) Header() http.Header {
	if w.header == nil {
		w.header = w.r.c.s.getHeader()
	}
	return w.header
}

// getHeader returns an empty header map, reused across responses: a
// ResponseWriter, and so its Header, is not used after ServeHTTP returns.
func (s *Server) getHeader() http.Header {
	if h, ok := s.hdrPool.Get().(http.Header); ok {
		return h
	}
	return make(http.Header, 8)
}

// putHeader returns the header map once the response is complete.
func (w *response) putHeader() {
	if h := w.header; h != nil && len(h) <= 32 {
		clear(h)
		w.r.c.s.hdrPool.Put(h)
	}
	w.header = nil
}

func (w *response) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic("fcgi: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 200 {
		return // no interim responses over CGI
	}
	w.wroteHeader = true
	w.status = int32(code)
	if cl := w.header.Get("Content-Length"); cl != "" {
		if n, ok := parseContentLength(strings.TrimSpace(cl)); ok {
			w.declared = n
		} else {
			w.r.c.s.log.Warn("fcgi: handler set invalid Content-Length; dropped", "value", cl)
			w.header.Del("Content-Length")
		}
	}
}

func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified
}

func (w *response) Write(p []byte) (int, error) {
	return w.write(p, "")
}

func (w *response) WriteString(s string) (int, error) {
	return w.write(nil, s)
}

// write takes either p or s.
func (w *response) write(p []byte, s string) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	n := len(p) + len(s)
	if n == 0 {
		return 0, nil
	}
	if !bodyAllowed(int(w.status)) {
		return 0, errBodyNotAllowed
	}
	var tooLong bool
	if w.declared >= 0 && w.written+int64(n) > w.declared {
		keep := int(w.declared - w.written)
		if p != nil {
			p = p[:keep]
		} else {
			s = s[:keep]
		}
		n, tooLong = keep, true
	}
	w.written += int64(n)
	if w.head {
		if tooLong {
			return n, errTooLong
		}
		return n, nil
	}
	if w.ob == nil {
		w.ob = w.r.c.s.getOutBuf()
	}
	if !w.committed {
		if len(w.ob.pre)+n <= cap(w.ob.pre) {
			w.ob.pre = append(w.ob.pre, p...)
			w.ob.pre = append(w.ob.pre, s...)
			if tooLong {
				return n, errTooLong
			}
			return n, nil
		}
		if err := w.commit(false); err != nil {
			return 0, err
		}
	}
	for len(p) > 0 || len(s) > 0 {
		room := maxChunk - (len(w.ob.rec) - headerLen)
		if room == 0 {
			if err := w.flushRecord(); err != nil {
				return 0, err
			}
			continue
		}
		if len(p) > 0 {
			k := min(room, len(p))
			w.ob.rec = append(w.ob.rec, p[:k]...)
			p = p[k:]
		} else {
			k := min(room, len(s))
			w.ob.rec = append(w.ob.rec, s[:k]...)
			s = s[k:]
		}
	}
	if tooLong {
		return n, errTooLong
	}
	return n, nil
}

// Flush sends what is buffered now. It never sends an empty record.
func (w *response) Flush() { w.FlushError() }

// FlushError is Flush for http.ResponseController.
func (w *response) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return w.err
	}
	if w.ob == nil {
		w.ob = w.r.c.s.getOutBuf()
	}
	if !w.committed {
		if err := w.commit(false); err != nil {
			return err
		}
	}
	return w.flushRecord()
}

// appendRec appends to the record being built, flushing full records.
func (w *response) appendRec(b []byte) error {
	for len(b) > 0 {
		room := maxChunk - (len(w.ob.rec) - headerLen)
		if room == 0 {
			if err := w.flushRecord(); err != nil {
				return err
			}
			continue
		}
		k := min(room, len(b))
		w.ob.rec = append(w.ob.rec, b[:k]...)
		b = b[k:]
	}
	return nil
}

// sealRecord fills in the header of the record being built and pads it.
func (w *response) sealRecord() {
	n := len(w.ob.rec) - headerLen
	pad := padLen(n)
	appendHeader(w.ob.rec[:0], typeStdout, w.r.id, n, pad)
	w.ob.rec = append(w.ob.rec, zeros[:pad]...)
}

func (w *response) flushRecord() error {
	if len(w.ob.rec) == headerLen {
		return nil
	}
	w.sealRecord()
	w.sent = true
	err := w.r.c.writeFor(w.r, w.ob.rec)
	w.ob.rec = w.ob.rec[:headerLen]
	if err != nil {
		w.err = err
		w.r.cancel() // the peer is gone or the request was aborted
	}
	return err
}

// commit serializes the CGI header into the record being built, followed
// by the body bytes collected so far. final means the handler returned.
func (w *response) commit(final bool) error {
	w.committed = true
	ob := w.ob
	b := append(ob.rec, "Status: "...)
	b = strconv.AppendInt(b, int64(w.status), 10)
	b = append(b, ' ')
	if text := http.StatusText(int(w.status)); text != "" {
		b = append(b, text...)
	} else {
		b = append(b, "status code "...)
		b = strconv.AppendInt(b, int64(w.status), 10)
	}
	b = append(b, "\r\n"...)

	allowed := bodyAllowed(int(w.status))
	if _, set := w.header["Content-Type"]; !set && allowed && (w.written > 0 || (!final && !w.head)) {
		// Never let the front end or browser guess text/html.
		b = append(b, "Content-Type: application/octet-stream\r\n"...)
		if _, set := w.header["X-Content-Type-Options"]; !set {
			b = append(b, "X-Content-Type-Options: nosniff\r\n"...)
		}
	}
	if final && allowed && w.declared < 0 && (w.written > 0 || !w.head) {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, w.written, 10)
		b = append(b, "\r\n"...)
	}
	keys := ob.keys[:0]
	for k := range w.header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		switch k {
		case "Status", "Transfer-Encoding", "Connection", "Trailer":
			continue
		}
		vs := w.header[k]
		if !httpsyntax.ValidToken(k) {
			w.r.c.s.log.Warn("fcgi: invalid response header name dropped", "name", k)
			continue
		}
		if slices.ContainsFunc(vs, hasCRLFNUL) {
			w.r.c.s.log.Warn("fcgi: response header with CR/LF dropped", "name", k)
			continue
		}
		for _, v := range vs {
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	clear(keys)
	ob.keys = keys[:0]
	b = append(b, "\r\n"...)
	ob.rec = b
	// Large headers may have overrun a record; re-split them.
	if len(ob.rec)-headerLen > maxChunk {
		hdr := append([]byte(nil), ob.rec[headerLen:]...)
		ob.rec = ob.rec[:headerLen]
		if err := w.appendRec(hdr); err != nil {
			return err
		}
	}
	pre := ob.pre
	ob.pre = ob.pre[:0]
	return w.appendRec(pre)
}

// finish completes the response after the handler returned.
func (w *response) finish() {
	r := w.r
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.ob == nil {
		w.ob = r.c.s.getOutBuf()
	}
	defer w.releaseBuf()
	if w.err != nil {
		w.abrupt()
		return
	}
	if w.declared >= 0 && w.written < w.declared && !w.head && bodyAllowed(int(w.status)) {
		r.c.s.log.Warn("fcgi: handler wrote less than its Content-Length", "id", r.id,
			"declared", w.declared, "written", w.written)
		w.abrupt()
		return
	}
	if !w.committed {
		if err := w.commit(true); err != nil {
			w.abrupt()
			return
		}
	}
	if !r.claim() {
		return // aborted: its END_REQUEST was already written
	}
	r.c.wmu.Lock()
	r.c.unlink(r)
	b := w.ob.rec
	if len(b) > headerLen {
		w.sealRecord()
		b = w.ob.rec
	} else {
		b = b[:0]
	}
	b = appendHeader(b, typeStdout, r.id, 0, 0)
	b = appendEndRequest(b, r.id, 0, statusRequestComplete)
	w.ob.rec = b
	r.c.finishWrite(r, b, false)
}

// fail handles a handler panic: 500 if nothing was sent, else abrupt.
func (w *response) fail() {
	if w.sent || w.err != nil {
		if w.ob == nil {
			w.ob = w.r.c.s.getOutBuf()
		}
		defer w.releaseBuf()
		w.abrupt()
		return
	}
	if w.ob != nil {
		w.ob.rec = w.ob.rec[:headerLen]
		w.ob.pre = w.ob.pre[:0]
	}
	w.header = http.Header{"Content-Type": {"text/plain; charset=utf-8"}, "X-Content-Type-Options": {"nosniff"}}
	w.wroteHeader, w.committed, w.err, w.written, w.declared = false, false, nil, 0, -1
	w.WriteHeader(http.StatusInternalServerError)
	w.Write([]byte("500 Internal Server Error\n"))
	w.finish()
}

// abrupt ends a response that cannot be completed, so the front end does
// not pass a truncated body off as whole: the connection is closed without
// FCGI_END_REQUEST, unless other requests share it, in which case they are
// spared and this one ends with a non-zero application status.
func (w *response) abrupt() {
	r := w.r
	if !r.claim() {
		return
	}
	r.cancel()
	r.c.wmu.Lock()
	r.c.unlink(r)
	r.c.mu.Lock()
	// Other open ids (not "active", which still counts a finished
	// request whose final write is in progress).
	shared := len(r.c.reqs) > 0
	r.c.mu.Unlock()
	if !shared {
		r.c.finishWrite(r, nil, true)
		return
	}
	r.c.finishWrite(r, appendEndRequest(w.ob.rec[:0], r.id, 1, statusRequestComplete), false)
}

func (w *response) releaseBuf() {
	if w.ob != nil {
		w.r.c.s.putOutBuf(w.ob)
		w.ob = nil
	}
}

func (s *Server) getOutBuf() *outBuf {
	ob, _ := s.outPool.Get().(*outBuf)
	if ob == nil {
		ob = &outBuf{rec: make([]byte, headerLen, outBufSize), pre: make([]byte, 0, preBufSize)}
	}
	ob.rec = ob.rec[:headerLen]
	ob.pre = ob.pre[:0]
	return ob
}

func (s *Server) putOutBuf(ob *outBuf) {
	if cap(ob.rec) == outBufSize {
		s.outPool.Put(ob)
	}
}

// appendErrorResponse is a complete response written without a handler.
func appendErrorResponse(b []byte, id uint16, status int) []byte {
	var content []byte
	content = append(content, "Status: "...)
	content = strconv.AppendInt(content, int64(status), 10)
	content = append(content, ' ')
	content = append(content, http.StatusText(status)...)
	content = append(content, "\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n\r\n"...)
	content = strconv.AppendInt(content, int64(status), 10)
	content = append(content, ' ')
	content = append(content, http.StatusText(status)...)
	content = append(content, '\n')
	b = appendRecord(b, typeStdout, id, content)
	b = appendHeader(b, typeStdout, id, 0, 0)
	return appendEndRequest(b, id, 0, statusRequestComplete)
}
