package listen

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The test binary re-executed as the child prints what Detect decided.
func TestMain(m *testing.M) {
	if os.Getenv("SPAWN_TEST_CHILD") == "1" {
		fmt.Print(Detect(os.Getenv))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func detectAs(t *testing.T, stdin *os.File, extraFiles []*os.File, env ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append([]string{"SPAWN_TEST_CHILD=1", "PATH=" + os.Getenv("PATH")}, env...)
	cmd.Stdin = stdin
	cmd.ExtraFiles = extraFiles
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	return string(out)
}

func listenerFile(t *testing.T) *os.File {
	t.Helper()
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	f, err := l.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestDetect(t *testing.T) {
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()

	t.Run("listening socket on fd 0 is FastCGI", func(t *testing.T) {
		if got := detectAs(t, listenerFile(t), nil); got != string(ModeFastCGIStdin) {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("listening socket wins over a CGI environment", func(t *testing.T) {
		if got := detectAs(t, listenerFile(t), nil, "GATEWAY_INTERFACE=CGI/1.1"); got != string(ModeFastCGIStdin) {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("connected socket on fd 0 is not a listener", func(t *testing.T) {
		a, b := socketPair(t)
		defer b.Close()
		if got := detectAs(t, a, nil, "GATEWAY_INTERFACE=CGI/1.1"); got != string(ModeCGI) {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("CGI environment", func(t *testing.T) {
		if got := detectAs(t, devnull, nil, "GATEWAY_INTERFACE=CGI/1.1", "REQUEST_METHOD=GET"); got != string(ModeCGI) {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("nothing", func(t *testing.T) {
		if got := detectAs(t, devnull, nil); got != "" {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("systemd activation for another pid is ignored", func(t *testing.T) {
		if got := detectAs(t, devnull, []*os.File{listenerFile(t)}, "LISTEN_PID=1", "LISTEN_FDS=1"); got != "" {
			t.Fatalf("got %q", got)
		}
	})
}

func socketPair(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	dir := t.TempDir()
	l, err := net.Listen("unix", filepath.Join(dir, "p"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("unix", filepath.Join(dir, "p"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	fa, _ := c.(*net.UnixConn).File()
	fb, _ := s.(*net.UnixConn).File()
	c.Close()
	s.Close()
	return fa, fb
}

func TestListenUnixModeAndStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "app.sock")
	l, err := Listen("unix:"+path, 0o002)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o775 {
		t.Fatalf("umask 0002 gave mode %o, want 775", got)
	}
	// A live socket is never taken over.
	if _, err := Listen("unix:"+path, 0o077); err == nil || !strings.Contains(err.Error(), "listening") {
		t.Fatalf("second listen on a live socket: %v", err)
	}
	// A stale one (file left behind, nobody listening) is replaced.
	KeepSocketFile(l)
	l.Close()
	l2, err := Listen("unix:"+path, 0o077)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer l2.Close()
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o700 {
		t.Fatalf("umask 077 gave mode %o", fi.Mode().Perm())
	}
	// A regular file in the way is an error, not deleted.
	file := filepath.Join(t.TempDir(), "notasocket")
	os.WriteFile(file, []byte("x"), 0o644)
	if _, err := Listen(file, 0o077); err == nil {
		t.Fatal("listen over a regular file succeeded")
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatal("regular file was removed")
	}
}

func TestAllowListClosesOthers(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var refused []string
	al, err := AllowList(l, "127.0.0.2", func(r string) { refused = append(refused, r) })
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := al.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	c, err := net.Dial("tcp", l.Addr().String()) // from 127.0.0.1: not allowed
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := c.Read(buf); err == nil {
		t.Fatal("connection from a non-allowed address was not closed")
	}
	c.Close()
	l.Close()
	if c, ok := <-accepted; ok {
		c.Close()
		t.Fatal("non-allowed connection was accepted")
	}
	if len(refused) != 1 {
		t.Fatalf("refusals logged: %v", refused)
	}
	if _, err := AllowList(l, "not-an-ip", nil); err == nil {
		t.Fatal("bad FCGI_WEB_SERVER_ADDRS accepted")
	}
}
