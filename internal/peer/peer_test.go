package peer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The harness itself must bring up each server and serve a static file, so a
// broken harness is not mistaken for a broken product.
func TestServersServeStaticFile(t *testing.T) {
	t.Run("nginx", func(t *testing.T) {
		root := Dir(t)
		os.WriteFile(filepath.Join(root, "hi.txt"), []byte("hello nginx"), 0o644)
		s := Nginx(t, "", "root "+root+";")
		if code, body := Get(t, nil, s.URL+"/hi.txt"); code != 200 || body != "hello nginx" {
			t.Fatalf("got %d %q", code, body)
		}
	})
	t.Run("apache", func(t *testing.T) {
		root := Dir(t)
		os.WriteFile(filepath.Join(root, "hi.txt"), []byte("hello apache"), 0o644)
		s := Apache(t, nil, "DocumentRoot "+root+"\n<Directory "+root+">\nRequire all granted\n</Directory>")
		if code, body := Get(t, nil, s.URL+"/hi.txt"); code != 200 || body != "hello apache" {
			t.Fatalf("got %d %q\n%s", code, body, s.Log())
		}
	})
	t.Run("lighttpd", func(t *testing.T) {
		s := Lighttpd(t, "")
		os.WriteFile(filepath.Join(s.Dir, "docroot", "hi.txt"), []byte("hello lighttpd"), 0o644)
		if code, body := Get(t, nil, s.URL+"/hi.txt"); code != 200 || !strings.Contains(body, "hello lighttpd") {
			t.Fatalf("got %d %q", code, body)
		}
	})
}
