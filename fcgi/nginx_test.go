package fcgi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"github.com/fcgishim/fcgishim/internal/peertest"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// peerEcho answers with the path, query and a digest of the body so that
// crossed responses are caught.
var peerEcho = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "%s %s?%s len=%d sha=%x user=%s", r.Method, r.URL.Path, r.URL.RawQuery, len(b), sha256.Sum256(b), Params(r)["X_TEST_VAR"])
})

func TestNginxKeepAlive(t *testing.T) {
	nginx := peertest.Need(t, "nginx")[0]
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	sock := filepath.Join(dir, "app.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(sock, 0o777)
	s := &Server{Handler: peerEcho}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })

	// nginx inherits its listening socket (the NGINX variable), so requests
	// queue in the kernel until it is ready: no polling.
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := hl.Addr().String()
	hf, err := hl.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	hl.Close()
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	conf := fmt.Sprintf(`%s
daemon off;
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log info;
events { worker_connections 256; }
http {
	access_log off;
	client_body_temp_path %[2]s/body;
	fastcgi_temp_path %[2]s/fastcgi;
	proxy_temp_path %[2]s/proxy;
	uwsgi_temp_path %[2]s/uwsgi;
	scgi_temp_path %[2]s/scgi;
	client_max_body_size 4m;
	upstream app {
		server unix:%[3]s;
		keepalive 8;
	}
	server {
		listen %[4]s;
		location / {
			include /etc/nginx/fastcgi_params;
			fastcgi_param X_TEST_VAR from-nginx;
			fastcgi_pass app;
			fastcgi_keep_conn on;
		}
	}
}
`, user, dir, sock, addr)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nginx, "-p", dir, "-c", confPath)
	// Its own process group: killing nginx kills its worker too (a worker
	// outlives a SIGKILLed master, holding its connections open).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	killNginx := func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	}
	cmd.ExtraFiles = []*os.File{hf}
	cmd.Env = []string{"NGINX=3;"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	hf.Close()
	t.Cleanup(func() {
		killNginx()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx stderr: %s\nerror.log:\n%s", stderr.String(), log)
		}
	})

	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	base := "http://" + addr
	const n, par = 200, 16
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	errs := make(chan error, n+1)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			path := fmt.Sprintf("/req/%d", i)
			resp, err := client.Get(fmt.Sprintf("%s%s?i=%d", base, path, i))
			if err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := fmt.Sprintf("GET %s?i=%d len=0 sha=%x user=from-nginx", path, i, sha256.Sum256(nil))
			if resp.StatusCode != 200 || string(b) != want {
				errs <- fmt.Errorf("request %d: %d %q want %q", i, resp.StatusCode, b, want)
			}
		}()
	}
	// A 1 MiB POST body echoed back as its digest.
	wg.Add(1)
	go func() {
		defer wg.Done()
		body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
		resp, err := client.Post(base+"/upload?big=1", "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			errs <- err
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := fmt.Sprintf("POST /upload?big=1 len=%d sha=%x", len(body), sha256.Sum256(body))
		if resp.StatusCode != 200 || !strings.HasPrefix(string(b), want) {
			errs <- fmt.Errorf("upload: %d %q", resp.StatusCode, b)
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// HEAD through nginx carries no body.
	resp, err := client.Head(base + "/head")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("HEAD: %v %v", resp, err)
	}
	resp.Body.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	killNginx()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown after nginx: %v", err)
	}
}

func TestCgiFcgi(t *testing.T) {
	bin := peertest.Need(t, "cgi-fcgi")[0]
	path := startServer(t, &Server{Handler: peerEcho})
	body := []byte("posted via libfcgi")
	cmd := exec.Command(bin, "-bind", "-connect", path)
	cmd.Env = []string{
		"REQUEST_METHOD=POST", "REQUEST_URI=/cgi-fcgi?q=1", "SCRIPT_NAME=/cgi-fcgi", "QUERY_STRING=q=1",
		"SERVER_PROTOCOL=HTTP/1.1", "SERVER_NAME=localhost", "REMOTE_ADDR=127.0.0.1",
		fmt.Sprintf("CONTENT_LENGTH=%d", len(body)), "X_TEST_VAR=libfcgi",
	}
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cgi-fcgi: %v %s", err, out)
	}
	r := parseCGI(t, string(out))
	want := fmt.Sprintf("POST /cgi-fcgi?q=1 len=%d sha=%x user=libfcgi", len(body), sha256.Sum256(body))
	if r.status != 200 || r.body != want {
		t.Fatalf("got %q", out)
	}
}
