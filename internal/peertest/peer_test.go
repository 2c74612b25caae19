package peertest

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
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

// The suEXEC host runs a user's CGI script as that user with suEXEC's bare
// environment, and its users and their processes are gone after the test.
func TestSuexecHostRunsAsUser(t *testing.T) {
	var alice *User
	t.Run("host", func(t *testing.T) {
		alice = NewUser(t, "alice")
		h := Suexec(t, SuexecOptions{Modules: []string{"cgid"}, Conf: "ScriptSock {{DIR}}/cgid.sock"})
		alice.WriteFile(t, "public_html/.htaccess", []byte("Options +ExecCGI\nAddHandler cgi-script .cgi\n"), 0o644)
		alice.WriteFile(t, "public_html/id.cgi", []byte("#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nid -u\nenv | grep -E '^(HOME|PATH|TMPDIR|XDG_RUNTIME_DIR)=' | sort\n"), 0o755)
		code, body := Get(t, nil, h.UserURL(alice, "/id.cgi"))
		want := strconv.Itoa(alice.UID) + "\nPATH=" + h.Rules.SafePath + "\n"
		if code != 200 || body != want {
			t.Fatalf("GET /~%s/id.cgi: %d %q, want 200 %q\n%s\n%s", alice.Name, code, body, want, h.Log(), h.SuexecLog())
		}
		if !strings.Contains(h.SuexecLog(), "uid: ("+strconv.Itoa(alice.UID)+"/"+alice.Name+")") {
			t.Errorf("suexec.log does not show the run as %s:\n%s", alice.Name, h.SuexecLog())
		}
		bob := NewUser(t, "bob")
		if out := bob.Shell(t, "id -u; echo $HOME"); out != strconv.Itoa(bob.UID)+"\n"+bob.Home+"\n" {
			t.Errorf("as bob: %q", out)
		}
		if out, err := bob.Command(nil, "ls", alice.Home).CombinedOutput(); err == nil {
			t.Errorf("bob lists alice's home: %s", out)
		}
	})
	if alice == nil {
		return
	}
	if _, err := user.Lookup(alice.Name); err == nil {
		t.Errorf("user %s still exists after the test", alice.Name)
	}
	if _, err := os.Stat(alice.Home); err == nil {
		t.Errorf("%s still exists after the test", alice.Home)
	}
}

func TestParseSuexecRules(t *testing.T) {
	out := " -D AP_DOC_ROOT=\"/var/www\"\n -D AP_GID_MIN=100\n -D AP_HTTPD_USER=\"www-data\"\n -D AP_LOG_EXEC=\"/var/log/apache2/suexec.log\"\n -D AP_SAFE_PATH=\"/usr/local/bin:/usr/bin:/bin\"\n -D AP_UID_MIN=100\n -D AP_USERDIR_SUFFIX=\"public_html\"\n"
	r, err := ParseSuexecRules(out)
	want := SuexecRules{DocRoot: "/var/www", UIDMin: 100, GIDMin: 100, HTTPDUser: "www-data",
		LogExec: "/var/log/apache2/suexec.log", SafePath: "/usr/local/bin:/usr/bin:/bin", UserdirSuffix: "public_html"}
	if err != nil || r != want {
		t.Fatalf("got %+v, %v", r, err)
	}
	if _, err := ParseSuexecRules("usage: suexec\n"); err == nil {
		t.Fatal("no error for output without rules")
	}
}
