package appctl

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// FuzzWSGIRunnerRequest sends any bytes to the runner as a request (then
// ends the connection's sending side): the answer is nothing or whole HTTP
// responses with a status the runner means (200 from the app, 400), it
// comes before a deadline (no input makes a worker wait for more), and the
// runner logs no failure of its own.
func FuzzWSGIRunnerRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
		"POST /f HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
		"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x\r\nabc\r\n0\r\nT: 1\r\n\r\n",
		"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n",
		"GET /%zz%00 HTTP/1.1\r\nX-Forwarded-Prefix: /%\r\nHost: [::1\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 99\r\n\r\nshort",
	} {
		f.Add([]byte(s))
	}
	r := startWSGIRunner(f, "wsgitestapp:echo", "2")
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.Dial("unix", r.sock)
		if err != nil {
			t.Fatalf("dial the runner: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			c.Write(data)
			c.(*net.UnixConn).CloseWrite()
		}()
		out, err := io.ReadAll(c)
		if err != nil && !isReset(err) {
			t.Fatalf("reading the answer to %q: %v (got %q)", data, err, out)
		}
		for len(out) > 0 {
			if !bytes.HasPrefix(out, []byte("HTTP/1.1 200 OK\r\n")) && !bytes.HasPrefix(out, []byte("HTTP/1.1 400 Bad Request\r\n")) {
				t.Fatalf("answer to %q: %q", data, out)
			}
			i := bytes.Index(out[1:], []byte("HTTP/1.1 "))
			if i < 0 {
				break
			}
			out = out[i+1:]
		}
		if log := r.log(); strings.Contains(log, "serving a connection failed") || strings.Contains(log, "exited") {
			t.Fatalf("after %q the runner logged a failure:\n%s", data, log)
		}
	})
}

// isReset reports a connection reset: the runner closed with our unread
// request bytes in its buffer, which is how a rejected request can end.
func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }
