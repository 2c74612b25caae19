package main

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Every copy the web server spawns maps the pages it touches while starting,
// and text/template (behind html/template) calls reflect's Method and
// MethodByName: with it linked, the linker has to keep every exported method
// of every type in the binary (about 3 MB more text and tables; the idle RSS
// of a spawned copy went from 8.4 to 6.9 MiB without it). Neither program
// spawned on fd 0 may depend on it.
func TestSpawnedProgramsDoNotLinkTemplates(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".", "./bench/hello").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "text/template" || p == "html/template" {
			t.Errorf("the spawned binaries depend on %s (it keeps every exported method in the binary)", p)
		}
	}
}

// initLine is one line of GODEBUG=inittrace=1:
// "init PKG @T ms, X ms clock, N bytes, M allocs".
var initLine = regexp.MustCompile(`^init (\S+) @.* (\d+) bytes, (\d+) allocs$`)

// The package initialisers of this module run in every spawned copy, before
// it serves its first request; work they do for a subcommand (compiling the
// deploy checks' regular expressions, parsing the info page's template) is
// paid by every copy in start-up time and in heap pages it keeps. They stay
// under 2 KiB each; whatever needs more is built on first use.
func TestModuleInitsAreSmall(t *testing.T) {
	if os.Getenv("FCGISHIM_INITTRACE_CHILD") == "1" {
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestModuleInitsAreSmall$")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1", "FCGISHIM_INITTRACE_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("re-running the test binary with inittrace: %v\n%s", err, out)
	}
	seen := 0
	for _, line := range strings.Split(string(out), "\n") {
		m := initLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil || !strings.HasPrefix(m[1], "github.com/fcgishim/fcgishim/") ||
			strings.HasPrefix(m[1], "github.com/fcgishim/fcgishim/internal/peertest") {
			continue
		}
		seen++
		if n, _ := strconv.Atoi(m[2]); n > 2048 {
			t.Errorf("init of %s allocates %d bytes (%s allocs): build it on first use", m[1], n, m[3])
		}
	}
	if seen < 5 {
		t.Fatalf("found the initialisers of %d of this module's packages in the trace:\n%s", seen, out)
	}
}
