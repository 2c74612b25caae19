package handler

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/fcgishim/fcgishim/config"
)

// Options configure New.
type Options struct {
	Config  *config.Config // required; the zero Config serves the info page
	Process *Process       // required
	Log     *slog.Logger   // nil = discard
	// Executable is the path this program was started as (not the resolved
	// /proc/self/exe, which dangles after a rename-deploy). It is never
	// served as a static file, and the app supervisor is started from it.
	Executable string
}

// Site is the handler for one configured site.
type Site struct {
	http.Handler
	closers []func(context.Context) error
}

// New builds the site's handler: [server] ping_path and status_path first,
// then [static] prefixes served directly; everything else goes to the app
// ([app] command or upstream), or to the info page when no app is
// configured.
func New(o Options) (*Site, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s := &Site{}
	var next http.Handler = &InfoPage{Process: o.Process}
	var theApp *app
	if a := o.Config.App; len(a.Command) > 0 || a.Upstream != "" {
		app, err := newApp(o)
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, app.Close)
		next, theApp = app, app
	}
	if len(o.Config.Static) > 0 {
		st, err := newStatic(o, next)
		if err != nil {
			s.Close(context.Background())
			return nil, err
		}
		next = st
	}
	if sv := o.Config.Server; sv.PingPath != "" || sv.StatusPath != "" {
		next = &ops{next: next, ping: sv.PingPath, status: sv.StatusPath, token: sv.StatusToken, proc: o.Process, app: theApp}
	}
	s.Handler = next
	return s, nil
}

// Close releases what the site holds (its claim on the shared app). It does
// not stop a shared app that other processes still use.
func (s *Site) Close(ctx context.Context) error {
	var errs []error
	for _, c := range s.closers {
		errs = append(errs, c(ctx))
	}
	s.closers = nil
	return errors.Join(errs...)
}
