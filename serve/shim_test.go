package serve

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/config"
	"github.com/fcgishim/fcgishim/handler"
)

// An embedding program's handler runs behind the same gateway as the stock
// binary: client-forged forwarding headers are gone, the prefix is known,
// and cancelling the context drains and returns.
func TestRunServesEmbeddedHandler(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	seen := make(chan *http.Request, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := handler.RequestOf(r)
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, req.ScriptName+"|"+req.PathInfo+"|"+r.Header.Get("X-Forwarded-For"))
		seen <- r
	})
	force := "/app"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			Handler: h, Listen: "unix:" + sock, Protocol: "http",
			Config:     &config.Config{Server: config.Server{ForceScriptName: &force, Watch: "off"}},
			Executable: filepath.Join(dir, "mysite.fcgi"), Args: []string{"mysite.fcgi"}, Env: []string{},
			Stdout: io.Discard, Stderr: io.Discard,
		})
	}()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		for {
			conn, err := d.DialContext(ctx, "unix", sock)
			if err == nil || ctx.Err() != nil {
				return conn, err
			}
			select {
			case err := <-done:
				t.Fatalf("Run returned early: %v", err)
			case <-time.After(10 * time.Millisecond): // polling for the socket
			}
		}
	}}, Timeout: 10 * time.Second}
	req, _ := http.NewRequest("GET", "http://x/app/hello", nil)
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "/app|/hello|" {
		t.Fatalf("handler saw %q, want prefix /app, path /hello, no forged X-Forwarded-For", body)
	}
	<-seen
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// A broken config answers every request with a page that names the file,
// line and key, and never the value that was in it.
func TestConfigErrorPageHidesValues(t *testing.T) {
	_, err := config.Parse("/site/mysite.toml", []byte("[app]\ncommand = [\"x\"]\nupstreem = \"http://user:hunter2@db\"\n"))
	if err == nil {
		t.Fatal("unknown key accepted")
	}
	rec := httptest.NewRecorder()
	configErrorPage(err).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), `mysite.toml, line 3, key &#34;app.upstreem&#34;`) || strings.Contains(rec.Body.String(), "hunter2") {
		t.Fatalf("%d %s", rec.Code, rec.Body.String())
	}
}
