package handler

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/appctl"
	"github.com/fcgishim/fcgishim/internal/peertest"
)

// The app's lifecycle seen through the proxy: these tests need a copy
// serving requests, so they live beside the proxy's other end-to-end tests.

// A live site whose runtime directory is removed (a cleaner of ~/.cache or
// /tmp, a person) recovers: the next request re-creates it and starts a new
// supervisor, and the old supervisor, its directory gone, stops its app.
func TestRuntimeDirRemovedRecovers(t *testing.T) {
	s := newTestSite(t, "", "")
	_, srv := s.handler()
	req := func() *http.Request { r, _ := http.NewRequest("GET", srv.URL+"/mysite/", nil); return r }
	first, _ := getEcho(t, req())
	st, err := appctl.ReadState(s.runDir)
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
	peertest.Eventually(t, 10*time.Second, "the old supervisor to stop", func() bool { return !appctl.Alive(st.Supervisor) || isZombie(st.Supervisor) })
	peertest.Eventually(t, 10*time.Second, "the old app to stop", func() bool { return !appctl.Alive(first.PID) || isZombie(first.PID) })
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
	peertest.Eventually(t, 20*time.Second, "the app to see the edited env_file", func() bool {
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
