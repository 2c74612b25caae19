//go:build linux

package fcgi

import (
	"context"
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

// TestServeFDConformance runs the conformance, fault and lifecycle tests
// that do not depend on several requests sharing a connection at once
// against ServeFD (startServer and runConn switch on the test's name).
// Left out: multiplexing, MaxConns, a listener closed by Shutdown (ServeFD
// leaves the socket listening, tested below), GET_VALUES' FCGI_MPXS_CONNS (tested
// below), and an abort seen while the handler waits on its context without
// reading its body (inline, nothing reads the connection meanwhile).
func TestServeFDConformance(t *testing.T) {
	for _, tt := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"SplitHeader_FCGI01", TestSplitHeader_FCGI01},
		{"EarlyAnswerLingers", TestEarlyAnswerLingers},
		{"Version_FCGI02", TestVersion_FCGI02},
		{"UnknownManagementType_FCGI03", TestUnknownManagementType_FCGI03},
		{"BeginID0_FCGI04", TestBeginID0_FCGI04},
		{"DuplicateBegin_FCGI05", TestDuplicateBegin_FCGI05},
		{"Roles_FCGI07", TestRoles_FCGI07},
		{"ParamsStraddle_FCGI08", TestParamsStraddle_FCGI08},
		{"ParamsMalformed_FCGI08", TestParamsMalformed_FCGI08},
		{"ParamsTooLarge_FCGI09", TestParamsTooLarge_FCGI09},
		{"Padding_FCGI10", TestPadding_FCGI10},
		{"LargeResponse_FCGI11", TestLargeResponse_FCGI11},
		{"NoEmptyStdout_FCGI12", TestNoEmptyStdout_FCGI12},
		{"KeepConn_FCGI14", TestKeepConn_FCGI14},
		{"PeerCloseMidResponse_FCGI16", TestPeerCloseMidResponse_FCGI16},
		{"NoStdin_FCGI17", TestNoStdin_FCGI17},
		{"Timeouts_FCGI18", TestTimeouts_FCGI18},
		{"BodyLength_FCGI19", TestBodyLength_FCGI19},
		{"BodyNeverSent_FCGI17", TestBodyNeverSent_FCGI17},
		{"WriteTimeout", TestWriteTimeout},
		{"NoStderrRecords_RESP08", TestNoStderrRecords_RESP08},
		{"AbortedRequestsLeakNothing_RES02", TestAbortedRequestsLeakNothing_RES02},
		{"StreamingBodyAndFlush", TestStreamingBodyAndFlush},
		{"Authorizer", TestAuthorizer},
		{"NilHandler", TestNilHandler},
		{"RequestContextCancelledAfterHandler", TestRequestContextCancelledAfterHandler},
		{"HandlerKeepsRequest", TestHandlerKeepsRequest},
		{"RequestContextEndsWithRequest", TestRequestContextEndsWithRequest},
		{"RequestContextFollowsBase", TestRequestContextFollowsBase},
		{"RequestFromParams", TestRequestFromParams},
		{"HTTPProxyDropped_PARAM01", TestHTTPProxyDropped_PARAM01},
		{"DuplicateParams_PARAM03", TestDuplicateParams_PARAM03},
		{"ContentLength_PARAM05", TestContentLength_PARAM05},
		{"CRLFRejected_PARAM07", TestCRLFRejected_PARAM07},
		{"ParamsAccessor_PARAM13", TestParamsAccessor_PARAM13},
		{"ContentType_RESP01", TestContentType_RESP01},
		{"HeaderInjection_RESP04", TestHeaderInjection_RESP04},
		{"ContentLengthMismatch_RESP06", TestContentLengthMismatch_RESP06},
		{"HeadAndNoBody_RESP07", TestHeadAndNoBody_RESP07},
		{"Basic", TestBasic},
		{"ShutdownServesAcceptedConnectionsFirstRequest", TestShutdownServesAcceptedConnectionsFirstRequest},
		{"ShutdownClosesIdleKeepConn", TestShutdownClosesIdleKeepConn},
	} {
		t.Run(tt.name, tt.fn)
	}
}

// listenFD returns a unix socket's path and a descriptor of it, as a
// spawning web server hands one to its child on fd 0.
func listenFD(t *testing.T) (string, int) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ul := l.(*net.UnixListener)
	f, err := ul.File()
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	ul.Close()
	t.Cleanup(func() { f.Close() })
	return path, int(f.Fd())
}

// startFD runs s.ServeFD(fd); Cleanup closes s and checks the result.
func startFD(t *testing.T, s *Server, fd int) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- s.ServeFD(fd) }()
	t.Cleanup(func() {
		s.Close()
		select {
		case err := <-errc:
			if err != ErrServerClosed {
				t.Errorf("ServeFD returned %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("ServeFD did not return after Close")
		}
	})
	return errc
}

// A web server that connects and sends nothing holds up the connections
// queued behind it only for HeaderTimeout, not for IdleTimeout.
func TestServeFDSilentConnectionDoesNotWedge(t *testing.T) {
	path, fd := listenFD(t)
	startFD(t, &Server{Handler: echo, HeaderTimeout: 200 * time.Millisecond}, fd)
	silent := dial(t, path)
	next := dial(t, path)
	next.write(requestBytes(1, false, reqParams("GET", "/next"), []byte{}))
	out, _ := next.end(1)
	if !strings.Contains(out, "GET /next") {
		t.Fatal(out)
	}
	silent.expectClosed()
}

// A malformed record closes its own connection; the loop serves the next.
func TestServeFDMalformedRecordClosesOnlyItsConnection(t *testing.T) {
	path, fd := listenFD(t)
	startFD(t, &Server{Handler: echo}, fd)
	for _, bad := range [][]byte{
		append([]byte{2}, requestBytes(1, false, reqParams("GET", "/"), []byte{})[1:]...), // version 2
		append(rec(typeBeginRequest, 1, beginBody(roleResponder, 0), 0), append(rec(typeParams, 1, []byte("\x05\x01ab"), 0), rec(typeParams, 1, nil, 0)...)...),
		rec(typeBeginRequest, 1, []byte{0, 1, 0}, 0), // short BEGIN_REQUEST body
	} {
		tc := dial(t, path)
		tc.write(bad)
		for { // a 400 may come first; then the connection must close
			if _, err := tc.read(); err != nil {
				if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
					t.Fatalf("want the connection closed, got %v", err)
				}
				break
			}
		}
		next := dial(t, path)
		next.write(requestBytes(1, false, reqParams("GET", "/after"), []byte{}))
		if out, _ := next.end(1); !strings.Contains(out, "GET /after") {
			t.Fatal(out)
		}
	}
}

// One request at a time per connection: GET_VALUES says so, and a second
// BEGIN_REQUEST while a handler runs gets FCGI_OVERLOADED, the first
// request unharmed.
func TestServeFDOneRequestAtATime(t *testing.T) {
	path, fd := listenFD(t)
	startFD(t, &Server{Handler: echo, MaxReqsPerConn: 8}, fd)
	tc := dial(t, path)
	tc.write(rec(typeGetValues, 0, pairs("FCGI_MPXS_CONNS", "", "FCGI_MAX_REQS", ""), 0))
	r, err := tc.readMgmt()
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := decodeAll(string(r.content)); fmt.Sprint(got) != "[FCGI_MPXS_CONNS 0 FCGI_MAX_REQS 8]" {
		t.Fatalf("GET_VALUES: %q", got)
	}
	// echo reads its body: the second BEGIN arrives while it does.
	tc.write(requestBytes(1, true, reqParams("POST", "/one", "CONTENT_LENGTH", "4"), nil))
	tc.write(rec(typeBeginRequest, 2, beginBody(roleResponder, flagKeepConn), 0))
	if _, proto := tc.end(2); proto != statusOverloaded {
		t.Fatalf("second request: protocol status %d, want FCGI_OVERLOADED", proto)
	}
	tc.write(rec(typeStdin, 1, []byte("body"), 0))
	tc.write(rec(typeStdin, 1, nil, 0))
	if out, _ := tc.end(1); !strings.HasSuffix(out, `POST /one body="body" err=<nil>`) {
		t.Fatal(out)
	}
	if r := tc.do(3, reqParams("GET", "/three"), []byte{}); r.status != 200 {
		t.Fatal(r.raw)
	}
}

// Shutdown wakes an idle loop at once, and the socket stays listening with
// its backlog: a connection queued meanwhile is served by the next loop on
// the same descriptor, as by a re-executed program on fd 0.
func TestServeFDShutdownLeavesBacklog(t *testing.T) {
	path, fd := listenFD(t)
	s := &Server{Handler: echo}
	errc := make(chan error, 1)
	go func() { errc <- s.ServeFD(fd) }()
	warm := dial(t, path)
	warm.write(requestBytes(1, false, reqParams("GET", "/warm"), []byte{}))
	warm.end(1) // the loop is running and idle in its wait
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal("Shutdown:", err)
	}
	if err := <-errc; err != ErrServerClosed {
		t.Fatalf("ServeFD returned %v", err)
	}
	queued := dial(t, path) // waits in the backlog
	queued.write(requestBytes(1, false, reqParams("GET", "/queued"), []byte{}))
	startFD(t, &Server{Handler: echo}, fd)
	if out, _ := queued.end(1); !strings.Contains(out, "GET /queued") {
		t.Fatal(out)
	}
}

// Close ends a handler's wait for its body (the connection is closed, the
// context cancelled) and the loop returns.
func TestServeFDCloseInterruptsBodyWait(t *testing.T) {
	path, fd := listenFD(t)
	got := make(chan error, 1)
	started := make(chan struct{})
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadFull(r.Body, make([]byte, 5))
		close(started)
		_, err := io.ReadAll(r.Body)
		got <- err
	})}
	errc := make(chan error, 1)
	go func() { errc <- s.ServeFD(fd) }()
	tc := dial(t, path)
	tc.write(requestBytes(1, false, reqParams("POST", "/", "CONTENT_LENGTH", "10"), nil))
	tc.write(rec(typeStdin, 1, []byte("12345"), 0))
	<-started
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case err := <-got:
		if err != io.ErrUnexpectedEOF {
			t.Fatalf("body read: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handler still waiting for its body after Close")
	}
	<-closed
	if err := <-errc; err != ErrServerClosed {
		t.Fatalf("ServeFD returned %v", err)
	}
}

func FuzzServeFDRecords(f *testing.F) { fuzzRecords(f) }

// A GET without CONTENT_LENGTH whose empty FCGI_STDIN came with its params
// (as mod_fcgid sends it) ends with a plain close, not a half-close that
// waits for the web server's EOF: writing after our EOF fails at once.
func TestServeFDClosesWithoutLingerWhenInputArrived(t *testing.T) {
	path, fd := listenFD(t)
	startFD(t, &Server{Handler: http.HandlerFunc(helloHandler)}, fd)
	for _, body := range []string{"", "unread body"} {
		tc := dial(t, path)
		tc.write(requestBytes(1, false, reqParams("POST", "/"), []byte(body)))
		tc.end(1)
		tc.expectClosed()
		_, err := tc.c.Write(rec(typeStdin, 1, nil, 0))
		if err == nil {
			t.Fatalf("body %q: the connection is still open for reading after our EOF", body)
		}
	}
}
