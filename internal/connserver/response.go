package connserver

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/fcgishim/fcgishim/internal/httpsyntax"
)

// After a response, up to lingerBytes of unread input are discarded for at
// most lingerTimeout before the connection closes.
const (
	lingerBytes   = 256 << 10
	lingerTimeout = 2 * time.Second
)

// LingerClose ends the response on rwc with a half-close, then discards
// what the front end may still be sending from r (an unread body, trailing
// bytes), so that closing does not reset the connection under a response in
// flight. The caller closes rwc.
func LingerClose(rwc net.Conn, r io.Reader) {
	if cw, ok := rwc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	rwc.SetReadDeadline(time.Now().Add(lingerTimeout))
	io.CopyN(io.Discard, r, lingerBytes)
}

// Response is what RunHandler needs of a protocol's http.ResponseWriter.
type Response interface {
	http.ResponseWriter
	HeaderSent() bool // the header went out: a 500 can no longer replace it
	Reset()           // forgets the handler's header, status and buffered body
}

// RunHandler runs h and reports whether the response may be finished. A
// panic before the header went out becomes a 500; after it, RunHandler
// reports false and the caller must drop the connection. Panics other than
// http.ErrAbortHandler are logged with name as prefix.
func RunHandler(h http.Handler, w Response, r *http.Request, log *slog.Logger, name string) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				log.Error(name+": handler panic", "uri", r.RequestURI, "panic", p)
			}
			if w.HeaderSent() {
				ok = false
				return
			}
			w.Reset()
			w.WriteHeader(http.StatusInternalServerError)
			ok = true
		}
	}()
	h.ServeHTTP(w, r)
	return true
}

// FinalStatus reports whether a handler's WriteHeader(code) sets the
// response status: informational codes are dropped, and a code outside
// 100..999 panics, as with net/http.
func FinalStatus(code int) bool {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	return code >= 200
}

// hopHeaders are never passed from the handler to the front end: they are
// framing of a hop we do not control, or a second status line.
var hopHeaders = map[string]bool{
	"Status": true, "Connection": true, "Keep-Alive": true, "Transfer-Encoding": true,
	"Upgrade": true, "Te": true, "Trailer": true, "Proxy-Connection": true,
}

// PassHeader reports whether the handler's response header k (canonical)
// may go to the front end: not a hop-by-hop or Status header, and a token.
func PassHeader(k string) bool {
	return !hopHeaders[k] && httpsyntax.ValidToken(k)
}

// PrepareHeader applies the header rules of a response about to go out
// with status: a Content-Length that is not one valid number is removed, a
// 204 carries none, and if bodyAllowed an explicit Content-Type is set,
// application/octet-stream plus nosniff when the handler set none, never a
// sniffed type. If h had a Content-Length, set is true and declared is its
// value, or -1 when it was removed as invalid.
func PrepareHeader(h http.Header, status int, bodyAllowed bool) (declared int64, set bool) {
	declared = -1
	if cl := h.Get("Content-Length"); cl != "" {
		set = true
		if n, ok := httpsyntax.ParseLength(cl); ok && len(h["Content-Length"]) == 1 {
			declared = n
		} else {
			h.Del("Content-Length")
		}
	}
	if status == http.StatusNoContent {
		h.Del("Content-Length")
	}
	if bodyAllowed && h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/octet-stream")
		h.Set("X-Content-Type-Options", "nosniff")
	}
	return declared, set
}
