package e2e

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// readmeRecipe returns the build command of the README's "Shared hosting in
// three steps": the first line of the file that starts with the prefix the
// README uses for it.
func readmeRecipe(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(moduleRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "CGO_ENABLED=0 go build") || strings.HasPrefix(line, "go build") {
			cmd, _, _ := strings.Cut(line, "#")
			return strings.TrimSpace(cmd)
		}
	}
	t.Fatal("README.md has no line starting with a go build command")
	return ""
}

// The README promises one static binary: its recipe, run as printed (only
// the output path moved to a temporary directory), gives an ELF with no
// program interpreter and no shared library, for the host architecture and
// for the other one it names. demo.sh builds with the same line.
func TestReadmeRecipeBuildsStaticBinary(t *testing.T) {
	recipe := readmeRecipe(t)
	if !strings.Contains(recipe, " -o mysite.fcgi .") {
		t.Fatalf("README recipe %q does not build mysite.fcgi from the module root", recipe)
	}
	demo, err := os.ReadFile(filepath.Join(moduleRoot, "demo.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(demo), "\n"+recipe+"\n") {
		t.Errorf("demo.sh does not build with the README's recipe %q", recipe)
	}
	dir := t.TempDir()
	cases := []struct {
		goarch  string
		machine elf.Machine
	}{
		{"amd64", elf.EM_X86_64},
		{"arm64", elf.EM_AARCH64},
	}
	for _, tc := range cases {
		t.Run(tc.goarch, func(t *testing.T) {
			out := filepath.Join(dir, tc.goarch, "mysite.fcgi")
			line := strings.Replace(recipe, " -o mysite.fcgi ", " -o "+out+" ", 1)
			cmd := exec.Command("sh", "-c", "GOOS=linux GOARCH="+tc.goarch+" "+line)
			cmd.Dir = moduleRoot
			// The caller's CGO_ENABLED is kept out: the recipe alone
			// decides (this machine has a C compiler, so cgo is on by
			// default for a native build).
			cmd.Env = withoutEnv(os.Environ(), "CGO_ENABLED", "GOOS", "GOARCH")
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", line, err, b)
			}
			f, err := elf.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Machine != tc.machine {
				t.Errorf("machine %v, want %v", f.Machine, tc.machine)
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
					t.Errorf("program header %v: the binary is dynamically linked", p.Type)
				}
			}
			libs, err := f.ImportedLibraries()
			if err != nil {
				t.Fatal(err)
			}
			if len(libs) > 0 {
				t.Errorf("DT_NEEDED %v: the binary needs shared libraries", libs)
			}
		})
	}
}

func withoutEnv(env []string, names ...string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, n := range names {
			drop = drop || k == n
		}
		if !drop {
			out = append(out, kv)
		}
	}
	return out
}
