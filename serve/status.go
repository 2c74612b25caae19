package serve

import (
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/fcgishim/fcgishim/config"
)

// Status prints what a person running the binary in a terminal needs: which
// config it found, what it would serve, and how to deploy it.
func Status(w io.Writer, o Options) error {
	name := filepath.Base(o.Executable)
	fmt.Fprintf(w, "%s (fcgishim %s)\n\n", name, Version)
	cfg, err := config.Load(o.ConfigPath)
	switch {
	case err != nil:
		fmt.Fprintf(w, "config:  %v\n", err)
	case cfg.File == "":
		fmt.Fprintf(w, "config:  none (%s not found; the built-in info page will answer)\n", o.ConfigPath)
	default:
		fmt.Fprintf(w, "config:  %s\n", cfg.File)
	}
	if cfg != nil {
		switch {
		case cfg.App.WSGI != "":
			fmt.Fprintf(w, "app:     the WSGI app %s, served by the built-in runner (%s)\n", cfg.App.WSGI, cfg.App.Command[0])
		case len(cfg.App.Command) > 0:
			fmt.Fprintf(w, "app:     runs %s\n", strings.Join(cfg.App.Command, " "))
		case cfg.App.Upstream != "":
			fmt.Fprintf(w, "app:     proxies to %s\n", cfg.App.Upstream)
		default:
			fmt.Fprintf(w, "app:     the built-in info page\n")
		}
		for _, p := range cfg.StaticPrefixes() {
			fmt.Fprintf(w, "static:  %s -> %s\n", p, cfg.Static[p])
		}
	}
	fmt.Fprintf(w, `
This program is meant to be started by a web server. To try it here:
  %[1]s serve --http 127.0.0.1:8000
To put it on a shared host (Apache + mod_fcgid):
  %[1]s install ~/public_html/mysite && %[1]s check ~/public_html/mysite
Other web servers:  %[1]s deploy
`, "./"+name)
	return err
}

// configErrorPage answers every request with a 500 that says the site is
// misconfigured and where, without secrets: the file, line and key, never
// values from the file (a TOML syntax message can quote them; that detail
// goes only to the error log).
func configErrorPage(err error) http.Handler {
	msg := "The site's configuration could not be loaded."
	var ce *config.Error
	if errors.As(err, &ce) {
		msg = fmt.Sprintf("Configuration error in %s", filepath.Base(ce.File))
		if ce.Line > 0 {
			msg += fmt.Sprintf(", line %d", ce.Line)
		}
		if ce.Key != "" {
			msg += fmt.Sprintf(", key %q", ce.Key)
		}
		msg += "."
	}
	body := fmt.Sprintf(`<!doctype html><html><head><meta charset="utf-8"><title>Site misconfigured</title></head>
<body><h1>Site misconfigured</h1><p>%s</p><p>The details are in the web server's error log. Fix the file and the site restarts by itself.</p></body></html>
`, html.EscapeString(msg))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Retry-After", "10")
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, body)
	})
}
