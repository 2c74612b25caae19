package reload

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"
)

const testDebounce = 50 * time.Millisecond

func newWatcher(t *testing.T, mode string, files ...string) *Watcher {
	t.Helper()
	w, err := New(Options{Files: files, Mode: mode, Debounce: testDebounce, PollInterval: 100 * time.Millisecond})
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

// write is os.WriteFile for setup: a failure ends the test.
func write(t *testing.T, path, data string, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), perm); err != nil {
		t.Fatal(err)
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
				write(t, bin, "v1", 0o755)
				w := newWatcher(t, mode, bin)
				touch(t, bin, time.Now().Add(time.Second))
				expectChange(t, w, bin)
			})
			t.Run("rename over", func(t *testing.T) {
				dir := t.TempDir()
				bin := filepath.Join(dir, "mysite.fcgi")
				write(t, bin, "v1", 0o755)
				w := newWatcher(t, mode, bin)
				tmp := filepath.Join(dir, ".mysite.fcgi.new")
				write(t, tmp, "v2", 0o755)
				if err := os.Rename(tmp, bin); err != nil {
					t.Fatal(err)
				}
				expectChange(t, w, bin)
			})
			t.Run("cp over", func(t *testing.T) {
				dir := t.TempDir()
				cfg := filepath.Join(dir, "mysite.toml")
				write(t, cfg, "# v1\n", 0o644)
				w := newWatcher(t, mode, cfg)
				src := filepath.Join(t.TempDir(), "new.toml")
				write(t, src, "# version two\n", 0o644)
				if out, err := exec.Command("cp", src, cfg).CombinedOutput(); err != nil {
					t.Fatalf("cp: %v %s", err, out)
				}
				expectChange(t, w, cfg)
			})
			t.Run("restart.txt appears", func(t *testing.T) {
				dir := t.TempDir()
				rt := filepath.Join(dir, "restart.txt")
				w := newWatcher(t, mode, rt)
				write(t, rt, "", 0o644)
				expectChange(t, w, rt)
			})
		})
	}
}

// Many touches in a row (a deploy loop) make one restart, not a loop that
// would make mod_fcgid refuse to spawn us, and that restart waits for the
// files to hold still: it comes no sooner than the debounce after the last
// touch.
func TestBurstOfTouchesIsOneChange(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "mysite.fcgi")
	write(t, bin, "v1", 0o755)
	w := newWatcher(t, "auto", bin)
	base := time.Now()
	for i := 1; i <= 10; i++ {
		touch(t, bin, base.Add(time.Duration(i)*time.Second))
	}
	last := time.Now()
	expectChange(t, w, bin)
	if waited := time.Since(last); waited < testDebounce {
		t.Fatalf("change reported %s after the last touch, before the %s debounce", waited, testDebounce)
	}
	quiet(t, w, 500*time.Millisecond)
}

// Changes spaced closer than the debounce window keep postponing the
// report: exactly one change is reported, a debounce after the last one.
// The fake clock of testing/synctest paces the changes exactly; polling
// (not inotify, whose reader is not durably blocked) sees them.
func TestChangesWithinDebounceAreOneDelayedChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const debounce, poll = 200 * time.Millisecond, time.Second
		dir := t.TempDir()
		bin := filepath.Join(dir, "mysite.fcgi")
		write(t, bin, "v1", 0o755)
		w, err := New(Options{Files: []string{bin}, Mode: "poll", Debounce: debounce, PollInterval: poll})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		mtime := time.Now().Add(-time.Hour)
		change := func() time.Time {
			mtime = mtime.Add(time.Second)
			touch(t, bin, mtime)
			return time.Now()
		}
		reports := func() (n int) {
			synctest.Wait() // the watcher has handled everything due by now
			for {
				select {
				case <-w.C:
					n++
				default:
					return n
				}
			}
		}

		change()
		time.Sleep(poll) // the poll sees the first change and starts the debounce
		var last time.Time
		for range 4 { // each change lands inside the previous debounce window
			time.Sleep(debounce * 3 / 4)
			if n := reports(); n != 0 {
				t.Fatalf("%d change(s) reported while the file was still changing", n)
			}
			last = change()
		}
		for time.Since(last) < debounce {
			time.Sleep(debounce / 20)
			if n := reports(); n != 0 {
				t.Fatalf("change reported %s after the last change, before the %s debounce", time.Since(last), debounce)
			}
		}
		var got int
		for time.Since(last) < 10*poll {
			time.Sleep(debounce / 20)
			got += reports()
		}
		if got != 1 {
			t.Fatalf("%d changes reported for one burst, want 1", got)
		}
	})
}

// A deleted binary is not a reason to restart (there would be nothing to
// run); it keeps serving until a new one appears.
func TestDeletedFileIsNotAChange(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "mysite.fcgi")
	write(t, bin, "v1", 0o755)
	w := newWatcher(t, "auto", bin)
	if err := os.Remove(bin); err != nil {
		t.Fatal(err)
	}
	quiet(t, w, 500*time.Millisecond)
	write(t, bin, "v2", 0o755)
	expectChange(t, w, bin)
}

// Other files in the directory are ignored.
func TestNeighboursIgnored(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "mysite.fcgi")
	write(t, bin, "v1", 0o755)
	w := newWatcher(t, "auto", bin)
	for i := 0; i < 5; i++ {
		write(t, filepath.Join(dir, "other.txt"), string(rune('a'+i)), 0o644)
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
