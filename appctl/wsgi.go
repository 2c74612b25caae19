package appctl

import (
	"bytes"
	_ "embed"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fcgishim/fcgishim/config"
)

// wsgiRunner is the built-in WSGI server that [app] wsgi runs: one Python 3
// file, standard library only.
//
//go:embed wsgirunner.py
var wsgiRunner []byte

// fileWSGIRunner is the runner's name in the runtime directory.
const fileWSGIRunner = "wsgi-runner.py"

// writeWSGIRunner puts the runner into the runtime directory dir (private:
// 0700, ours) as a 0600 file and returns its path. A file is run rather than
// "python -c <source>" so that ps and /proc show a short, readable command
// line and Python's tracebacks name the runner's lines. The file is
// replaced (write, then rename) only when its content differs, so a running
// instance never sees it change under it.
func writeWSGIRunner(dir string) (string, error) {
	path := filepath.Join(dir, fileWSGIRunner)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, wsgiRunner) {
		return path, nil
	}
	tmp, err := os.CreateTemp(dir, fileWSGIRunner+".*")
	if err != nil {
		return "", fmt.Errorf("write the WSGI runner: %w", err)
	}
	_, err = tmp.Write(wsgiRunner)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("write the WSGI runner: %w", err)
	}
	return path, nil
}

// expandWSGI replaces config.WSGIRunnerArg in argv with the runner's path
// (written into dir first) when a runs a WSGI app; other commands are left
// as the user wrote them.
func expandWSGI(a config.App, dir string, argv []string) error {
	if a.WSGI == "" {
		return nil
	}
	path, err := writeWSGIRunner(dir)
	if err != nil {
		return err
	}
	for i, arg := range argv {
		if arg == config.WSGIRunnerArg {
			argv[i] = path
		}
	}
	return nil
}
