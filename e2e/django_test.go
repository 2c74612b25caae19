package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// djangoProject creates a real Django project (Debian's python3-django) with
// a migrated database, collected static files and a superuser, owned by
// www-data so that Apache's children can run it.
func djangoProject(t testing.TB) (project string) {
	t.Helper()
	peertest.Need(t, "/usr/bin/python3", "django-admin", "gunicorn")
	project = filepath.Join(peertest.Dir(t), "project")
	run := func(env []string, name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = project
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	os.MkdirAll(project, 0o755)
	run(nil, "django-admin", "startproject", "mysite", project)
	settings := filepath.Join(project, "mysite", "settings.py")
	b, err := os.ReadFile(settings)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b) + "\nALLOWED_HOSTS = ['*']\nSTATIC_URL = 'static/'\nSTATIC_ROOT = BASE_DIR / 'static_collected'\n"
	os.WriteFile(settings, []byte(s), 0o644)
	run(nil, "/usr/bin/python3", "manage.py", "migrate", "--noinput")
	run(nil, "/usr/bin/python3", "manage.py", "collectstatic", "--noinput")
	run([]string{"DJANGO_SUPERUSER_PASSWORD=s3cret-pass"}, "/usr/bin/python3", "manage.py", "createsuperuser",
		"--noinput", "--username", "admin", "--email", "admin@example.test")
	if out, err := exec.Command("chown", "-R", "www-data:www-data", project).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}
	return project
}

func djangoToml(project, extra string) string {
	return fmt.Sprintf(`[app]
command = ["gunicorn", "--bind", "unix:{socket}", "--workers", "2", "--proxy-protocol", "mysite.wsgi"]
proxy_protocol = true
workdir = %q
%s
[static]
"/static/" = %q
`, project, extra, filepath.Join(project, "static_collected"))
}

// gunicornMasters returns the PIDs of gunicorn processes running in project
// whose parent is not a gunicorn process.
func gunicornMasters(t *testing.T, project string) []int {
	t.Helper()
	isGunicorn := func(pid string) bool {
		b, _ := os.ReadFile("/proc/" + pid + "/cmdline")
		return bytes.Contains(b, []byte("gunicorn"))
	}
	ents, _ := os.ReadDir("/proc")
	var masters []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !isGunicorn(e.Name()) {
			continue
		}
		if cwd, _ := os.Readlink("/proc/" + e.Name() + "/cwd"); cwd != project {
			continue // another test's
		}
		st, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
		f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
		if len(f) > 1 && !isGunicorn(f[1]) {
			masters = append(masters, pid)
		}
	}
	return masters
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return resp, string(b)
}

var csrfRe = regexp.MustCompile(`name="csrfmiddlewaretoken" value="([^"]+)"`)

// login logs into the Django admin under base (e.g. http://host/mysite) and
// checks every URL Django rendered carries the prefix.
func djangoLogin(t *testing.T, c *http.Client, base, prefix string) {
	t.Helper()
	resp, body := get(t, c, base+"/admin/login/?next="+prefix+"/admin/")
	if resp.StatusCode != 200 {
		t.Fatalf("login page: %d\n%s", resp.StatusCode, body)
	}
	if strings.Contains(body, "mysite.fcgi") {
		t.Fatal("a rendered URL contains mysite.fcgi")
	}
	if !strings.Contains(body, `action="`+prefix+`/admin/login/`) {
		t.Fatalf("login form action is not under %s/:\n%s", prefix, body)
	}
	if !strings.Contains(body, `href="`+prefix+`/static/admin/css/base.css"`) {
		t.Fatalf("static links are not under %s/static/:\n%s", prefix, body)
	}
	m := csrfRe.FindStringSubmatch(body)
	if m == nil {
		t.Fatal("no CSRF token in the login form")
	}
	form := url.Values{"csrfmiddlewaretoken": {m[1]}, "username": {"admin"}, "password": {"s3cret-pass"}, "next": {prefix + "/admin/"}}
	noRedirect := *c
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := noRedirect.PostForm(base+"/admin/login/?next="+prefix+"/admin/", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 302 || resp.Header.Get("Location") != prefix+"/admin/" {
		t.Fatalf("login POST: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, body := get(t, c, base+"/admin/"); resp.StatusCode != 200 || !strings.Contains(body, "Site administration") {
		t.Fatalf("admin index after login: %d", resp.StatusCode)
	}
}

// The shared-hosting promise: a Django project under gunicorn, served from
// public_html/mysite/ by Apache + mod_fcgid through mysite.fcgi.
func TestDjangoUnderApacheFcgid(t *testing.T) {
	project := djangoProject(t)
	root := peertest.Dir(t)
	site := filepath.Join(root, "mysite")
	os.Mkdir(site, 0o755)
	bin := install(t, site, "mysite.fcgi")
	os.WriteFile(filepath.Join(site, ".htaccess"), []byte(htaccessFcgid), 0o644)
	os.WriteFile(filepath.Join(site, "mysite.toml"), []byte(djangoToml(project, "")), 0o644)
	srv := sharedHost(t, root, "")
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(srv.Log())
		}
	})
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 60 * time.Second}
	base := srv.URL + "/mysite"

	djangoLogin(t, c, base, "/mysite")

	// The admin CSS comes from [static], byte for byte.
	want, err := os.ReadFile(filepath.Join(project, "static_collected", "admin", "css", "base.css"))
	if err != nil {
		t.Fatal(err)
	}
	resp, css := get(t, c, base+"/static/admin/css/base.css")
	if resp.StatusCode != 200 || css != string(want) || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/css") {
		t.Fatalf("static CSS: %d %q, %d bytes (want %d)", resp.StatusCode, resp.Header.Get("Content-Type"), len(css), len(want))
	}

	// 40 requests, 8 at a time: all succeed, one gunicorn master serves them.
	var wg sync.WaitGroup
	errs := make(chan string, 40)
	sem := make(chan struct{}, 8)
	for i := 0; i < 40; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			resp, err := c.Get(base + "/admin/")
			if err != nil {
				errs <- err.Error()
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- fmt.Sprintf("status %d", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	masters := gunicornMasters(t, project)
	if len(masters) != 1 {
		t.Fatalf("gunicorn masters: %v, want exactly one", masters)
	}

	// touch mysite.fcgi: a new gunicorn master, and the session survives.
	now := time.Now()
	os.Chtimes(bin, now, now)
	old := masters[0]
	peertest.Eventually(t, 30*time.Second, "a new gunicorn master after touch", func() bool {
		m := gunicornMasters(t, project)
		return len(m) == 1 && m[0] != old
	})
	if resp, body := get(t, c, base+"/admin/"); resp.StatusCode != 200 || !strings.Contains(body, "Site administration") {
		t.Fatalf("session lost after restart: %d", resp.StatusCode)
	}

	// Apache stops: no gunicorn remains after 30 s.
	srv.Stop()
	peertest.Eventually(t, 30*time.Second, "gunicorn to be gone after Apache stopped", func() bool {
		return len(gunicornMasters(t, project)) == 0
	})
}

// The same project behind nginx, with mysite.fcgi as an external FastCGI
// server on a unix socket, started the runfcgi way.
func TestDjangoUnderNginxRunfcgi(t *testing.T) {
	project := djangoProject(t)
	dir := peertest.Dir(t)
	sock := filepath.Join(dir, "mysite.sock")
	// nginx passes SCRIPT_NAME without REDIRECT_URL; the prefix is forced.
	os.WriteFile(filepath.Join(dir, "mysite.toml"), []byte(djangoToml(project, `idle_stop = "1s"`)+"\n[server]\nforce_script_name = \"/mysite\"\n"), 0o644)
	t.Cleanup(func() { // runs after mysite.fcgi stopped (cleanups run last-first): its app follows within idle_stop
		peertest.Eventually(t, 30*time.Second, "gunicorn to stop after mysite.fcgi", func() bool {
			return len(gunicornMasters(t, project)) == 0
		})
	})
	startExternal(t, dir, "unix", sock, "runfcgi", "protocol=fcgi", "socket="+sock, "daemonize=false", "method=threaded")
	srv := peertest.Nginx(t, "", fmt.Sprintf(`
        location /mysite/ {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_NAME /mysite;
            fastcgi_pass unix:%s;
        }`, sock))
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 60 * time.Second}
	djangoLogin(t, c, srv.URL+"/mysite", "/mysite")
}
