package handler

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/config"
	"github.com/fcgishim/fcgishim/internal/peer"
)

// notOurs returns a directory that exists but is owned by another user.
func notOurs(t *testing.T) string {
	t.Helper()
	if os.Getuid() != 0 {
		return "/" // root's
	}
	d := t.TempDir()
	if err := os.Chown(d, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	return d
}

// The one runtime-directory rule (RuntimeDir): item 2 of the shared-host
// review. suEXEC passes no HOME, so the home comes from the password
// database; a shared /tmp is the last resort, after the site directory.
func TestRuntimeDirRule(t *testing.T) {
	base := t.TempDir()
	site := filepath.Join(base, "site")
	home := filepath.Join(base, "home")
	xdg := filepath.Join(base, "xdg")
	long := filepath.Join(base, strings.Repeat("d", 90))
	for _, d := range []string{site, home, xdg, long} {
		os.MkdirAll(d, 0o700)
	}
	other := notOurs(t)
	cfg := &config.Config{File: filepath.Join(site, "mysite.toml"), App: config.App{Command: []string{"app"}}}
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	h := RuntimeDir(cfg, env("HOME", home))
	hash := filepath.Base(h)
	if h != filepath.Join(home, ".cache", "fcgishim", hash) || len(hash) != 12 {
		t.Fatalf("HOME set: %s", h)
	}
	cfg2 := &config.Config{File: filepath.Join(site, "blog.toml")}
	if h2 := RuntimeDir(cfg2, env("HOME", home)); h2 == h {
		t.Errorf("two configs share %s", h)
	}
	cases := []struct {
		name string
		env  func(string) string
		file string // config file; "" = cfg's
		want string
	}{
		{"XDG_RUNTIME_DIR is not used (web servers do not pass it)", env("XDG_RUNTIME_DIR", xdg, "HOME", home), "", h},
		{"HOME not ours: beside the config", env("HOME", other), "", filepath.Join(site, ".fcgishim-mysite")},
		{"HOME too long for a socket path", env("HOME", long), "", filepath.Join(site, ".fcgishim-mysite")},
		{"nothing ours: TMPDIR", env("HOME", other, "TMPDIR", base), filepath.Join(other, "mysite.toml"),
			filepath.Join(base, "fcgishim-"+strconv.Itoa(os.Getuid())+"-")},
		{"nothing ours, no TMPDIR: /tmp", env("HOME", other), filepath.Join(other, "mysite.toml"),
			"/tmp/fcgishim-" + strconv.Itoa(os.Getuid()) + "-"},
	}
	for _, tc := range cases {
		c := cfg
		if tc.file != "" {
			c = &config.Config{File: tc.file}
		}
		got := RuntimeDir(c, tc.env)
		if got != tc.want && !(strings.HasSuffix(tc.want, "-") && strings.HasPrefix(got, tc.want) && len(got) == len(tc.want)+12) {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
	cfg.App.RuntimeDir = "run"
	if got := RuntimeDir(cfg, env("HOME", home)); got != filepath.Join(site, "run") {
		t.Errorf("[app] runtime_dir: %s", got)
	}
}

// Under suEXEC HOME is unset: the home comes from the password database,
// not from /tmp (which any local user can write).
func TestRuntimeDirHomeFromPasswd(t *testing.T) {
	u, err := user.LookupId(strconv.Itoa(os.Getuid()))
	if err != nil {
		t.Skipf("no password entry for uid %d: %v", os.Getuid(), err)
	}
	if !ownedBy(u.HomeDir, os.Getuid()) {
		t.Skipf("home %s is not ours", u.HomeDir)
	}
	cfg := &config.Config{File: filepath.Join(t.TempDir(), "mysite.toml")}
	got := RuntimeDir(cfg, func(string) string { return "" })
	if want := filepath.Join(u.HomeDir, ".cache", "fcgishim") + "/"; !strings.HasPrefix(got, want) {
		t.Errorf("HOME unset: %s, want below %s", got, want)
	}
	if got != RuntimeDir(cfg, func(k string) string { return map[string]string{"HOME": u.HomeDir}[k] }) {
		t.Errorf("HOME unset and HOME set to the same home give different directories")
	}
}

// A live site whose runtime directory is removed (a cleaner of ~/.cache or
// /tmp, a person) recovers: the next request re-creates it and starts a new
// supervisor, and the old supervisor, its directory gone, stops its app.
func TestRuntimeDirRemovedRecovers(t *testing.T) {
	s := newTestSite(t, "", "")
	_, srv := s.handler()
	req := func() *http.Request { r, _ := http.NewRequest("GET", srv.URL+"/mysite/", nil); return r }
	first, _ := getEcho(t, req())
	st, err := readState(s.runDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(s.runDir); err != nil {
		t.Fatal(err)
	}
	// Every request is answered (getEcho wants a 200) while the copy moves
	// to a new app, within the bound below.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var e echo
		resp, err := http.DefaultClient.Do(req())
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || json.Unmarshal(body, &e) != nil {
			t.Fatalf("status %d while recovering: %s\nlog:\n%s", resp.StatusCode, body, s.logText())
		}
		if e.PID != first.PID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still the app (pid %d) of the removed directory after 10s\n%s", first.PID, s.logText())
		}
		time.Sleep(10 * time.Millisecond) // polling: the copy looks at the state every 50ms
	}
	if fi, err := os.Stat(s.runDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("runtime dir not re-created 0700: %v %v", fi, err)
	}
	peer.Eventually(t, 10*time.Second, "the old supervisor to stop", func() bool { return !alive(st.Supervisor) || isZombie(st.Supervisor) })
	peer.Eventually(t, 10*time.Second, "the old app to stop", func() bool { return !alive(first.PID) || isZombie(first.PID) })
}

// [app] env_file reaches the app, under [app] env (which wins on a clash);
// one that other users can read is refused, and the app is not started.
func TestEnvFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	envFile := filepath.Join(dir, "secrets.env")
	os.WriteFile(envFile, []byte("# secrets\nDB_PASSWORD='p@ss word'\nexport FROM_FILE=1\nCLASH=file\n"), 0o600)
	s := newTestSite(t, "", "env_file = "+strconv.Quote(envFile)+"\n")
	// newTestSite writes the env table: add CLASH to it.
	b, _ := os.ReadFile(s.cfgPath)
	os.WriteFile(s.cfgPath, []byte(strings.Replace(string(b), "env = { ", "env = { CLASH = \"toml\", ", 1)), 0o600)
	_, srv := s.handler()
	r, _ := http.NewRequest("GET", srv.URL+"/mysite/?env=1", nil)
	e, _ := getEcho(t, r)
	env := "\n" + strings.Join(e.Env, "\n") + "\n"
	for _, want := range []string{"\nDB_PASSWORD=p@ss word\n", "\nFROM_FILE=1\n", "\nCLASH=toml\n"} {
		if !strings.Contains(env, want) {
			t.Errorf("app environment lacks %q:%s", want, env)
		}
	}
	// Saving the env file restarts the app with the new values.
	os.WriteFile(envFile+".new", []byte("DB_PASSWORD=changed\n"), 0o600)
	os.Rename(envFile+".new", envFile)
	peer.Eventually(t, 20*time.Second, "the app to see the edited env_file", func() bool {
		r, _ := http.NewRequest("GET", srv.URL+"/mysite/?env=1", nil)
		e, _ := getEcho(t, r)
		return slices.Contains(e.Env, "DB_PASSWORD=changed")
	})

	t.Run("world-readable", func(t *testing.T) {
		t.Parallel()
		open := filepath.Join(t.TempDir(), "open.env")
		os.WriteFile(open, []byte("DB_PASSWORD=x\n"), 0o644)
		os.Chmod(open, 0o644)
		s := newTestSite(t, "", "env_file = "+strconv.Quote(open)+"\n")
		_, srv := s.handler()
		resp, err := http.Get(srv.URL + "/mysite/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 {
			t.Errorf("status %d, want 503", resp.StatusCode)
		}
		if log := s.logText(); !strings.Contains(log, "env_file could not be read") || !strings.Contains(log, "chmod 600 "+open) {
			t.Errorf("log does not say why:\n%s", log)
		}
		if len(s.startPIDs()) != 0 {
			t.Errorf("the app started with a world-readable env_file")
		}
	})
}
