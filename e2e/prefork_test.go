package e2e

import (
	"bytes"
	wire "encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fcgishim/fcgishim/internal/peertest"
)

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// minspare/maxspare/maxchildren: workers start at minspare; requests held
// in flight fill workers ([limits] max_conns = 2 each), and full ones make
// the pool grow up to maxchildren and never beyond; idle ones above maxspare
// are retired once the connections close.
func TestPreforkWorkerCounts(t *testing.T) {
	dir := peertest.Dir(t)
	sock := filepath.Join(dir, "mysite.sock")
	if err := os.WriteFile(filepath.Join(dir, "mysite.toml"), []byte("[limits]\nmax_conns = 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := startExternal(t, dir, "unix", sock, "runfcgi", "method=prefork", "socket="+sock, "daemonize=false",
		"minspare=2", "maxspare=3", "maxchildren=4")
	sup := cmd.Process.Pid

	var most atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if n := int64(len(peertest.Children(sup))); n > most.Load() {
				most.Store(n)
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(5 * time.Millisecond): // sampling interval
			}
		}
	}()
	defer func() { close(stopSampling); <-sampled }()

	// minspare at the start; a third when the readiness probe of
	// startExternal held one of the two busy (only then are fewer than
	// minspare idle), and it stays: three idle are within maxspare.
	peertest.Eventually(t, 10*time.Second, "2 or 3 workers (minspare, or maxspare after the probe)", func() bool {
		n := len(peertest.Children(sup))
		return n == 2 || n == 3
	})
	// Six requests in flight need three full workers, and then the
	// fourth is the only one accepting: fewer than minspare.
	var conns []net.Conn
	for i := 0; i < 6; i++ {
		conns = append(conns, holdRequest(t, sock))
	}
	peertest.Eventually(t, 10*time.Second, "4 workers (maxchildren)", func() bool { return len(peertest.Children(sup)) == 4 })
	for _, c := range conns {
		c.Close()
	}
	peertest.Eventually(t, 10*time.Second, "3 workers (maxspare) after the connections close", func() bool { return len(peertest.Children(sup)) == 3 })
	if m := most.Load(); m > 4 {
		t.Errorf("saw %d worker processes; maxchildren=4", m)
	}
}

// maxrequests=10 under 200 requests, 8 at a time, through nginx: none
// lost, and workers are replaced. With a connection per request, no worker
// serves more than 10. With nginx's keep-conn pool a connection carries many
// requests, and workers count requests: after its 10th a worker finishes
// what is in flight and what its kept connections send until its drain
// reaches them (a few, 40 at most here), and does not serve on for ever,
// as it did when only connections counted.
func TestPreforkMaxRequestsRecycling(t *testing.T) {
	const maxRequests, clients, total = 10, 8, 200
	for _, keep := range []bool{false, true} {
		name, upstream, pass, most := "conn-per-request", "", "", maxRequests
		if keep {
			name, upstream, pass, most = "keep-conn", "upstream app { server unix:{{SOCK}}; keepalive 8; }", "fastcgi_keep_conn on;", 4*maxRequests
		}
		t.Run(name, func(t *testing.T) {
			dir := peertest.Dir(t)
			sock := filepath.Join(dir, "mysite.sock")
			startExternal(t, dir, "unix", sock, "runfcgi", "method=prefork", "socket="+sock, "daemonize=false",
				"umask=000", "minspare=2", "maxspare=4", "maxchildren=6", fmt.Sprintf("maxrequests=%d", maxRequests))
			target := "unix:" + sock
			if keep {
				target = "app"
			}
			srv := peertest.Nginx(t, strings.ReplaceAll(upstream, "{{SOCK}}", sock), fmt.Sprintf(
				`location / { include /etc/nginx/fastcgi_params; fastcgi_param PATH_INFO $uri; fastcgi_pass %s; %s }`, target, pass))
			c := &http.Client{Timeout: 20 * time.Second}
			perPID := requestsPerPID(t, c, srv.URL, total, clients)
			if t.Failed() {
				t.Fatal(srv.Log())
			}
			for pid, n := range perPID {
				if n > most {
					t.Errorf("worker %d served %d requests; maxrequests=%d allows %d here", pid, n, maxRequests, most)
				}
			}
			if len(perPID) < total/most {
				t.Errorf("%d requests were served by %d workers; want at least %d", total, len(perPID), total/most)
			}
			t.Logf("%d requests, 0 failed, %d worker PIDs", total, len(perPID))
		})
	}
}

// SIGKILL of the supervisor: its workers go within a few seconds
// (Pdeathsig, and the control socket's EOF).
func TestPreforkWorkersDieWithSupervisor(t *testing.T) {
	dir := peertest.Dir(t)
	sock := filepath.Join(dir, "mysite.sock")
	cmd := startExternal(t, dir, "unix", sock, "runfcgi", "method=prefork", "socket="+sock, "daemonize=false", "minspare=3", "maxspare=3")
	sup := cmd.Process.Pid
	peertest.Eventually(t, 10*time.Second, "3 workers", func() bool { return len(peertest.Children(sup)) == 3 })
	workers := peertest.Children(sup)
	if err := syscall.Kill(sup, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	peertest.Eventually(t, 5*time.Second, fmt.Sprintf("workers %v gone", workers), func() bool {
		for _, w := range workers {
			if alive(w) {
				return false
			}
		}
		return true
	})
}

// Django's way of stopping a daemon, `kill $(cat pidfile)`: a request in
// flight is finished, then the supervisor and workers exit and the pidfile
// and socket are removed.
func TestPreforkKillPidfileDrains(t *testing.T) {
	dir := peertest.Dir(t)
	bin := install(t, dir, "mysite.fcgi")
	sock := filepath.Join(dir, "mysite.sock")
	pidfile := filepath.Join(dir, "django.pid")
	errlog := filepath.Join(dir, "err.log")
	// One connection fills a worker, so that the supervisor starts another
	// when the held request's worker has it: the sign to send the stop.
	if err := os.WriteFile(filepath.Join(dir, "mysite.toml"), []byte("[limits]\nmax_conns = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "runfcgi", "method=prefork", "socket="+sock, "pidfile="+pidfile,
		"errlog="+errlog, "minspare=2").CombinedOutput()
	if err != nil {
		t.Fatalf("runfcgi: %v\n%s", err, out)
	}
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	sup, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	t.Cleanup(func() { syscall.Kill(sup, syscall.SIGKILL) })
	peertest.Eventually(t, 10*time.Second, "2 workers", func() bool { return len(peertest.Children(sup)) == 2 })
	workers := peertest.Children(sup)

	// A request whose body is half sent when the stop comes.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	writeRecord(c, 1, beginRequest)
	writeRecord(c, 4, params("REQUEST_METHOD", "POST", "CONTENT_LENGTH", "5", "REQUEST_URI", "/drain",
		"SCRIPT_NAME", "", "PATH_INFO", "/drain", "SERVER_PROTOCOL", "HTTP/1.1", "HTTP_ACCEPT", "application/json"))
	writeRecord(c, 4, nil)
	writeRecord(c, 5, []byte("hel"))
	// The worker holds the connection before the stop comes.
	peertest.Eventually(t, 10*time.Second, "a worker serving", func() bool { return len(peertest.Children(sup)) == 3 })

	if err := syscall.Kill(sup, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	peertest.Eventually(t, 10*time.Second, "the supervisor stopping", func() bool {
		b, _ := os.ReadFile(errlog)
		return bytes.Contains(b, []byte("prefork: stopping workers"))
	})
	writeRecord(c, 5, []byte("lo"))
	writeRecord(c, 5, nil)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := readResponse(c)
	if err != nil || !strings.Contains(resp, `"body_bytes": 5`) {
		t.Fatalf("in-flight request: %v\n%s", err, resp)
	}
	peertest.Eventually(t, 15*time.Second, "supervisor and workers gone", func() bool {
		if alive(sup) {
			return false
		}
		for _, w := range workers {
			if alive(w) {
				return false
			}
		}
		return true
	})
	for _, p := range []string{pidfile, sock} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left behind", p)
		}
	}
}

// holdRequest sends a request whose body stops after 3 of its 5 bytes: the
// info page waits for the rest, so the request stays in flight.
func holdRequest(t *testing.T, sock string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	writeRecord(c, 1, beginRequest)
	writeRecord(c, 4, params("REQUEST_METHOD", "POST", "CONTENT_LENGTH", "5", "REQUEST_URI", "/held",
		"SCRIPT_NAME", "", "PATH_INFO", "/held", "SERVER_PROTOCOL", "HTTP/1.1"))
	writeRecord(c, 4, nil)
	writeRecord(c, 5, []byte("hel"))
	return c
}

// A minimal FastCGI client for holding a request open at a chosen point.
var beginRequest = []byte{0, 1, 0, 0, 0, 0, 0, 0} // role Responder, no keep-conn

func writeRecord(w io.Writer, typ byte, body []byte) {
	h := []byte{1, typ, 0, 1, 0, 0, 0, 0}
	wire.BigEndian.PutUint16(h[4:], uint16(len(body)))
	w.Write(append(h, body...))
}

func params(kv ...string) []byte {
	var b []byte
	for i := 0; i+1 < len(kv); i += 2 {
		b = append(b, byte(len(kv[i])), byte(len(kv[i+1])))
		b = append(b, kv[i]...)
		b = append(b, kv[i+1]...)
	}
	return b
}

// readResponse returns the STDOUT stream up to END_REQUEST.
func readResponse(r io.Reader) (string, error) {
	var out bytes.Buffer
	h := make([]byte, 8)
	for {
		if _, err := io.ReadFull(r, h); err != nil {
			return out.String(), err
		}
		n := int(wire.BigEndian.Uint16(h[4:])) + int(h[6])
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return out.String(), err
		}
		switch h[1] {
		case 6:
			out.Write(body[:n-int(h[6])])
		case 3:
			return out.String(), nil
		}
	}
}

// Zero-downtime restart of an external server: under 32 concurrent clients
// through nginx, a touch of the binary and then SIGHUP each bring up a new
// program (a new "started") on the same socket, and no request fails.
func TestExternalRestartUnderLoad(t *testing.T) {
	for _, method := range []string{"threaded", "prefork"} {
		for _, network := range []string{"unix", "tcp"} {
			t.Run(method+"/"+network, func(t *testing.T) {
				dir := peertest.Dir(t)
				var addr, pass string
				args := []string{"runfcgi", "method=" + method, "daemonize=false", "umask=000"}
				if network == "unix" {
					addr = filepath.Join(dir, "mysite.sock")
					pass = "unix:" + addr
					args = append(args, "socket="+addr)
				} else {
					port := peertest.FreePort(t)
					addr = fmt.Sprintf("127.0.0.1:%d", port)
					pass = addr
					args = append(args, "host=127.0.0.1", fmt.Sprintf("port=%d", port))
				}
				cmd := startExternal(t, dir, network, addr, args...)
				bin := filepath.Join(dir, "mysite.fcgi")
				// unix: an upstream keep-alive pool, as a busy site has.
				upstream := fmt.Sprintf("upstream app { server %s; }", pass)
				keep := ""
				if network == "unix" {
					upstream = fmt.Sprintf("upstream app { server %s; keepalive 8; }", pass)
					keep = "fastcgi_keep_conn on;"
				}
				srv := peertest.Nginx(t, upstream, fmt.Sprintf(`location / { include /etc/nginx/fastcgi_params; fastcgi_param PATH_INFO $uri; fastcgi_pass app; %s }`, keep))
				c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
				first, _, err := getInfo(c, "GET", srv.URL+"/warmup", nil)
				if err != nil {
					t.Fatalf("warm-up: %v\n%s", err, srv.Log())
				}

				var (
					mu      sync.Mutex
					started = map[string]bool{first.Started: true}
					n       atomic.Int64
					errs    = make(chan error, 64)
					stop    = make(chan struct{})
					newProg = make(chan string, 64)
					wg      sync.WaitGroup
				)
				for i := 0; i < 32; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for j := 0; ; j++ {
							select {
							case <-stop:
								return
							default:
							}
							in, _, err := getInfo(c, "GET", fmt.Sprintf("%s/c%d/%d", srv.URL, i, j), nil)
							n.Add(1)
							if err != nil {
								select {
								case errs <- err:
								default:
								}
								continue
							}
							mu.Lock()
							if !started[in.Started] {
								started[in.Started] = true
								newProg <- in.Started
							}
							mu.Unlock()
						}
					}()
				}
				waitNew := func(what string) {
					t.Helper()
					select {
					case <-newProg:
					case err := <-errs:
						t.Fatalf("%s: %v\n%s", what, err, srv.Log())
					case <-time.After(30 * time.Second):
						t.Fatalf("%s: no new program within 30s", what)
					}
					// Drain: a prefork generation has several workers.
					for len(newProg) > 0 {
						<-newProg
					}
				}
				now := time.Now()
				if err := os.Chtimes(bin, now, now); err != nil {
					t.Fatal(err)
				}
				waitNew("touch")
				// Let the new program serve a while, then SIGHUP.
				for target := n.Load() + 500; n.Load() < target; {
					select {
					case err := <-errs:
						t.Fatalf("after touch: %v\n%s", err, srv.Log())
					case <-time.After(20 * time.Millisecond): // polling the counter
					}
				}
				if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
					t.Fatal(err)
				}
				waitNew("SIGHUP")
				for target := n.Load() + 500; n.Load() < target; {
					select {
					case err := <-errs:
						t.Fatalf("after SIGHUP: %v\n%s", err, srv.Log())
					case <-time.After(20 * time.Millisecond): // polling the counter
					}
				}
				close(stop)
				wg.Wait()
				close(errs)
				failed := 0
				for err := range errs {
					failed++
					t.Error(err)
				}
				t.Logf("%s over %s: %d requests, %d failed, %d program starts seen", method, network, n.Load(), failed, len(started))
				if failed > 0 {
					t.Log(srv.Log())
				}
			})
		}
	}
}

// [server] max_lifetime with method=prefork: each worker leaves after its
// lifetime and the supervisor starts another; sequential requests through
// nginx see new worker PIDs and none fails.
func TestPreforkMaxLifetime(t *testing.T) {
	dir := peertest.Dir(t)
	sock := filepath.Join(dir, "mysite.sock")
	os.WriteFile(filepath.Join(dir, "mysite.toml"), []byte("[server]\nmax_lifetime = \"1s\"\n"), 0o644)
	startExternal(t, dir, "unix", sock, "runfcgi", "method=prefork", "socket="+sock, "daemonize=false",
		"umask=000", "minspare=1", "maxspare=2", "maxchildren=2")
	srv := peertest.Nginx(t, "", fmt.Sprintf(`location / { include /etc/nginx/fastcgi_params; fastcgi_pass unix:%s; }`, sock))
	c := &http.Client{Timeout: 20 * time.Second}
	first, _, err := getInfo(c, "GET", srv.URL+"/first", nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, srv.Log())
	}
	// Workers started together may all be gone after 1.1 s; a new one is
	// more than the two that can exist at the start.
	seen := map[int]bool{first.PID: true}
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; len(seen) < 4; i++ {
		in, _, err := getInfo(c, "GET", fmt.Sprintf("%s/r/%d", srv.URL, i), nil)
		if err != nil {
			t.Fatalf("request %d: %v\n%s", i, err, srv.Log())
		}
		seen[in.PID] = true
		if time.Now().After(deadline) {
			t.Fatalf("%d worker PIDs within 30s of max_lifetime = 1s, want 4", len(seen))
		}
	}
}

// Anyone who can reach the socket may open connections and leave them idle,
// or send part of a record and stall. With Django's default options
// (maxchildren=50), ten times maxchildren such connections must not keep a
// good request from being answered within a second: flup's one connection
// per worker let 50 of them stop all service. Nor may 50 times what the
// pool can hold at once (2 workers of [limits] max_conns = 4): a full
// worker closes the connection idle longest.
func TestPreforkIdleAndSlowFlood(t *testing.T) {
	// A whole FCGI_BEGIN_REQUEST, then three bytes of a PARAMS header.
	partial := append(record(1, beginRequest), 1, 4, 0)
	for _, tc := range []struct {
		name  string
		toml  string
		args  []string
		flood int
		first []byte // what each flooding connection sends before it stalls
	}{
		{"defaults/idle", "", nil, 500, nil},
		{"defaults/partial-record", "", nil, 500, partial},
		{"full-pool/idle", "[limits]\nmax_conns = 4\n", []string{"minspare=1", "maxspare=2", "maxchildren=2"}, 400, nil},
		{"full-pool/partial-record", "[limits]\nmax_conns = 4\n", []string{"minspare=1", "maxspare=2", "maxchildren=2"}, 400, partial},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := peertest.Dir(t)
			sock := filepath.Join(dir, "mysite.sock")
			if err := os.WriteFile(filepath.Join(dir, "mysite.toml"), []byte(tc.toml), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := startExternal(t, dir, "unix", sock, append([]string{"runfcgi", "socket=" + sock, "daemonize=false"}, tc.args...)...)
			sup := cmd.Process.Pid
			peertest.Eventually(t, 10*time.Second, "workers started", func() bool { return len(peertest.Children(sup)) >= 1 })
			for i := 0; i < tc.flood; i++ {
				c, err := net.Dial("unix", sock)
				if err != nil {
					t.Fatalf("flooding connection %d: %v", i, err)
				}
				defer c.Close()
				if _, err := c.Write(tc.first); err != nil {
					t.Fatalf("flooding connection %d: %v", i, err)
				}
			}
			start := time.Now()
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(start.Add(time.Second))
			writeRecord(c, 1, beginRequest)
			writeRecord(c, 4, params("REQUEST_METHOD", "GET", "REQUEST_URI", "/good", "SCRIPT_NAME", "",
				"PATH_INFO", "/good", "SERVER_PROTOCOL", "HTTP/1.1", "HTTP_ACCEPT", "application/json"))
			writeRecord(c, 4, nil)
			writeRecord(c, 5, nil)
			resp, err := readResponse(c)
			if err != nil || !strings.Contains(resp, `"path_info": "/good"`) {
				t.Fatalf("good request after %d %s connections: %v after %s\n%q", tc.flood, tc.name, err, time.Since(start), resp)
			}
			t.Logf("answered in %s after %d %s connections, %d workers", time.Since(start), tc.flood, tc.name, len(peertest.Children(sup)))
		})
	}
}

// record is one FastCGI record of request 1, as writeRecord sends it.
func record(typ byte, body []byte) []byte {
	var b bytes.Buffer
	writeRecord(&b, typ, body)
	return b.Bytes()
}

// One worker takes new connections at a time and the spares stand by, so
// that the load stays in one process (two Go processes sharing it cost
// more CPU per request than one): 200 requests through nginx, 8 at a time,
// with three workers started, are all served by one of them.
func TestPreforkOneWorkerAccepts(t *testing.T) {
	dir := peertest.Dir(t)
	sock := filepath.Join(dir, "mysite.sock")
	cmd := startExternal(t, dir, "unix", sock, "runfcgi", "method=prefork", "socket="+sock, "daemonize=false",
		"umask=000", "minspare=3", "maxspare=3")
	peertest.Eventually(t, 10*time.Second, "3 workers", func() bool { return len(peertest.Children(cmd.Process.Pid)) == 3 })
	srv := peertest.Nginx(t, "", fmt.Sprintf(`location / { include /etc/nginx/fastcgi_params; fastcgi_pass unix:%s; }`, sock))
	c := &http.Client{Timeout: 20 * time.Second}
	perPID := requestsPerPID(t, c, srv.URL, 200, 8)
	if len(perPID) != 1 {
		t.Errorf("200 requests were served by %d workers %v; want one", len(perPID), perPID)
	}
}

// requestsPerPID sends total info-page requests to base, clients at a
// time, and counts how many each worker (by the PID it reports) answered.
// A failed request fails t.
func requestsPerPID(t *testing.T, c *http.Client, base string, total, clients int) map[int]int {
	t.Helper()
	var mu sync.Mutex
	perPID := map[int]int{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, clients)
	for i := 0; i < total; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			in, _, err := getInfo(c, "GET", fmt.Sprintf("%s/r/%d", base, i), nil)
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			mu.Lock()
			perPID[in.PID]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return perPID
}
