package peertest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Without the source the build is not attempted and the reason names the
// folder it looked in (ModFastCGI skips with it, or fails under CI=true).
func TestModFastCGIMissingSourceSaysWhere(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "peers", "mod_fastcgi")
	path, skip, err := buildModFastCGI(missing)
	if err != nil || path != "" || !strings.Contains(skip, missing) {
		t.Errorf("got path %q skip %q err %v; want a skip naming %s", path, skip, err, missing)
	}
}

// The module that is built loads into the installed Apache (apache2 -t).
func TestModFastCGILoads(t *testing.T) {
	so := ModFastCGI(t)
	bin := Need(t, "apache2")[0]
	dir := t.TempDir()
	conf := filepath.Join(dir, "httpd.conf")
	text := "ServerRoot " + dir + "\nLoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so\n" +
		"LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so\n" +
		"LoadModule fastcgi_module " + so + "\nFastCgiIpcDir " + dir + "/fastcgi\n" +
		"Listen 127.0.0.1:1\nServerName x\nPidFile " + dir + "/pid\nErrorLog " + dir + "/err\nMutex file:" + dir + "\nDefaultRuntimeDir " + dir + "\n" +
		"FastCGIExternalServer " + dir + "/app.fcgi -socket " + dir + "/app.sock\n"
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-t", "-f", conf).CombinedOutput(); err != nil {
		t.Fatalf("apache2 -t with mod_fastcgi: %v\n%s", err, out)
	}
}
