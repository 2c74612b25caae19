package handler

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"time"
)

// ops answers [server] ping_path and status_path ahead of the site, as
// PHP-FPM's ping.path and pm.status_path do. The status is for operators:
// it needs the status token, and it shows counts and states, never paths,
// addresses, parameters or environment values.
type ops struct {
	next         http.Handler
	ping, status string
	token        string
	proc         *Process
	app          *app // nil without [app]
}

// opsStatus is the status document.
type opsStatus struct {
	Version       string     `json:"version"`
	PID           int        `json:"pid"`
	Mode          string     `json:"mode"`
	Protocol      string     `json:"protocol"`
	Started       string     `json:"started"`
	UptimeSeconds float64    `json:"uptime_seconds"`
	Requests      int64      `json:"requests"`  // since this program started
	InFlight      int64      `json:"in_flight"` // including this one
	App           *appStatus `json:"app,omitempty"`
}

// appStatus is the app as this copy sees it.
type appStatus struct {
	Kind      string `json:"kind"`             // supervised or upstream
	Status    string `json:"status,omitempty"` // supervised: starting, ready, backoff, stopped
	Instance  int    `json:"instance,omitempty"`
	PID       int    `json:"pid,omitempty"`
	Failures  int    `json:"failures"`
	Cause     string `json:"cause,omitempty"`
	IdleConns int    `json:"idle_connections"` // ours, to the app
}

func (h *ops) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := RequestOf(r).PathInfo // below the mount prefix, as [static] matches
	switch {
	case h.ping != "" && p == h.ping:
		if !h.method(w, r) {
			return
		}
		// As Header().Set does for each, in one allocation.
		vals := []string{"text/plain; charset=utf-8", "no-store"}
		h := w.Header()
		h["Content-Type"], h["Cache-Control"] = vals[0:1:1], vals[1:2:2]
		w.Write([]byte("pong\n"))
	case h.status != "" && p == h.status:
		if !h.method(w, r) {
			return
		}
		if !h.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="fcgishim status"`)
			errorPage(w, http.StatusUnauthorized, 0, "Unauthorized", "The status needs the status token.")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(h.document())
	default:
		h.next.ServeHTTP(w, r)
	}
}

func (h *ops) method(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	errorPage(w, http.StatusMethodNotAllowed, 0, "Method not allowed", "Use GET.")
	return false
}

// authorized compares the token from Authorization: Bearer or
// X-Status-Token (Apache passes Authorization to FastCGI only with
// CGIPassAuth On) in constant time.
func (h *ops) authorized(r *http.Request) bool {
	got := r.Header.Get("X-Status-Token")
	if a, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		got = a
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(h.token)) == 1
}

func (h *ops) document() *opsStatus {
	d := &opsStatus{PID: os.Getpid()}
	if p := h.proc; p != nil {
		d.Version, d.Mode, d.Protocol = p.Version, p.Mode, p.Protocol
		d.Started = p.Started.UTC().Format(time.RFC3339Nano)
		d.UptimeSeconds = time.Since(p.Started).Round(time.Millisecond).Seconds()
		d.Requests, d.InFlight = p.Served.Load(), p.InFlight.Load()
	}
	if a := h.app; a != nil {
		d.App = a.status()
	}
	return d
}

// status reports the app's state: for a supervised app, what the
// supervisor last wrote (read fresh).
func (a *app) status() *appStatus {
	st := &appStatus{Kind: "upstream", IdleConns: a.pool.count()}
	if a.upstream != "" {
		return st
	}
	st.Kind, st.Status = "supervised", "stopped"
	if s := a.ctl.Status(); s != nil {
		st.Status, st.Instance, st.PID, st.Failures, st.Cause = s.Status, s.Instance, s.PID, s.Failures, s.Cause
	}
	return st
}
