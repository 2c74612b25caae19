package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fcgishim/fcgishim/config"
)

func TestConfigTemplateLoads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mysite.toml")
	os.WriteFile(path, []byte(ConfigTemplate("mysite.fcgi")), 0o644)
	cfg, err := config.Load(path)
	if err != nil || cfg.File == "" || len(cfg.App.Command) > 0 || cfg.App.Upstream != "" {
		t.Fatalf("template: %v %+v", err, cfg)
	}
}

func TestInstallNeverLoosensAndIsIdempotent(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	os.WriteFile(src, []byte("binary v1"), 0o755)
	dir := t.TempDir()
	dst := filepath.Join(dir, "mysite.fcgi")
	os.WriteFile(dst, []byte("old"), 0o700)
	var out strings.Builder
	changed, err := Install(InstallOptions{Source: src, Dir: dir, Out: &out})
	if err != nil || !changed {
		t.Fatalf("changed=%v err=%v\n%s", changed, err, out.String())
	}
	fi, _ := os.Stat(dst)
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("mode %v, want 0700 kept", fi.Mode().Perm())
	}
	out.Reset()
	changed, err = Install(InstallOptions{Source: src, Dir: dir, Out: &out})
	if err != nil || changed || !strings.Contains(out.String(), "up to date") {
		t.Errorf("second run: changed=%v err=%v\n%s", changed, err, out.String())
	}
	// Group write is removed (suEXEC refuses it); execute follows read.
	os.Chmod(dst, 0o664)
	os.WriteFile(src, []byte("binary v2"), 0o755)
	if _, err := Install(InstallOptions{Source: src, Dir: dir}); err != nil {
		t.Fatal(err)
	}
	fi, _ = os.Stat(dst)
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("mode %v, want 0755", fi.Mode().Perm())
	}
	if ents, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*")); len(ents) > 0 {
		t.Errorf("temporary files left: %v", ents)
	}
}

// The template's wsgi lines, uncommented as a user would, make a valid
// config that runs the built-in WSGI runner.
func TestConfigTemplateWSGILinesLoad(t *testing.T) {
	var lines []string
	for _, l := range strings.Split(ConfigTemplate("mysite.fcgi"), "\n") {
		for _, k := range []string{"# [app]", "# wsgi =", "# python =", "# workers =", "# workdir ="} {
			if strings.HasPrefix(l, k) {
				lines = append(lines, strings.TrimPrefix(l, "# "))
			}
		}
	}
	path := filepath.Join(t.TempDir(), "mysite.toml")
	os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644)
	cfg, err := config.Load(path)
	if err != nil || len(lines) != 5 || cfg.App.WSGI != "mysite.wsgi" || cfg.App.Command[0] != "python3" {
		t.Fatalf("template's wsgi lines %q: %v %+v", lines, err, cfg)
	}
}
