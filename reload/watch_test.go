package reload

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func newWatcher(t *testing.T, mode string, files ...string) *Watcher {
	t.Helper()
	w, err := New(Options{Files: files, Mode: mode, Debounce: 50 * time.Millisecond, PollInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func expectChange(t *testing.T, w *Watcher, want string) {
	t.Helper()
	select {
	case got := <-w.C:
		if got != want {
			t.Fatalf("change reported for %s, want %s", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no change reported for %s", want)
	}
}

// quiet asserts no further change is reported within d (a bounded negative).
func quiet(t *testing.T, w *Watcher, d time.Duration) {
	t.Helper()
	select {
	case got := <-w.C:
		t.Fatalf("unexpected extra change for %s", got)
	case <-time.After(d):
	}
}

func touch(t *testing.T, path string, when time.Time) {
	t.Helper()
	if err := os.Chtimes(path, when, when); err != nil {
		t.Fatal(err)
	}
}

func TestChangesAreSeen(t *testing.T) {
	for _, mode := range []string{"auto", "poll"} {
		t.Run(mode, func(t *testing.T) {
			t.Run("touch", func(t *testing.T) {
				dir := t.TempDir()
				bin := filepath.Join(dir, "mysite.fcgi")
				os.WriteFile(bin, []byte("v1"), 0o755)
				w := newWatcher(t, mode, bin)
				touch(t, bin, time.Now().Add(time.Second))
				expectChange(t, w, bin)
			})
			t.Run("rename over", func(t *testing.T) {
				dir := t.TempDir()
				bin := filepath.Join(dir, "mysite.fcgi")
				os.WriteFile(bin, []byte("v1"), 0o755)
				w := newWatcher(t, mode, bin)
				tmp := filepath.Join(dir, ".mysite.fcgi.new")
				os.WriteFile(tmp, []byte("v2"), 0o755)
				if err := os.Rename(tmp, bin); err != nil {
					t.Fatal(err)
				}
				expectChange(t, w, bin)
			})
			t.Run("cp over", func(t *testing.T) {
				dir := t.TempDir()
				cfg := filepath.Join(dir, "mysite.toml")
				os.WriteFile(cfg, []byte("# v1\n"), 0o644)
				w := newWatcher(t, mode, cfg)
				src := filepath.Join(t.TempDir(), "new.toml")
				os.WriteFile(src, []byte("# version two\n"), 0o644)
				if out, err := exec.Command("cp", src, cfg).CombinedOutput(); err != nil {
					t.Fatalf("cp: %v %s", err, out)
				}
				expectChange(t, w, cfg)
			})
			t.Run("restart.txt appears", func(t *testing.T) {
				dir := t.TempDir()
				rt := filepath.Join(dir, "restart.txt")
				w := newWatcher(t, mode, rt)
				os.WriteFile(rt, nil, 0o644)
				expectChange(t, w, rt)
			})
		})
	}
}

// Many touches in a row (a deploy loop) make one restart, not a loop that
// would make mod_fcgid refuse to spawn us.
func TestBurstOfTouchesIsOneChange(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "mysite.fcgi")
	os.WriteFile(bin, []byte("v1"), 0o755)
	w := newWatcher(t, "auto", bin)
	base := time.Now()
	for i := 1; i <= 10; i++ {
		touch(t, bin, base.Add(time.Duration(i)*time.Second))
	}
	expectChange(t, w, bin)
	quiet(t, w, 500*time.Millisecond)
}

// A deleted binary is not a reason to restart (there would be nothing to
// run); it keeps serving until a new one appears.
func TestDeletedFileIsNotAChange(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "mysite.fcgi")
	os.WriteFile(bin, []byte("v1"), 0o755)
	w := newWatcher(t, "auto", bin)
	os.Remove(bin)
	quiet(t, w, 500*time.Millisecond)
	os.WriteFile(bin, []byte("v2"), 0o755)
	expectChange(t, w, bin)
}

// Other files in the directory are ignored.
func TestNeighboursIgnored(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "mysite.fcgi")
	os.WriteFile(bin, []byte("v1"), 0o755)
	w := newWatcher(t, "auto", bin)
	for i := 0; i < 5; i++ {
		os.WriteFile(filepath.Join(dir, "other.txt"), []byte{byte(i)}, 0o644)
	}
	quiet(t, w, 500*time.Millisecond)
	if w.Backend() != "inotify" {
		t.Fatalf("backend %q, want inotify on a local filesystem", w.Backend())
	}
}

// With watch = "off" a change goes unreported, while a polling watcher of the
// same file sees the same change in the same window: the quiet is the mode's.
func TestOffModeReportsNothing(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "mysite.fcgi")
	if err := os.WriteFile(bin, []byte("v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	off := newWatcher(t, "off", bin)
	if off.Backend() != "off" {
		t.Fatalf("backend %q, want off", off.Backend())
	}
	control := newWatcher(t, "poll", bin)
	touch(t, bin, time.Now().Add(time.Second))
	expectChange(t, control, bin)
	quiet(t, off, 300*time.Millisecond)
}
