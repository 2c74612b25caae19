package listen

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

func TestListenAccessMode(t *testing.T) {
	cases := []struct {
		name  string
		umask int
		a     SocketAccess
		want  fs.FileMode
	}{
		{"private by default", 0o077, SocketAccess{}, 0o700},
		{"group from the umask", 0o007, SocketAccess{}, 0o770},
		{"explicit mode beats the umask", 0o077, SocketAccess{Mode: 0o660}, 0o660},
		{"a group alone means 0660", 0o077, SocketAccess{Group: strconv.Itoa(os.Getegid())}, 0o660},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.sock")
			l, err := ListenAccess("unix:"+path, tc.umask, tc.a)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			fi, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != tc.want {
				t.Errorf("mode %v, want socket %04o", fi.Mode(), tc.want)
			}
			c, err := net.Dial("unix", path)
			if err != nil {
				t.Fatalf("our own user cannot connect: %v", err)
			}
			c.Close()
		})
	}
}

// needRoot skips unless the test runs as root (it fails instead under CI,
// which runs as root).
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("needs root (to hand a socket to another user); CI runs as root")
	}
	t.Skip("needs root to hand a socket to another user")
}

func userIDs(t *testing.T, name string) (uid, gid int) {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("user %s: %v", name, err)
		}
		t.Skipf("user %s: %v", name, err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid
}

// dialAs connects to path with the file-system identity of uid/gid (which
// is what the kernel checks for a unix socket), from a thread of its own
// that is thrown away afterwards: the process stays root.
func dialAs(path string, uid, gid int) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		unix.Setfsgid(gid)
		unix.Setfsuid(uid) // from 0 to non-zero also drops CAP_DAC_OVERRIDE
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		errc <- unix.Connect(fd, &unix.SockaddrUnix{Name: path})
	}()
	return <-errc
}

// The web server's user (www-data) can connect once the socket is in its
// group with 0660, and not to a socket left private; the owner and group
// are those asked for.
func TestListenAccessHandsSocketToWebServer(t *testing.T) {
	needRoot(t)
	wwwUID, wwwGID := userIDs(t, "www-data")
	nobodyUID, _ := userIDs(t, "nobody")
	dir := peertest.Dir(t)

	private := filepath.Join(dir, "private.sock")
	l, err := ListenAccess("unix:"+private, 0o022, SocketAccess{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := dialAs(private, wwwUID, wwwGID); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("www-data connecting to a 0755 root socket: %v, want EACCES (the dial helper does not drop privileges?)", err)
	}

	shared := filepath.Join(dir, "shared.sock")
	l2, err := ListenAccess("unix:"+shared, 0o077, SocketAccess{Owner: "nobody", Group: "www-data", Mode: 0o660})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	fi, err := os.Lstat(shared)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Uid) != nobodyUID || int(st.Gid) != wwwGID || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket uid %d gid %d mode %04o; want %d %d 0660", st.Uid, st.Gid, fi.Mode().Perm(), nobodyUID, wwwGID)
	}
	if err := dialAs(shared, wwwUID, wwwGID); err != nil {
		t.Errorf("www-data cannot connect to a socket of group www-data, mode 0660: %v", err)
	}
}

// A socket that cannot get its owner, group or mode is not left behind
// half-made, and the error names what failed.
func TestListenAccessFailureLeavesNoSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	_, err := ListenAccess("unix:"+path, 0o077, SocketAccess{Group: "no-such-group-fcgishim"})
	if err == nil || !strings.Contains(err.Error(), `group "no-such-group-fcgishim"`) || !strings.Contains(err.Error(), path) {
		t.Fatalf("error %v, want one naming the group and the socket", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file left behind: %v", err)
	}
	l, err := ListenAccess("unix:"+path, 0o077, SocketAccess{})
	if err != nil {
		t.Fatalf("listening again after the failure: %v", err)
	}
	l.Close()
}

// Giving the socket to another user is root's: anyone else gets an error
// that says so, not a socket with the wrong owner.
func TestListenAccessChownNeedsRoot(t *testing.T) {
	needRoot(t)
	nobodyUID, nobodyGID := userIDs(t, "nobody")
	dir := peertest.Dir(t)
	os.Chown(dir, nobodyUID, nobodyGID)
	path := filepath.Join(dir, "s.sock")
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		// Only this thread becomes nobody (raw system calls: Go's own
		// Setuid would change every thread).
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(nobodyGID), uintptr(nobodyGID), uintptr(nobodyGID)); e != 0 {
			errc <- e
			return
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(nobodyUID), uintptr(nobodyUID), uintptr(nobodyUID)); e != 0 {
			errc <- e
			return
		}
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
			errc <- err
			return
		}
		errc <- applyAccess(path, SocketAccess{Group: "www-data"}, 0o077)
	}()
	err := <-errc
	if err == nil || !strings.Contains(err.Error(), "group www-data") || !strings.Contains(err.Error(), "only root or a member") {
		t.Errorf("error %v, want one saying only root or a member may give the socket to group www-data", err)
	}
}

func TestParseSocketModeAndChown(t *testing.T) {
	for in, want := range map[string]fs.FileMode{"660": 0o660, "0660": 0o660, "0600": 0o600, "777": 0o777} {
		if got, err := ParseSocketMode(in); err != nil || got != want {
			t.Errorf("ParseSocketMode(%q) = %04o, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "0", "999", "4770", "rw-rw----", "-1", "0x1b6"} {
		if _, err := ParseSocketMode(bad); err == nil {
			t.Errorf("ParseSocketMode(%q) accepted", bad)
		}
	}
	for in, want := range map[string][2]string{"www-data": {"www-data", ""}, "a:b": {"a", "b"}, ":www-data": {"", "www-data"}, "a:": {"a", ""}} {
		o, g, err := ParseChown(in)
		if err != nil || o != want[0] || g != want[1] {
			t.Errorf("ParseChown(%q) = %q %q %v", in, o, g, err)
		}
	}
	for _, bad := range []string{"", ":", "a:b:c", "a b"} {
		if _, _, err := ParseChown(bad); err == nil {
			t.Errorf("ParseChown(%q) accepted", bad)
		}
	}
}

func FuzzParseSocketAccess(f *testing.F) {
	for _, s := range []string{"660", "0660", "www-data", "a:b", ":g", "", "0", "7777", "a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if m, err := ParseSocketMode(s); err == nil && (m == 0 || m&^fs.ModePerm != 0) {
			t.Errorf("ParseSocketMode(%q) = %v: outside 1..0777", s, m)
		}
		if o, g, err := ParseChown(s); err == nil && (o == "" && g == "" || strings.Contains(o+g, ":")) {
			t.Errorf("ParseChown(%q) = %q %q", s, o, g)
		}
	})
}
