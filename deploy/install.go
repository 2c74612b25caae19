package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/fcgishim/fcgishim/config"
)

// InstallOptions say what Install puts where.
type InstallOptions struct {
	Source string // the binary to copy (the running one)
	Dir    string // the site's directory; created (0755) when missing
	Name   string // the binary's name in Dir; "" = "mysite.fcgi"
	// Handler selects the .htaccess block: "fcgid" (default), "fastcgi",
	// "cgi", or "none" to leave .htaccess alone.
	Handler string
	Out     io.Writer // progress, one line per step; nil = discard
}

// Install copies the binary into Dir by writing a temporary file there and
// renaming it (a running copy keeps its old inode and restarts on the
// change; "Text file busy" cannot happen), writes a commented config
// template when there is none, and writes or updates the fcgishim block of
// .htaccess, keeping the other lines and a backup. Permissions are never
// loosened. It reports whether anything changed.
func Install(o InstallOptions) (changed bool, err error) {
	if o.Name == "" {
		o.Name = "mysite.fcgi"
	}
	if o.Handler == "" {
		o.Handler = "fcgid"
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if strings.ContainsRune(o.Name, '/') {
		return false, fmt.Errorf("install: --name %q must be a file name", o.Name)
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return false, fmt.Errorf("install: %w", err)
	}
	say := func(format string, args ...any) { fmt.Fprintf(o.Out, format+"\n", args...) }

	if fi, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return false, fmt.Errorf("install: create %s: %w", dir, err)
		}
		say("created   %s (mode 0755)", dir)
		changed = true
	} else if err != nil {
		return false, fmt.Errorf("install: %w", err)
	} else if !fi.IsDir() {
		return false, fmt.Errorf("install: %s is not a directory", dir)
	}

	c, err := installBinary(o.Source, filepath.Join(dir, o.Name), say)
	if err != nil {
		return false, err
	}
	changed = changed || c

	p := Params{Name: o.Name, Dir: dir}.Defaults()
	cfgPath := config.PathFor(p.Binary())
	if _, err := os.Lstat(cfgPath); errors.Is(err, fs.ErrNotExist) {
		if err := writeFileAtomic(cfgPath, []byte(ConfigTemplate(o.Name)), 0o644); err != nil {
			return false, fmt.Errorf("install: %w", err)
		}
		say("wrote     %s (no [app] yet: the info page answers)", cfgPath)
		changed = true
	} else if err != nil {
		return false, fmt.Errorf("install: %w", err)
	} else if _, err := config.Load(cfgPath); err != nil {
		say("kept      %s, but it has an error: %v", cfgPath, err)
	} else {
		say("kept      %s", cfgPath)
	}

	if o.Handler != "none" {
		block, err := Render("htaccess-"+o.Handler, p)
		if err != nil {
			return false, fmt.Errorf("install: --handler: %w", err)
		}
		c, err := installHtaccess(filepath.Join(dir, ".htaccess"), block, say)
		if err != nil {
			return false, err
		}
		changed = changed || c
	}
	if !changed {
		say("%s is up to date; nothing changed", dir)
	} else {
		say("done: open the directory's URL; `%s check %s` diagnoses problems", p.Binary(), dir)
	}
	return changed, nil
}

// installBinary puts src at dst by rename unless dst already has the same
// content. A new file is 0755; an existing one keeps its mode, gains execute
// where it has read, and loses group and world write (suEXEC refuses those).
func installBinary(src, dst string, say func(string, ...any)) (bool, error) {
	data, err := os.ReadFile(src)
	if err != nil {
		return false, fmt.Errorf("install: read %s: %w", src, err)
	}
	mode := fs.FileMode(0o755)
	if fi, err := os.Stat(dst); err == nil {
		perm := fi.Mode().Perm()
		mode = (perm | (perm&0o444)>>2 | 0o100) &^ 0o022
		if fi.Mode().Perm() == mode {
			old, err := os.ReadFile(dst)
			if err == nil && bytes.Equal(old, data) {
				say("unchanged %s (same content)", dst)
				return false, nil
			}
		}
	}
	say("copying   %s -> %s (%.1f MB) ...", src, dst, float64(len(data))/1e6)
	if err := writeFileAtomic(dst, data, mode); err != nil {
		return false, fmt.Errorf("install: %w", err)
	}
	say("installed %s (mode %04o); a running copy restarts on its own", dst, mode)
	return true, nil
}

// installHtaccess writes block into path's fcgishim block, keeping the
// file's other lines and mode and backing up the old file as .bak.
func installHtaccess(path, block string, say func(string, ...any)) (bool, error) {
	old, err := os.ReadFile(path)
	mode := fs.FileMode(0o644)
	if errors.Is(err, fs.ErrNotExist) {
		old = nil
	} else if err != nil {
		return false, fmt.Errorf("install: %w", err)
	} else if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	text := UpdateBlock(string(old), block)
	if text == string(old) {
		say("unchanged %s", path)
		return false, nil
	}
	if old != nil {
		if err := writeFileAtomic(path+".bak", old, mode); err != nil {
			return false, fmt.Errorf("install: backup: %w", err)
		}
	}
	if err := writeFileAtomic(path, []byte(text), mode); err != nil {
		return false, fmt.Errorf("install: %w", err)
	}
	if old != nil {
		say("updated   %s (the fcgishim block; previous file in .htaccess.bak)", path)
	} else {
		say("wrote     %s", path)
	}
	return true, nil
}

// writeFileAtomic writes data to a temporary file beside path and renames
// it over path.
func writeFileAtomic(path string, data []byte, mode fs.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename to %s: %w", path, err)
	}
	return nil
}

// ConfigTemplate is the commented mysite.toml Install writes. It has no
// [app], so the built-in info page answers until one is added.
func ConfigTemplate(name string) string {
	return `# ` + strings.TrimSuffix(name, filepath.Ext(name)) + `.toml: the configuration of ` + name + ` beside it.
# Saving this file restarts the site. Unknown keys are errors (with the line).
# With no [app] table the built-in info page answers: open the site's URL.

# The app, started once and shared by every copy of ` + name + `:
# [app]
# wsgi = "mysite.wsgi"     # a WSGI app (Django, Flask: "module:callable"), served by the built-in runner
# python = "python3"       # its interpreter; a virtualenv's: "/home/user/venv/bin/python"
# workers = 0              # runner processes at most (they join as the load needs them); 0 = one per CPU, at least 2
# Or any command, e.g. gunicorn (instead of wsgi):
# command = ["gunicorn", "--bind", "unix:{socket}", "--proxy-protocol", "mysite.wsgi"]  # {socket} / {port} are filled in
# proxy_protocol = true   # with gunicorn's --proxy-protocol: the app sees the visitor's address
# workdir = "/home/user/myproject"   # the app's directory (first on sys.path for wsgi)
# env = { DJANGO_SETTINGS_MODULE = "mysite.settings" }
# Secrets (passwords, API keys) do not belong in this file: it lies in a
# public directory that other users on the machine can often read. Put
# KEY=VALUE lines in a file in your home, chmod 600, and name it here:
# env_file = "~/.config/` + strings.TrimSuffix(name, filepath.Ext(name)) + `.env"
# Or an app that is already running:
# upstream = "http://127.0.0.1:8000"

# Directories served directly (URL path as the app sees it = directory):
# [static]
# "/static/" = "/home/user/myproject/static"

# [server]
# force_script_name = ""   # the URL prefix, when deriving it goes wrong
# watch = "auto"           # restart on change: auto (inotify, polling on NFS), poll, off
`
}
