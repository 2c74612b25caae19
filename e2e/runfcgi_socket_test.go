package e2e

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// [server] listen.group and listen.mode reach serve's socket; a flag
// replaces the file's value.
func TestServeSocketAccessFromConfig(t *testing.T) {
	deployNeedRoot(t)
	dir := peertest.Dir(t)
	bin := install(t, dir, "mysite.fcgi")
	os.WriteFile(filepath.Join(dir, "mysite.toml"), []byte("[server]\nlisten.group = \"www-data\"\nlisten.mode = \"0640\"\n"), 0o644)
	for _, tc := range []struct {
		flags []string
		mode  os.FileMode
	}{{nil, 0o640}, {[]string{"--chmod-socket", "660"}, 0o660}} {
		sock := filepath.Join(dir, "s.sock")
		p := deployStart(t, exec.Command(bin, append([]string{"serve", "--listen", "unix:" + sock}, tc.flags...)...))
		deployWaitDial(t, p, "unix", sock)
		fi, err := os.Lstat(sock)
		if err != nil {
			t.Fatal(err)
		}
		g, err := user.LookupGroupId(strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Gid)))
		if err != nil || g.Name != "www-data" || fi.Mode().Perm() != tc.mode {
			t.Errorf("%v: socket group %v (%v) mode %04o; want www-data %04o", tc.flags, g, err, fi.Mode().Perm(), tc.mode)
		}
		syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
		<-p.done
		p.done <- nil // for the cleanup
	}
}

// Socket options that cannot be applied stop the server with a message
// naming what failed, and leave no socket file behind.
func TestServeSocketAccessErrors(t *testing.T) {
	dir := peertest.Dir(t)
	bin := install(t, dir, "mysite.fcgi")
	sock := filepath.Join(dir, "s.sock")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--listen", "unix:" + sock, "--listen-group", "no-such-group-fcgishim"}, `group "no-such-group-fcgishim"`},
		{[]string{"serve", "--listen", "unix:" + sock, "--listen-mode", "0999"}, "want octal permission bits"},
		{[]string{"serve", "--listen", "unix:" + sock, "--chmod-socket", "660", "--listen-mode", "0660"}, "not both"},
		{[]string{"runfcgi", "socket=" + sock, "daemonize=false", "chown-socket=:no-such-group-fcgishim"}, `group "no-such-group-fcgishim"`},
		{[]string{"runfcgi", "socket=" + sock, "daemonize=false", "user=no-such-user-fcgishim"}, `user "no-such-user-fcgishim"`},
	} {
		out, err := exec.Command(bin, tc.args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: err %v, output %q; want a failure naming %q", tc.args, err, out, tc.want)
		}
		if _, err := os.Lstat(sock); err == nil {
			t.Errorf("%v: left %s behind", tc.args, sock)
			os.Remove(sock)
		}
	}
}
