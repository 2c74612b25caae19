package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// The `check` command must leave nothing running, never run a site's app
// as another user, and leave the live app alone (issue 9, item 5). These
// tests run check under a subreaper (the test binary re-executed): every
// process check starts, however it detaches, is reparented to the reaper,
// which lists what is left once check has returned.

const envReaper = "FCGISHIM_TEST_REAPER" // JSON argv of the command to reap

// leftover is a process found after check returned.
type leftover struct {
	PID, PPID, PGID, SID, UID int
	Cmd                       string
}

type reaped struct {
	Output   string
	Err      string
	Leftover []leftover
}

// TestMain makes the test binary the check tests' reaper when they start it
// with envReaper set, and runs the tests otherwise. (A reaper written as a
// test would skip in every ordinary run, and a skip fails CI.)
func TestMain(m *testing.M) {
	if argvJSON := os.Getenv(envReaper); argvJSON != "" {
		reaper(argvJSON)
	}
	os.Exit(m.Run())
}

// reaper becomes a child subreaper, runs the command argvJSON names, prints
// a reaped document and exits.
func reaper(argvJSON string) {
	var argv []string
	if err := json.Unmarshal([]byte(argvJSON), &argv); err != nil {
		panic(err)
	}
	const prSetChildSubreaper = 36
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		panic(e)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	out, err := cmd.CombinedOutput()
	r := reaped{Output: string(out)}
	if err != nil {
		r.Err = err.Error()
	}
	r.Leftover = descendants(os.Getpid(), cmd.Process.Pid)
	for _, l := range r.Leftover {
		_ = syscall.Kill(l.PID, syscall.SIGKILL)
	}
	for range r.Leftover { // reap what was adopted
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(-1, &ws, 0, nil); err != nil {
			break
		}
	}
	json.NewEncoder(os.Stdout).Encode(r)
	os.Exit(0)
}

// descendants lists the processes below root, and any in a process group
// or session that the command (pid cmd) led.
func descendants(root, cmd int) []leftover {
	all := map[int]leftover{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // state ppid pgrp session ...
		if len(f) < 4 {
			continue
		}
		l := leftover{PID: pid}
		l.PPID, _ = strconv.Atoi(f[1])
		l.PGID, _ = strconv.Atoi(f[2])
		l.SID, _ = strconv.Atoi(f[3])
		l.UID, _ = peertest.ProcessUID(pid)
		cl, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		l.Cmd = strings.TrimSpace(strings.ReplaceAll(string(cl), "\x00", " "))
		all[pid] = l
	}
	below := map[int]bool{root: true}
	for changed := true; changed; {
		changed = false
		for pid, l := range all {
			if !below[pid] && (below[l.PPID] || l.PGID == cmd || l.SID == cmd) {
				below[pid], changed = true, true
			}
		}
	}
	var out []leftover
	for pid := range below {
		if pid != root {
			out = append(out, all[pid])
		}
	}
	return out
}

// reapCheck runs `bin check args...` under the reaper with env.
func reapCheck(t *testing.T, env []string, bin string, args ...string) reaped {
	t.Helper()
	argv, _ := json.Marshal(append([]string{bin, "check"}, args...))
	cmd := exec.Command(os.Args[0]) // TestMain sees envReaper and becomes the reaper
	cmd.Env = append(env, envReaper+"="+string(argv))
	out, err := cmd.Output()
	var r reaped
	if jerr := json.Unmarshal(out[strings.LastIndex(string(out[:len(out)-1]), "\n")+1:], &r); jerr != nil {
		t.Fatalf("reaper: %v (%v)\n%s", jerr, err, out)
	}
	return r
}

// recordingApp is an [app] whose every start appends "pid uid" to starts
// before it becomes python3's HTTP server.
func recordingApp(t *testing.T, starts, extra string) string {
	t.Helper()
	py := peertest.Need(t, "python3")[0]
	return fmt.Sprintf(`[app]
command = ["/bin/sh", "-c", "echo $$ $(id -u) >> %s; exec %s -m http.server --bind 127.0.0.1 {port}"]
idle_stop = "1s"
%s`, starts, py, extra)
}

// starts reads the app's start records.
func readStarts(t *testing.T, path string) [][2]int {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]int
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var pid, uid int
		if _, err := fmt.Sscan(l, &pid, &uid); err == nil {
			out = append(out, [2]int{pid, uid})
		}
	}
	return out
}

func assertNothingLeft(t *testing.T, r reaped) {
	t.Helper()
	for _, l := range r.Leftover {
		t.Errorf("left running after check returned: pid %d (ppid %d, pgid %d, sid %d, uid %d): %s", l.PID, l.PPID, l.PGID, l.SID, l.UID, l.Cmd)
	}
}

func TestDeployCheckLeavesNothingRunning(t *testing.T) {
	site := filepath.Join(t.TempDir(), "site")
	if out, err := deployRun(t, binary(t), "install", site); err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	starts := filepath.Join(t.TempDir(), "starts")
	if err := os.WriteFile(filepath.Join(site, "mysite.toml"), []byte(recordingApp(t, starts, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	r := reapCheck(t, os.Environ(), filepath.Join(site, "mysite.fcgi"), site)
	assertNothingLeft(t, r)
	if s := readStarts(t, starts); len(s) > 0 {
		t.Errorf("check started the app (pid, uid): %v", s)
	}
	if !strings.Contains(r.Output, "self-test: GET / through FastCGI answered 200") {
		t.Errorf("no self-test answer in:\n%s", r.Output)
	}
}

// As root on a site owned by another user, check runs nothing as root: the
// self-test runs as the owner and the app does not start.
func TestDeployCheckAsRootRunsNothingAsRoot(t *testing.T) {
	alice := peertest.NewUser(t, "alice")
	site := alice.InstallSite(t, binary(t), "mysite")
	starts := filepath.Join(alice.Home, "starts")
	alice.WriteFile(t, filepath.Join(site, "mysite.toml"), []byte(recordingApp(t, starts, "")), 0o644)
	alice.Shell(t, "touch "+starts)
	r := reapCheck(t, os.Environ(), filepath.Join(site, "mysite.fcgi"), site)
	assertNothingLeft(t, r)
	for _, s := range readStarts(t, starts) {
		t.Errorf("check started the app: pid %d as uid %d", s[0], s[1])
	}
	if want := fmt.Sprintf("uid %d); the app was not started", alice.UID); !strings.Contains(r.Output, want) {
		t.Errorf("self-test did not answer as %s (%q) in:\n%s", alice.Name, want, r.Output)
	}
}

// The live site keeps its app (same pid, no second one beside it) when
// check runs from a login shell whose HOME the web server does not give.
func TestDeployCheckLeavesLiveAppAlone(t *testing.T) {
	site := filepath.Join(peertest.Dir(t), "site")
	if out, err := deployRun(t, binary(t), "install", site); err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	starts := filepath.Join(t.TempDir(), "starts")
	if err := os.WriteFile(filepath.Join(site, "mysite.toml"), []byte(recordingApp(t, starts, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	live := serveLive(t, site, []string{"PATH=/usr/local/bin:/usr/bin:/bin"}) // what suEXEC gives
	if code, body := peertest.Get(t, &http.Client{Timeout: 30 * time.Second}, live+"/"); code != 200 {
		t.Fatalf("live site: %d %s", code, body)
	}
	before := readStarts(t, starts)
	if len(before) != 1 {
		t.Fatalf("live app starts: %v", before)
	}
	env := append(os.Environ(), "HOME="+t.TempDir())
	// The live site runs as the site directory's owner with suEXEC's
	// environment: what check predicts with --suexec on (without it, a
	// plain mod_fcgid site runs as www-data).
	r := reapCheck(t, env, filepath.Join(site, "mysite.fcgi"), site, "--suexec", "on")
	assertNothingLeft(t, r)
	after := readStarts(t, starts)
	if len(after) != 1 {
		t.Errorf("app starts after check: %v, want only the live one %v\n%s", after, before, r.Output)
	}
	if syscall.Kill(before[0][0], 0) != nil {
		t.Errorf("the live app (pid %d) is gone after check", before[0][0])
	}
	if want := fmt.Sprintf("live app: ready, pid %d", before[0][0]); !strings.Contains(r.Output, want) {
		t.Errorf("check does not report %q:\n%s", want, r.Output)
	}
	if code, body := peertest.Get(t, &http.Client{Timeout: 30 * time.Second}, live+"/"); code != 200 {
		t.Errorf("live site after check: %d %s", code, body)
	}
}

// serveLive runs the site's binary as a plain HTTP server with env and
// stops it (and waits for its app to stop) when t ends.
func serveLive(t *testing.T, site string, env []string) string {
	t.Helper()
	port := peertest.FreePort(t)
	cmd := exec.Command(filepath.Join(site, "mysite.fcgi"), "serve", "--http", fmt.Sprintf("127.0.0.1:%d", port))
	cmd.Env, cmd.Dir = env, site
	logf, err := os.Create(filepath.Join(t.TempDir(), "live.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	t.Cleanup(func() { waitAppsGone(t, site) }) // runs after the stop below
	exited := startUntilCleanup(t, cmd, nil)
	waitDial(t, "tcp", fmt.Sprintf("127.0.0.1:%d", port), exited, logf.Name())
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

// waitAppsGone waits until no process runs with site's config (the
// supervisor and its app stop idle_stop after the last copy is gone).
func waitAppsGone(t *testing.T, site string) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var left []int
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			cl, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if err == nil && strings.Contains(string(cl), site) {
				pid, _ := strconv.Atoi(e.Name())
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, pid := range left {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			t.Errorf("processes of %s still running 30s after the site stopped: %v", site, left)
			return
		}
		time.Sleep(50 * time.Millisecond) // polling for the supervisor's idle stop
	}
}
