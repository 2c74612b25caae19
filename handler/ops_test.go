package handler

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/config"
)

// ping_path answers pong; status_path answers the JSON status only to the
// status token (either header), never with paths or environment values.
func TestOpsPingAndStatus(t *testing.T) {
	t.Setenv("FCGISHIM_TEST_SECRET", "env-s3cret")
	_, up := startRawApp(t, "unix", answer("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\napp", true))
	const token = "0123456789abcdef-token"
	cfg := &config.Config{App: config.App{Upstream: up}}
	cfg.Server.PingPath, cfg.Server.StatusPath, cfg.Server.StatusToken = "/-/ping", "/-/status", token
	proc := &Process{Mode: "external", Protocol: "fastcgi", Started: time.Now(), Version: "test"}
	site, err := New(Options{Config: cfg, Process: proc})
	if err != nil {
		t.Fatal(err)
	}
	defer site.Close(t.Context())
	// Mounted at /mysite, as in public_html/mysite/: the paths are below it.
	prefix := "/mysite"
	srv := httptest.NewServer(&Gateway{Next: site, Process: proc, ForceScriptName: &prefix})
	defer srv.Close()

	get := func(path string, hdr ...string) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	if code, _, body := get("/mysite/anything"); code != 200 || body != "app" {
		t.Fatalf("the app behind: %d %q", code, body)
	}
	if code, h, body := get("/mysite/-/ping"); code != 200 || body != "pong\n" || h.Get("Cache-Control") != "no-store" {
		t.Fatalf("ping: %d %q %v", code, body, h)
	}
	for _, hdr := range [][]string{nil, {"Authorization", "Bearer wrong-token-0123456789"}, {"X-Status-Token", token + "x"}} {
		if code, h, body := get("/mysite/-/status", hdr...); code != 401 || h.Get("WWW-Authenticate") == "" || strings.Contains(body, `"pid"`) {
			t.Fatalf("status with %q: %d %q", hdr, code, body)
		}
	}
	for _, hdr := range [][]string{{"Authorization", "Bearer " + token}, {"X-Status-Token", token}} {
		code, h, body := get("/mysite/-/status", hdr...)
		if code != 200 || h.Get("Content-Type") != "application/json" {
			t.Fatalf("status with %s: %d %q", hdr[0], code, body)
		}
		var d opsStatus
		if err := json.Unmarshal([]byte(body), &d); err != nil {
			t.Fatal(err)
		}
		if d.Requests < 3 || d.InFlight != 1 || d.Mode != "external" || d.App == nil || d.App.Kind != "upstream" || d.App.IdleConns != 1 {
			t.Fatalf("status: %+v app %+v", d, d.App)
		}
		for _, secret := range []string{"env-s3cret", strings.TrimPrefix(up, "unix:"), token} {
			if strings.Contains(body, secret) {
				t.Fatalf("status shows %q:\n%s", secret, body)
			}
		}
	}
	req, _ := http.NewRequest("POST", srv.URL+"/mysite/-/status", strings.NewReader("x"))
	req.Header.Set("X-Status-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Fatalf("POST status: %d", resp.StatusCode)
	}
}
