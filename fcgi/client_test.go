package fcgi

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rec builds one raw record with the given padding.
func rec(t recType, id uint16, content []byte, pad int) []byte {
	b := []byte{version1, byte(t), byte(id >> 8), byte(id), byte(len(content) >> 8), byte(len(content)), byte(pad), 0}
	b = append(b, content...)
	return append(b, make([]byte, pad)...)
}

func beginBody(role uint16, flags byte) []byte {
	return []byte{byte(role >> 8), byte(role), flags, 0, 0, 0, 0, 0}
}

// pairs encodes name, value, name, value, ...
func pairs(kv ...string) []byte {
	var b []byte
	for i := 0; i+1 < len(kv); i += 2 {
		b = appendPair(b, kv[i], kv[i+1])
	}
	return b
}

// reqParams is a typical nginx parameter set plus extra.
func reqParams(method, uri string, extra ...string) []string {
	path, query, _ := strings.Cut(uri, "?")
	p := []string{
		"QUERY_STRING", query,
		"REQUEST_METHOD", method,
		"CONTENT_TYPE", "",
		"CONTENT_LENGTH", "",
		"SCRIPT_NAME", path,
		"REQUEST_URI", uri,
		"DOCUMENT_URI", path,
		"DOCUMENT_ROOT", "/srv/www",
		"SERVER_PROTOCOL", "HTTP/1.1",
		"REQUEST_SCHEME", "http",
		"GATEWAY_INTERFACE", "CGI/1.1",
		"SERVER_SOFTWARE", "nginx/1.22.1",
		"REMOTE_ADDR", "127.0.0.1",
		"REMOTE_PORT", "54321",
		"SERVER_ADDR", "127.0.0.1",
		"SERVER_PORT", "80",
		"SERVER_NAME", "localhost",
		"HTTP_HOST", "example.test",
		"HTTP_USER_AGENT", "test",
		"HTTP_ACCEPT", "*/*",
	}
	// extra overrides same-named entries
	for i := 0; i+1 < len(extra); i += 2 {
		found := false
		for j := 0; j+1 < len(p); j += 2 {
			if p[j] == extra[i] {
				p[j+1] = extra[i+1]
				found = true
			}
		}
		if !found {
			p = append(p, extra[i], extra[i+1])
		}
	}
	return p
}

// requestBytes is a whole request: BEGIN, PARAMS, empty PARAMS, STDIN
// (if body != nil, then empty STDIN).
func requestBytes(id uint16, keep bool, params []string, body []byte) []byte {
	var flags byte
	if keep {
		flags = flagKeepConn
	}
	b := rec(typeBeginRequest, id, beginBody(roleResponder, flags), 0)
	pb := pairs(params...)
	for len(pb) > 0 {
		n := min(len(pb), 65535)
		b = append(b, rec(typeParams, id, pb[:n], padLen(n))...)
		pb = pb[n:]
	}
	b = append(b, rec(typeParams, id, nil, 0)...)
	if body != nil {
		for len(body) > 0 {
			n := min(len(body), 65535)
			b = append(b, rec(typeStdin, id, body[:n], padLen(n))...)
			body = body[n:]
		}
		b = append(b, rec(typeStdin, id, nil, 0)...)
	}
	return b
}

type record struct {
	h       header
	content []byte
}

// testClient speaks raw FastCGI and fails the test on anything a strict
// web server would reject: bad versions or padding, END_REQUEST or STDOUT
// for an id that is not open, STDOUT after the end of the stream.
type testClient struct {
	t    testing.TB
	c    net.Conn
	br   *bufio.Reader
	open map[uint16]bool // ids begun, no END yet
	eos  map[uint16]bool // empty STDOUT seen
	out  map[uint16]*bytes.Buffer
	ends map[uint16][]byte
	sent []byte   // bytes written, not yet parsed into whole records
	mgmt []record // id-0 records read while waiting for something else
}

func newTestClient(t testing.TB, c net.Conn) *testClient {
	tc := &testClient{t: t, c: c, br: bufio.NewReader(c)}
	tc.reset()
	t.Cleanup(func() { c.Close() })
	return tc
}

func (tc *testClient) reset() {
	tc.open = map[uint16]bool{}
	tc.eos = map[uint16]bool{}
	tc.out = map[uint16]*bytes.Buffer{}
	tc.ends = map[uint16][]byte{}
}

func (tc *testClient) write(b []byte) {
	tc.t.Helper()
	// Track BEGINs we send so the reader can check ids.
	tc.sent = append(tc.sent, b...)
	for len(tc.sent) >= headerLen {
		var h header
		h.decode(tc.sent)
		n := headerLen + int(h.ContentLength) + int(h.PaddingLength)
		if n > len(tc.sent) {
			break
		}
		if h.Type == typeBeginRequest && h.ID != 0 {
			tc.open[h.ID] = true
			tc.eos[h.ID] = false
			tc.out[h.ID] = &bytes.Buffer{}
			delete(tc.ends, h.ID)
		}
		tc.sent = tc.sent[n:]
	}
	tc.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := tc.c.Write(b); err != nil {
		tc.t.Fatalf("client write: %v", err)
	}
}

// read reads one record and checks it.
func (tc *testClient) read() (record, error) {
	tc.t.Helper()
	tc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var hb [headerLen]byte
	if _, err := io.ReadFull(tc.br, hb[:]); err != nil {
		return record{}, err
	}
	var r record
	r.h.decode(hb[:])
	if r.h.Version != version1 {
		tc.t.Fatalf("record version %d", r.h.Version)
	}
	if r.h.PaddingLength > 7 || (int(r.h.ContentLength)+int(r.h.PaddingLength))%8 != 0 {
		tc.t.Errorf("record padding %d for content %d", r.h.PaddingLength, r.h.ContentLength)
	}
	r.content = make([]byte, int(r.h.ContentLength)+int(r.h.PaddingLength))
	if _, err := io.ReadFull(tc.br, r.content); err != nil {
		tc.t.Fatalf("record content: %v", err)
	}
	r.content = r.content[:r.h.ContentLength]
	id := r.h.ID
	switch r.h.Type {
	case typeStdout, typeStderr:
		if !tc.open[id] {
			tc.t.Fatalf("STDOUT/STDERR for id %d which is not open", id)
		}
		if r.h.Type == typeStdout {
			if tc.eos[id] {
				tc.t.Fatalf("STDOUT for id %d after end of stream", id)
			}
			if len(r.content) == 0 {
				tc.eos[id] = true
			}
			tc.out[id].Write(r.content)
		}
	case typeEndRequest:
		if !tc.open[id] {
			tc.t.Fatalf("END_REQUEST for id %d which is not open", id)
		}
		if len(r.content) != 8 {
			tc.t.Fatalf("END_REQUEST body %d bytes", len(r.content))
		}
		tc.open[id] = false
		tc.ends[id] = r.content
	}
	return r, nil
}

// end reads until id's END_REQUEST and returns its STDOUT and protocol status.
func (tc *testClient) end(id uint16) (stdout string, proto uint8) {
	tc.t.Helper()
	for {
		if e, ok := tc.ends[id]; ok {
			delete(tc.ends, id)
			return tc.out[id].String(), e[4]
		}
		r, err := tc.read()
		if err != nil {
			tc.t.Fatalf("waiting for END_REQUEST %d: %v", id, err)
		}
		if r.h.ID == 0 {
			tc.mgmt = append(tc.mgmt, r)
		}
	}
}

// readMgmt returns the next id-0 record.
func (tc *testClient) readMgmt() (record, error) {
	tc.t.Helper()
	if len(tc.mgmt) > 0 {
		r := tc.mgmt[0]
		tc.mgmt = tc.mgmt[1:]
		return r, nil
	}
	for {
		r, err := tc.read()
		if err != nil || r.h.ID == 0 {
			return r, err
		}
	}
}

// expectClosed reads until EOF, failing on any record.
func (tc *testClient) expectClosed() {
	tc.t.Helper()
	r, err := tc.read()
	if err == nil {
		tc.t.Fatalf("want closed connection, got record type %d id %d %q", r.h.Type, r.h.ID, r.content)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		tc.t.Fatalf("want EOF, got %v", err)
	}
}

// do sends one keep-conn request and returns the parsed response.
func (tc *testClient) do(id uint16, params []string, body []byte) *cgiResponse {
	tc.t.Helper()
	tc.write(requestBytes(id, true, params, body))
	out, proto := tc.end(id)
	if proto != statusRequestComplete {
		tc.t.Fatalf("protocol status %d", proto)
	}
	return parseCGI(tc.t, out)
}

type cgiResponse struct {
	status int
	header http.Header
	body   string
	raw    string
}

func parseCGI(t testing.TB, s string) *cgiResponse {
	t.Helper()
	head, body, ok := strings.Cut(s, "\r\n\r\n")
	if !ok {
		t.Fatalf("no header end in %q", s)
	}
	r := &cgiResponse{header: http.Header{}, body: body, raw: s}
	for i, line := range strings.Split(head, "\r\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("bad header line %q", line)
		}
		if i == 0 {
			if k != "Status" {
				t.Fatalf("first line %q is not Status", line)
			}
			fmt.Sscanf(v, "%d", &r.status)
			continue
		}
		if k == "Status" {
			t.Fatalf("second Status line in %q", s)
		}
		r.header.Add(k, v)
	}
	return r
}

// startServer serves s on a unix socket and returns its path. Cleanup
// closes s and checks Serve returned ErrServerClosed.
func startServer(t testing.TB, s *Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	if viaServeFD(t) {
		serveFD(t, s, l, errc)
	} else {
		go func() { errc <- s.Serve(l) }()
	}
	t.Cleanup(func() {
		s.Close()
		select {
		case err := <-errc:
			if err != ErrServerClosed {
				t.Errorf("Serve returned %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return path
}

// viaServeFD reports whether t runs under TestServeFDConformance or
// FuzzServeFDRecords, where startServer and runConn serve as ServeFD does.
func viaServeFD(t testing.TB) bool {
	return strings.HasPrefix(t.Name(), "TestServeFDConformance/") || strings.HasPrefix(t.Name(), "FuzzServeFD")
}

// serveFD serves s with ServeFD on a duplicate of l's socket; l itself is
// closed (leaving the socket file), as a spawning web server leaves fd 0.
func serveFD(t testing.TB, s *Server, l net.Listener, errc chan<- error) {
	t.Helper()
	ul := l.(*net.UnixListener)
	f, err := ul.File()
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	ul.Close()
	fd := int(f.Fd())
	go func() {
		err := s.ServeFD(fd)
		f.Close()
		errc <- err
	}()
}

func dial(t testing.TB, path string) *testClient {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	return newTestClient(t, c)
}

func serve(t testing.TB, s *Server) *testClient {
	return dial(t, startServer(t, s))
}
