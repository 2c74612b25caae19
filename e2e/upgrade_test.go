package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// supervisors returns the PIDs of the supervisors running for configPath,
// with the binary each runs (" (deleted)" appended when it was replaced).
func supervisors(configPath string) map[int]string {
	out := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		args := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
		if len(args) != 4 || string(args[1]) != "_supervise" || string(args[3]) != configPath {
			continue
		}
		exe, _ := os.Readlink("/proc/" + e.Name() + "/exe")
		out[pid] = exe
	}
	return out
}

// mv new mysite.fcgi on a live site with an app, behind Apache + mod_fcgid:
// afterwards exactly one supervisor runs, and it runs the new file, not the
// deleted old one; no request fails meanwhile.
func TestApacheFcgidBinaryUpgradeReplacesSupervisor(t *testing.T) {
	peertest.Need(t, "/usr/bin/python3")
	root := peertest.Dir(t)
	files := filepath.Join(root, "files")
	os.MkdirAll(files, 0o755)
	os.WriteFile(filepath.Join(files, "hello.txt"), []byte("hello\n"), 0o644)
	site := filepath.Join(root, "public_html", "mysite")
	os.MkdirAll(site, 0o755)
	bin := install(t, site, "mysite.fcgi")
	os.WriteFile(filepath.Join(site, ".htaccess"), []byte(htaccessFcgid), 0o644)
	cfgPath := filepath.Join(site, "mysite.toml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("[app]\ncommand = [\"python3\", \"-m\", \"http.server\", \"--bind\", \"127.0.0.1\", \"{port}\"]\nworkdir = %q\nstrip_prefix = true\nidle_stop = \"1s\"\n", files)), 0o644)
	t.Cleanup(func() { // runs after Apache has stopped
		peertest.Eventually(t, 30*time.Second, "the supervisors to stop", func() bool { return len(supervisors(cfgPath)) == 0 })
	})
	srv := sharedHost(t, filepath.Join(root, "public_html"), "")
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(srv.Log())
		}
	})
	c := &http.Client{Timeout: 30 * time.Second}
	if code, body := peertest.Get(t, c, srv.URL+"/mysite/hello.txt"); code != 200 || body != "hello\n" {
		t.Fatalf("before the upgrade: %d %q", code, body)
	}
	before := supervisors(cfgPath)
	if len(before) != 1 {
		t.Fatalf("supervisors before the upgrade: %v, want one", before)
	}

	ld := startLoad(c, srv.URL+"/mysite/hello.txt", 2)
	// The upload, as the README says: a new file renamed over the old.
	b, err := os.ReadFile(binary(t))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(bin+".new", b, 0o755)
	if err := os.Rename(bin+".new", bin); err != nil {
		t.Fatal(err)
	}
	peertest.Eventually(t, 60*time.Second, "one supervisor, running the new binary", func() bool {
		now := supervisors(cfgPath)
		if len(now) != 1 {
			return false
		}
		for pid, exe := range now {
			return before[pid] == "" && exe == bin
		}
		return false
	})
	n, failures := ld.finish()
	t.Logf("%d requests during the upgrade", n)
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed; first: %s", len(failures), n, failures[0])
	}
}
