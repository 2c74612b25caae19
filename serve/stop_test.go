package serve

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/config"
)

// A stop completes after the grace period even while a handler ignores its
// context and never returns: the servers' Close must not wait for it.
func TestStopWithStuckHandler(t *testing.T) {
	for _, tt := range []struct {
		protocol string
		request  []byte
	}{
		{"scgi", scgiRequest()},
		{"fcgi", fcgiRequest()},
		{"http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
	} {
		t.Run(tt.protocol, func(t *testing.T) {
			entered, release := make(chan struct{}, 1), make(chan struct{})
			defer close(release)
			stuck := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				entered <- struct{}{}
				<-release // ignores r.Context()
			})
			dir := t.TempDir()
			sock := filepath.Join(dir, "s.sock")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- Run(ctx, Options{
					Handler: stuck, Listen: "unix:" + sock, Protocol: tt.protocol,
					Config: &config.Config{Server: config.Server{Watch: "off",
						Grace: config.Duration{Duration: 100 * time.Millisecond}}},
					Executable: filepath.Join(dir, "mysite.fcgi"), Args: []string{"mysite.fcgi"}, Env: []string{},
					Stdout: io.Discard, Stderr: io.Discard,
				})
			}()
			c := dialWhenListening(t, sock, done)
			defer c.Close()
			if _, err := c.Write(tt.request); err != nil {
				t.Fatal(err)
			}
			<-entered
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run after cancel: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("stop hung on a handler that ignores its context")
			}
		})
	}
}

// dialWhenListening connects to the Unix socket once Run has created it.
func dialWhenListening(t *testing.T, sock string, done <-chan error) net.Conn {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			return c
		}
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v", err)
		case <-deadline:
			t.Fatalf("no listener on %s: %v", sock, err)
		case <-time.After(10 * time.Millisecond): // polling for the socket
		}
	}
}

func scgiRequest() []byte {
	h := "CONTENT_LENGTH\x000\x00SCGI\x001\x00REQUEST_METHOD\x00GET\x00REQUEST_URI\x00/\x00SERVER_PROTOCOL\x00HTTP/1.1\x00"
	return []byte(fmt.Sprintf("%d:%s,", len(h), h))
}

// fcgiRequest is a Responder GET / as request 1: BEGIN_REQUEST, PARAMS,
// the empty PARAMS and STDIN records that end both streams.
func fcgiRequest() []byte {
	record := func(typ byte, content []byte) []byte {
		h := []byte{1, typ, 0, 1, 0, 0, 0, 0}
		binary.BigEndian.PutUint16(h[4:], uint16(len(content)))
		return append(h, content...)
	}
	var params []byte
	for _, kv := range [][2]string{{"REQUEST_METHOD", "GET"}, {"REQUEST_URI", "/"}, {"SERVER_PROTOCOL", "HTTP/1.1"}, {"SCRIPT_NAME", ""}, {"PATH_INFO", "/"}} {
		params = append(params, byte(len(kv[0])), byte(len(kv[1])))
		params = append(append(params, kv[0]...), kv[1]...)
	}
	var out []byte
	out = append(out, record(1, []byte{0, 1, 0, 0, 0, 0, 0, 0})...) // BEGIN_REQUEST, role Responder
	out = append(out, record(4, params)...)
	out = append(out, record(4, nil)...)
	return append(out, record(5, nil)...)
}
