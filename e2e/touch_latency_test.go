package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

// BenchmarkTouchLatency measures what a visitor waits for right after
// `touch mysite.fcgi` with Django under gunicorn (--workers 2, with and
// without --preload), behind Apache + mod_fcgid:
//
//	FCGISHIM_TOUCH_ROUNDS=6 FCGISHIM_MEASURE_OLD=/path/to/older/mysite.fcgi \
//	  go test -run '^$' -bench TouchLatency -benchtime 1x -v .
//
// FCGISHIM_MEASURE_OLD adds sites served by another build (an older
// commit) for comparison. Each round touches every site in turn, then
// requests its page back to back for 4 s, and reports the latency of the
// first answer from the new gunicorn, the slowest first answer of each of
// its workers, and the slowest answer of the window. Sites alternate within
// a round, so a loaded machine disturbs them alike. One run whatever b.N.
func BenchmarkTouchLatency(b *testing.B) {
	t := b
	rounds := atoiEnv("FCGISHIM_TOUCH_ROUNDS")
	if rounds <= 0 {
		rounds = 3
	}
	project := djangoProject(t)
	f, err := os.OpenFile(filepath.Join(project, "mysite", "urls.py"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`
import os
from django.http import HttpResponse
def master(request):
    return HttpResponse('%d %d' % (os.getppid(), os.getpid()), content_type='text/plain')
urlpatterns += [path('master/', master)]
`)
	f.Close()
	type site struct {
		name, bin           string
		first, worker, slow []time.Duration
	}
	bins := map[string]string{"new": ""}
	if old := os.Getenv("FCGISHIM_MEASURE_OLD"); old != "" {
		bins["old"] = old
	}
	root := peertest.Dir(t)
	var sites []*site
	for _, which := range []string{"old", "new"} {
		src, ok := bins[which]
		if !ok {
			continue
		}
		for _, preload := range []bool{false, true} {
			name := which + "-workers2"
			flags := `"--workers", "2"`
			if preload {
				name += "-preload"
				flags += `, "--preload"`
			}
			dir := filepath.Join(root, name)
			os.MkdirAll(dir, 0o755)
			bin := install(t, dir, "mysite.fcgi")
			if src != "" {
				b, err := os.ReadFile(src)
				if err != nil {
					t.Fatal(err)
				}
				os.WriteFile(bin, b, 0o755)
			}
			os.WriteFile(filepath.Join(dir, ".htaccess"), []byte(htaccessFcgid), 0o644)
			toml := strings.Replace(djangoToml(project, ""), `"--workers", "2"`, flags, 1)
			os.WriteFile(filepath.Join(dir, "mysite.toml"), []byte(toml), 0o644)
			sites = append(sites, &site{name: name, bin: bin})
		}
	}
	srv := sharedHost(t, root, "")
	c := &http.Client{Timeout: 60 * time.Second}
	master := func(s *site) (m, w string, d time.Duration) {
		start := time.Now()
		code, body := peertest.Get(t, c, srv.URL+"/"+s.name+"/master/")
		if code != 200 {
			t.Fatalf("%s: %d %s", s.name, code, body)
		}
		m, w, _ = strings.Cut(body, " ")
		return m, w, time.Since(start)
	}
	for _, s := range sites {
		master(s) // the cold start is not what is measured
	}
	for range rounds {
		for _, s := range sites {
			before, _, _ := master(s)
			now := time.Now()
			os.Chtimes(s.bin, now, now)
			var first, worker, slow time.Duration
			seen := map[string]bool{}
			for end := time.Now().Add(4 * time.Second); time.Now().Before(end) || first == 0; {
				m, w, d := master(s)
				slow = max(slow, d)
				if m != before && first == 0 {
					first = d
				}
				if m != before && !seen[w] {
					seen[w] = true
					worker = max(worker, d)
				}
				if time.Since(now) > 30*time.Second {
					t.Fatalf("%s: no new gunicorn 30 s after touch", s.name)
				}
			}
			s.first, s.worker, s.slow = append(s.first, first), append(s.worker, worker), append(s.slow, slow)
		}
	}
	ms := func(ds []time.Duration) string {
		s := append([]time.Duration(nil), ds...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		var parts []string
		for _, d := range s {
			parts = append(parts, fmt.Sprintf("%.0f", d.Seconds()*1000))
		}
		return strings.Join(parts, " ")
	}
	b.ReportMetric(0, "ns/op")
	for _, s := range sites {
		t.Logf("%-22s ms, sorted: first answer of the new gunicorn %s | slowest first answer of one of its workers %s | slowest in 4 s %s", s.name, ms(s.first), ms(s.worker), ms(s.slow))
	}
}

func atoiEnv(name string) int {
	var n int
	fmt.Sscan(os.Getenv(name), &n)
	return n
}
