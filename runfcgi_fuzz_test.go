package main

import (
	"strings"
	"testing"
)

// FuzzRunfcgi: any key=value arguments never panic; an accepted set
// resolves to nothing, a unix socket or a host:port, never both.
func FuzzRunfcgi(f *testing.F) {
	for _, s := range []string{
		"method=threaded host=127.0.0.1 port=3033",
		"method=prefork socket=/tmp/s.sock pidfile=x.pid daemonize=false",
		"protocol=scgi host=::1 port=8025 umask=022",
		"maxchildren=lots", "minspare=9 maxspare=3", "help", "host=", "port=99999999999999999999",
		"socket= daemonize=maybe", "=x", "outlog=/tmp/o errlog=/tmp/e workdir=/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, " ")
		r := defaultRunfcgi()
		if _, err := parseRunfcgi(&r, args); err != nil {
			return
		}
		addr, _, err := r.resolve()
		if err != nil || addr == "" {
			return
		}
		if strings.HasPrefix(addr, "unix:") {
			if r.Host != "" || r.Port != "" {
				t.Fatalf("unix socket %q together with host/port %+v", addr, r)
			}
			return
		}
		if r.Socket != "" {
			t.Fatalf("tcp address %q together with socket %q", addr, r.Socket)
		}
	})
}
