package reload

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

// Options configure a Watcher. Zero values work.
type Options struct {
	// Files are the paths whose change means "restart". A file that is
	// missing at start counts as changed when it appears (restart.txt); a
	// file that disappears does not (a deleted binary keeps serving).
	Files []string
	// Mode: "auto" (inotify, plus a slow stat poll as a safety net; polling
	// only on network filesystems or when inotify fails), "poll", or "off".
	// "" = "auto".
	Mode         string
	Debounce     time.Duration // quiet time after the last event; 0 = 200ms
	MaxDelay     time.Duration // report at most this long after the first event; 0 = 2s
	PollInterval time.Duration // 0 = 2s
	Log          *slog.Logger  // nil = discard
}

// Watcher reports changes of its files on C, at most one per burst of events.
type Watcher struct {
	C       <-chan string // the path that changed
	backend string

	o      Options
	c      chan string
	fsw    *fsnotify.Watcher
	base   map[string]fingerprint // what "unchanged" means
	seen   map[string]fingerprint // a change seen once, awaiting confirmation
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// fingerprint identifies a file's content version cheaply. Any difference
// counts: touch (mtime), rename-deploy (inode), cp over (size, mtime),
// rsync -t (inode).
type fingerprint struct {
	exists          bool
	dev, ino        uint64
	size            int64
	mtimeS, mtimeNs int64
}

func stat(path string) fingerprint {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return fingerprint{}
	}
	return fingerprint{true, uint64(st.Dev), uint64(st.Ino), st.Size, st.Mtim.Sec, st.Mtim.Nsec}
}

// New records the files' current state and starts watching.
func New(o Options) (*Watcher, error) {
	if o.Debounce == 0 {
		o.Debounce = 200 * time.Millisecond
	}
	if o.MaxDelay == 0 {
		o.MaxDelay = 2 * time.Second
	}
	if o.PollInterval == 0 {
		o.PollInterval = 2 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	c := make(chan string, 1)
	w := &Watcher{C: c, c: c, o: o, base: map[string]fingerprint{}, seen: map[string]fingerprint{}}
	for _, f := range o.Files {
		w.base[f] = stat(f)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	mode := o.Mode
	if mode == "" {
		mode = "auto"
	}
	switch mode {
	case "off":
		w.backend = "off"
		return w, nil
	case "poll":
	case "auto":
		if fs := networkFS(o.Files); fs != "" {
			o.Log.Info("network filesystem: polling for changes", "fs", fs)
			break
		}
		fsw, err := w.watchDirs()
		if err != nil {
			o.Log.Warn("inotify unavailable, polling for changes", "err", err)
			break
		}
		w.fsw = fsw
		w.backend = "inotify"
		w.wg.Add(1)
		go w.loop(ctx, 10*o.PollInterval)
		return w, nil
	default:
		cancel()
		return nil, fmt.Errorf("watch mode %q: want auto, poll or off", mode)
	}
	w.backend = "poll"
	w.wg.Add(1)
	go w.loop(ctx, o.PollInterval)
	return w, nil
}

// Backend says how changes are seen: "inotify", "poll" or "off".
func (w *Watcher) Backend() string { return w.backend }

// Close stops watching and waits for the watcher's goroutine. Safe twice.
func (w *Watcher) Close() error {
	w.once.Do(func() {
		w.cancel()
		w.wg.Wait()
		if w.fsw != nil {
			w.fsw.Close()
		}
	})
	return nil
}

func (w *Watcher) watchDirs() (*fsnotify.Watcher, error) {
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	dirs := map[string]bool{}
	for _, f := range w.o.Files {
		dirs[filepath.Dir(f)] = true
	}
	for d := range dirs {
		if err := fsw.Add(d); err != nil {
			fsw.Close()
			return nil, fmt.Errorf("watch %s: %w", d, err)
		}
	}
	return fsw, nil
}

// loop owns all state: events arm a debounce timer; when it fires (or the
// poll ticks) the files are stat'ed and compared with the baseline.
func (w *Watcher) loop(ctx context.Context, poll time.Duration) {
	defer w.wg.Done()
	names := map[string]bool{}
	for _, f := range w.o.Files {
		names[filepath.Clean(f)] = true
	}
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w.fsw != nil {
		events, errs = w.fsw.Events, w.fsw.Errors
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	var first time.Time // zero when no burst is pending
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if !names[filepath.Clean(ev.Name)] {
				continue
			}
			now := time.Now()
			if first.IsZero() {
				first = now
			}
			wait := w.o.Debounce
			if rest := w.o.MaxDelay - now.Sub(first); rest < wait {
				wait = max(rest, 0)
			}
			debounce.Reset(wait)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			w.o.Log.Warn("file watcher", "err", err)
		case <-debounce.C:
			first = time.Time{}
			if w.check() {
				first = time.Now()
				debounce.Reset(w.o.Debounce)
			}
		case <-tick.C:
			if first.IsZero() && w.check() {
				first = time.Now()
				debounce.Reset(w.o.Debounce)
			}
		}
	}
}

// check compares the files with the baseline and reports the first change
// that has held still since the previous check. It returns true when a file
// is still changing (a copy in progress), so the caller looks again after
// one debounce period.
func (w *Watcher) check() (unstable bool) {
	for _, f := range w.o.Files {
		now := stat(f)
		if now == w.base[f] || !now.exists {
			delete(w.seen, f)
			continue
		}
		if prev, ok := w.seen[f]; !ok || prev != now {
			w.seen[f] = now
			unstable = true
			continue
		}
		delete(w.seen, f)
		w.base[f] = now
		select {
		case w.c <- f:
		default: // a change is already pending; one restart covers both
		}
		return false
	}
	return unstable
}

// networkFS returns the name of the network filesystem holding any of the
// files' directories, or "".
func networkFS(files []string) string {
	for _, f := range files {
		var st unix.Statfs_t
		if err := unix.Statfs(filepath.Dir(f), &st); err != nil {
			continue
		}
		switch st.Type {
		case unix.NFS_SUPER_MAGIC:
			return "nfs"
		case unix.SMB_SUPER_MAGIC, 0xFF534D42, 0xFE534D42:
			return "cifs"
		case unix.FUSE_SUPER_MAGIC:
			return "fuse"
		}
	}
	return ""
}

// Exists reports whether path exists; a deleted binary is not restarted into.
func Exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
