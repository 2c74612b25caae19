package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/config"
	"github.com/fcgishim/fcgishim/internal/peertest"
)

// deployRun runs bin with args and returns its combined output and error.
func deployRun(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}

type deployFileState struct {
	mode    os.FileMode
	mtime   time.Time
	ino     uint64
	content string
}

func deploySnapshot(t *testing.T, dir string) map[string]deployFileState {
	t.Helper()
	m := map[string]deployFileState{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		m[e.Name()] = deployFileState{fi.Mode(), fi.ModTime(), deployInode(fi), string(b)}
	}
	return m
}

// install into an empty directory gives a site a real Apache + mod_fcgid
// serves at that directory's URL; a second install changes nothing.
func TestDeployInstallServesAndIsIdempotent(t *testing.T) {
	root := peertest.Dir(t)
	site := filepath.Join(root, "mysite")
	if err := os.Mkdir(site, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := deployRun(t, binary(t), "install", site)
	if err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	for _, want := range []string{"mysite.fcgi", "mysite.toml", ".htaccess"} {
		if !strings.Contains(out, want) {
			t.Errorf("install output does not mention %s:\n%s", want, out)
		}
	}
	fi, err := os.Stat(filepath.Join(site, "mysite.fcgi"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("binary: %v mode %v", err, fi.Mode())
	}
	if cfg, err := config.Load(filepath.Join(site, "mysite.toml")); err != nil || cfg.File == "" || len(cfg.App.Command) > 0 {
		t.Fatalf("template: %v %+v", err, cfg)
	}
	srv := sharedHost(t, root, "")
	in := deployInfo(t, srv.URL+"/mysite/admin/login/?next=/", "", srv.Log)
	deployWant(t, "installed site", in, "fastcgi-stdin", "/mysite", "/admin/login/")

	before := deploySnapshot(t, site)
	out, err = deployRun(t, filepath.Join(site, "mysite.fcgi"), "install", site)
	if err != nil || !strings.Contains(out, "up to date") {
		t.Fatalf("second install: %v\n%s", err, out)
	}
	after := deploySnapshot(t, site)
	for name, b := range before {
		if a, ok := after[name]; !ok || a != b {
			t.Errorf("second install changed %s: %+v -> %+v", name, b, a)
		}
	}
	if len(after) != len(before) {
		t.Errorf("second install added files: %v -> %v", deployKeys(before), deployKeys(after))
	}
}

func deployKeys(m map[string]deployFileState) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// The user's own .htaccess lines survive, with a backup, and the block is
// replaced rather than added twice.
func TestDeployInstallKeepsUserHtaccess(t *testing.T) {
	site := t.TempDir()
	user := "ErrorDocument 404 /missing.html\nHeader set X-Mine yes\n"
	os.WriteFile(filepath.Join(site, ".htaccess"), []byte(user), 0o640)
	if out, err := deployRun(t, binary(t), "install", site); err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(filepath.Join(site, ".htaccess"))
	if !strings.HasPrefix(string(b), user) || strings.Count(string(b), "# BEGIN fcgishim") != 1 {
		t.Errorf(".htaccess:\n%s", b)
	}
	if bak, _ := os.ReadFile(filepath.Join(site, ".htaccess.bak")); string(bak) != user {
		t.Errorf(".htaccess.bak = %q", bak)
	}
	if fi, _ := os.Stat(filepath.Join(site, ".htaccess")); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode loosened to %v", fi.Mode().Perm())
	}
	if out, err := deployRun(t, binary(t), "install", site, "--handler", "cgi"); err != nil {
		t.Fatalf("install --handler cgi: %v\n%s", err, out)
	}
	b, _ = os.ReadFile(filepath.Join(site, ".htaccess"))
	if strings.Count(string(b), "# BEGIN fcgishim") != 1 || !strings.Contains(string(b), "cgi-script") || strings.Contains(string(b), "fcgid-script") {
		t.Errorf("after --handler cgi:\n%s", b)
	}
}

// Installing a new build over a live site under load: no request fails and
// the site reports a new start and the new version.
func TestDeployInstallNewBuildUnderLoad(t *testing.T) {
	root := peertest.Dir(t)
	site := filepath.Join(root, "mysite")
	os.Mkdir(site, 0o755)
	if out, err := deployRun(t, binary(t), "install", site); err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	v2dir := peertest.Dir(t)
	v2 := filepath.Join(v2dir, "mysite.fcgi")
	if out, err := exec.Command("go", "build", "-ldflags", "-X github.com/fcgishim/fcgishim/serve.Version=v2", "-o", v2, moduleRoot).CombinedOutput(); err != nil {
		t.Fatalf("go build v2: %v\n%s", err, out)
	}
	srv := sharedHost(t, root, "")
	first := deployInfo(t, srv.URL+"/mysite/warmup", "", srv.Log)
	if first.Version == "v2" {
		t.Fatal("the first build already says v2")
	}

	c := &http.Client{Timeout: 20 * time.Second}
	var (
		mu       sync.Mutex
		n        int
		failures []string
		newStart string
	)
	sawV2 := make(chan struct{})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				in, _, err := getInfo(c, "GET", fmt.Sprintf("%s/mysite/load/%d", srv.URL, i), nil)
				mu.Lock()
				n++
				if err != nil {
					failures = append(failures, err.Error())
				} else if in.Version == "v2" && newStart == "" {
					newStart = in.Started
					close(sawV2)
				}
				mu.Unlock()
			}
		}()
	}
	out, err := deployRun(t, v2, "install", site)
	if err != nil {
		t.Fatalf("install v2: %v\n%s", err, out)
	}
	select {
	case <-sawV2:
	case <-time.After(60 * time.Second):
		t.Errorf("no v2 answer within 60s\n%s", srv.Log())
	}
	// A little more load after the switch, counted rather than timed.
	mu.Lock()
	target := n + 50
	mu.Unlock()
	for deadline := time.Now().Add(30 * time.Second); ; {
		mu.Lock()
		done := n >= target
		mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the new binary served fewer than 50 requests within 30s after the switch")
			break
		}
		time.Sleep(10 * time.Millisecond) // polling a counter
	}
	close(stop)
	wg.Wait()
	t.Logf("%d requests during the install", n)
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed; first: %s\n%s", len(failures), n, failures[0], srv.Log())
	}
	if newStart == "" || newStart == first.Started {
		t.Errorf("started %q, want a new start after %q", newStart, first.Started)
	}
	if !strings.Contains(out, "installed") {
		t.Errorf("install v2 output:\n%s", out)
	}
}

func deployInode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}
