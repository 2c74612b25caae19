package serve

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// recordHandler hands each log record to a channel.
type recordHandler struct{ c chan slog.Record }

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.c <- r
	return nil
}
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordHandler) WithGroup(string) slog.Handler      { return h }

func attrs(r slog.Record) map[string]string {
	m := map[string]string{}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	return m
}

// [limits] slow_request: a request still running after the limit is logged
// once while it runs (method and path, not the query) and once when it
// ends, with its time; a fast one is not logged.
func TestLogSlow(t *testing.T) {
	records := make(chan slog.Record, 10)
	log := slog.New(recordHandler{records})
	release := make(chan struct{})
	const limit = 20 * time.Millisecond
	h := logSlow(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
	}), limit, log)

	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/fast", nil))
	select {
	case r := <-records:
		// The fast request can only be logged if it took longer than the
		// limit, which a handler that returns at once does not.
		t.Fatalf("fast request logged: %s %v", r.Message, attrs(r))
	default:
	}

	done := make(chan struct{})
	go func() {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/slow?token=s3cret", nil))
		close(done)
	}()
	var r slog.Record
	select {
	case r = <-records:
	case <-time.After(10 * time.Second):
		t.Fatal("no log line for a request running past slow_request")
	}
	a := attrs(r)
	if r.Level != slog.LevelWarn || !strings.Contains(r.Message, "still running") || a["method"] != "POST" || a["path"] != "/slow" {
		t.Fatalf("got %s %q %v", r.Level, r.Message, a)
	}
	close(release)
	<-done
	r = <-records // logged before ServeHTTP returned
	a = attrs(r)
	took, err := time.ParseDuration(a["took"])
	if !strings.Contains(r.Message, "done") || a["path"] != "/slow" || err != nil || took < limit {
		t.Fatalf("got %q %v", r.Message, a)
	}
	for _, v := range a {
		if strings.Contains(v, "s3cret") {
			t.Fatalf("the query reached the log: %v", a)
		}
	}
}
