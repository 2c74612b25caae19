package peertest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"testing"
)

// Apache's original mod_fastcgi is not packaged by Debian (or any current
// distribution). The tests build it from its source, kept beside the
// repository in ../shared/peers/mod_fastcgi (relative to the module root),
// with apxs from apache2-dev.
const modFastCGISource = "../shared/peers/mod_fastcgi"

var modFastCGI struct {
	once sync.Once
	path string // the built module
	skip string // why it is not available (a missing peer)
	err  error  // a build that failed
}

// ModFastCGI returns the path of a mod_fastcgi.so built for the installed
// Apache. It is built once per test binary and cached across runs in the
// temporary directory, keyed by a hash of the source. A missing source or
// apxs skips t, or fails it under CI=true; a failed build fails it.
func ModFastCGI(t testing.TB) string {
	t.Helper()
	m := &modFastCGI
	m.once.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			m.err = err
			return
		}
		m.path, m.skip, m.err = buildModFastCGI(filepath.Join(root, modFastCGISource))
	})
	switch {
	case m.err != nil:
		t.Fatalf("build mod_fastcgi: %v", m.err)
	case m.skip != "" && os.Getenv("CI") == "true":
		t.Fatalf("mod_fastcgi is required in CI: %s", m.skip)
	case m.skip != "":
		t.Skip(m.skip)
	}
	return m.path
}

// ModFastCGIConf is the httpd.conf lines that load mod_fastcgi: the module
// and its FastCgiIpcDir inside the server's directory ({{DIR}}, which
// Apache replaces; mod_fastcgi creates it for Apache's user).
func ModFastCGIConf(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("LoadModule fastcgi_module %s\nFastCgiIpcDir {{DIR}}/fastcgi\n", ModFastCGI(t))
}

// buildModFastCGI builds the module from the source in src, or says why it
// cannot (skip) when the source or apxs is missing.
func buildModFastCGI(src string) (path, skip string, err error) {
	src = filepath.Clean(src)
	files, _ := filepath.Glob(filepath.Join(src, "*.[ch]"))
	if len(files) == 0 {
		return "", fmt.Sprintf("mod_fastcgi's source is not in %s (the shared peers folder beside the repository)", src), nil
	}
	apxs, lerr := exec.LookPath("apxs")
	if lerr != nil {
		return "", "apxs is not installed (Debian: apache2-dev); it builds mod_fastcgi", nil
	}
	sort.Strings(files)
	sum, err := hashFiles(append(files, apxs))
	if err != nil {
		return "", "", err
	}
	cache := filepath.Join(os.TempDir(), "fcgishim-mod_fastcgi-"+sum[:16])
	path = filepath.Join(cache, "mod_fastcgi.so")
	if _, err := os.Stat(path); err == nil {
		return path, "", nil
	}
	scratch, err := os.MkdirTemp("", "fcgishim-mod_fastcgi-build-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(scratch)
	built, err := apxsBuild(apxs, files, scratch)
	if err != nil {
		return "", "", err
	}
	// Test binaries of several packages may build at once: each renames
	// its own complete copy into place.
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", "", err
	}
	tmp, err := os.CreateTemp(cache, "mod_fastcgi.so.*")
	if err != nil {
		return "", "", err
	}
	tmp.Close()
	if err := copyFile(built, tmp.Name()); err != nil {
		os.Remove(tmp.Name())
		return "", "", err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return "", "", err
	}
	return path, "", nil
}

// apxsBuild compiles the sources in the scratch directory dir and returns
// the module it made there.
func apxsBuild(apxs string, files []string, dir string) (string, error) {
	var cfiles []string
	for _, f := range files {
		if err := copyFile(f, filepath.Join(dir, filepath.Base(f))); err != nil {
			return "", err
		}
		if filepath.Ext(f) == ".c" {
			cfiles = append(cfiles, filepath.Base(f))
		}
	}
	// mod_fastcgi.c first: apxs names the module after the first file.
	sort.Slice(cfiles, func(i, j int) bool { return cfiles[i] == "mod_fastcgi.c" && cfiles[j] != "mod_fastcgi.c" })
	cmd := exec.Command(apxs, append([]string{"-c", "-o", "mod_fastcgi.so"}, cfiles...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apxs -c: %v\n%s", err, out)
	}
	built := filepath.Join(dir, ".libs", "mod_fastcgi.so")
	if _, err := os.Stat(built); err != nil {
		return "", fmt.Errorf("apxs made no .libs/mod_fastcgi.so: %w", err)
	}
	return built, nil
}

func hashFiles(files []string) (string, error) {
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", filepath.Base(f), len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}

// moduleRoot is the directory holding go.mod, found upwards from the
// working directory (a test runs in its package's directory).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
