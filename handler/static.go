package handler

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/fcgishim/fcgishim/appctl"
)

// static serves the [static] directories and passes every other path to
// next. Each directory is opened as an os.Root, so no path (.., symlinks)
// leaves it; dotfiles, directories, our binary, our config, the app log and
// the runtime directory's files are never served (STATIC-01..05).
type static struct {
	next   http.Handler
	mounts []mount  // longest prefix first
	deny   []string // files never served, compared by identity per request
	runDir string   // its files are never served; "" = none
}

type mount struct {
	base string // the prefix without its trailing slash; "" for "/"
	root *os.Root
}

func newStatic(o Options, next http.Handler) (http.Handler, error) {
	c := o.Config
	s := &static{next: next}
	for _, prefix := range c.StaticPrefixes() {
		dir := c.Resolve(c.Static[prefix])
		root, err := os.OpenRoot(dir)
		if err != nil {
			for _, m := range s.mounts {
				m.root.Close()
			}
			return nil, fmt.Errorf("[static] %q: %w", prefix, err)
		}
		s.mounts = append(s.mounts, mount{base: strings.TrimRight(prefix, "/"), root: root})
	}
	if o.Executable != "" {
		s.deny = append(s.deny, o.Executable)
	}
	if c.File != "" {
		s.deny = append(s.deny, c.File)
	}
	if c.App.Log != "" {
		s.deny = append(s.deny, c.Resolve(c.App.Log))
	}
	if len(c.App.Command) > 0 && c.File != "" {
		s.runDir = appctl.RuntimeDir(c, os.Getenv)
	}
	return s, nil
}

func (s *static) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := RequestOf(r).PathInfo
	for _, m := range s.mounts {
		// Match on a segment boundary: "/static" is not a prefix of
		// "/static../secret" (STATIC-04).
		if p != m.base && !strings.HasPrefix(p, m.base+"/") {
			continue
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			plainError(w, http.StatusMethodNotAllowed)
			return
		}
		s.serve(w, r, m.root, p[len(m.base):])
		return
	}
	s.next.ServeHTTP(w, r)
}

// cleanRel turns the path below a prefix into a name inside the root, or
// reports false for anything we refuse: empty, "." or ".." segments,
// dotfiles, backslashes, NUL.
func cleanRel(p string) (string, bool) {
	var segs []string
	for seg := range strings.SplitSeq(p, "/") {
		switch {
		case seg == "":
			continue
		case seg[0] == '.', strings.ContainsAny(seg, "\\\x00"):
			return "", false
		}
		segs = append(segs, seg)
	}
	if len(segs) == 0 {
		return "", false
	}
	return strings.Join(segs, "/"), true
}

func (s *static) serve(w http.ResponseWriter, r *http.Request, root *os.Root, p string) {
	name, ok := cleanRel(p)
	if !ok {
		plainError(w, http.StatusNotFound)
		return
	}
	f, err := root.Open(name)
	if err != nil {
		// Escapes through symlinks fail here too: os.Root refuses them.
		plainError(w, http.StatusNotFound)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || s.denied(root, name, fi) {
		plainError(w, http.StatusNotFound)
		return
	}
	h := w.Header()
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		ctype = "application/octet-stream" // never sniff: a guessed text/html is an XSS
	}
	h.Set("Content-Type", ctype)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Etag", fmt.Sprintf(`"%x-%x"`, fi.ModTime().UnixNano(), fi.Size()))
	http.ServeContent(w, r, name, fi.ModTime(), &sizedFile{f: f, size: fi.Size()})
}

// denied reports whether fi (opened as name in root) is one of our own
// files: the binary, the config, the app log, or a file directly in the
// runtime directory. Compared by identity, so links and renames do not help.
func (s *static) denied(root *os.Root, name string, fi os.FileInfo) bool {
	for _, d := range s.deny {
		if dfi, err := os.Stat(d); err == nil && os.SameFile(fi, dfi) {
			return true
		}
	}
	if s.runDir != "" {
		if rfi, err := os.Stat(s.runDir); err == nil {
			if pfi, err := root.Stat(path.Dir(name)); err == nil && os.SameFile(pfi, rfi) {
				return true
			}
		}
	}
	return false
}

// sizedFile breaks the response when the file shrank after its length was
// sent, rather than ending a short body as if complete (STATIC-07).
type sizedFile struct {
	f    *os.File
	size int64
	pos  int64
}

func (s *sizedFile) Read(p []byte) (int, error) {
	n, err := s.f.Read(p)
	s.pos += int64(n)
	if errors.Is(err, io.EOF) && s.pos < s.size {
		panic(http.ErrAbortHandler)
	}
	return n, err
}

func (s *sizedFile) Seek(off int64, whence int) (int64, error) {
	n, err := s.f.Seek(off, whence)
	if err == nil {
		s.pos = n
	}
	return n, err
}

func plainError(w http.ResponseWriter, code int) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(http.StatusText(code))+1))
	w.WriteHeader(code)
	io.WriteString(w, http.StatusText(code)+"\n")
}
