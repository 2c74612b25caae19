#!/usr/bin/env bash
# Soak test: real Apache + mod_fcgid spawning mysite.fcgi, and nginx in
# front of `mysite.fcgi serve --listen unix:…`, each serving a supervised Go
# app, under mixed traffic (wrk GETs, curl POST bodies) for SOAK_SECONDS
# (default 180) with faults injected:
#   - touch mysite.fcgi (both copies) every ~20 s  → restart in place
#   - kill -9 the app every ~30 s                 → supervisor restarts it
#   - malformed FastCGI connections every ~3 s to our unix socket and to
#     mod_fcgid's sockets (garbage, bad version, truncated and lying records)
# Loopback only. Reports requests served and failed, and the RSS of every
# mysite.fcgi process every 5 s.
#
# Failure accounting. A request that fails (non-2xx/3xx, or a curl error)
# within an app-kill window — from 1 s before the kill to KILL_WINDOW
# (default 10 s) after it — may legitimately get 502/503 (the request was in
# flight to the app, or arrived while it restarted): those are counted and
# reported separately. Any other failure is unexpected: touches and
# malformed connections must lose nothing. wrk reports non-2xx responses per
# second of wall time (a Lua response hook), curl per request, so each
# failure is placed against the injection log. wrk socket errors (connect,
# read, write, timeout) cannot be placed in time and always count as
# unexpected.
#
# Exit status: 0 when there is no unexpected failure and RSS (summed over
# our processes) did not grow by more than 50 % AND 20 MiB between the
# first and the last third of the run; 1 otherwise; 2 on setup errors.
set -uo pipefail
SOAK_SECONDS=${SOAK_SECONDS:-180}
KILL_WINDOW=${KILL_WINDOW:-10}
here=$(cd "$(dirname "$0")/.." && pwd)
export PATH=$PATH:/usr/local/go/bin:/usr/sbin
for p in apache2 nginx wrk curl python3 go; do
  command -v "$p" >/dev/null || { echo "soak: $p is required" >&2; exit 2; }
done
[ -f /usr/lib/apache2/modules/mod_fcgid.so ] || { echo "soak: mod_fcgid is required" >&2; exit 2; }

D=$(mktemp -d /tmp/soak.XXXXXX)
chmod 755 "$D"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  [ -f "$D/apache/httpd.pid" ] && kill -WINCH "$(cat "$D/apache/httpd.pid")" 2>/dev/null
  [ -f "$D/nginx/nginx.pid" ] && kill -QUIT "$(cat "$D/nginx/nginx.pid")" 2>/dev/null
  [ -n "${ext_pid:-}" ] && kill -TERM "$ext_pid" 2>/dev/null
  sleep 2
  pkill -KILL -f "$D/" 2>/dev/null  # only processes running from our tree
  [ -n "${SOAK_KEEP:-}" ] || rm -rf "$D"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s; }

echo "soak: building into $D"
(cd "$here" && go build -o "$D/mysite.fcgi" .) || exit 2
mkdir -p "$D/appsrc" "$D/app"
cat > "$D/appsrc/main.go" <<'EOF'
// The soak's app: echoes method, path and body length; listens on the unix
// socket given as its argument.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	l, err := net.Listen("unix", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := &http.Server{}
	go func() { // SIGTERM (a replacement after a deploy) drains, as gunicorn does
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		<-term
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "ok %s %s %d\n", r.Method, r.URL.Path, n)
		fmt.Fprintf(os.Stderr, "served %s %s\n", r.Method, r.URL.Path) // a chatty app
	})
	if err := srv.Serve(l); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
EOF
(cd "$D/appsrc" && printf 'module soakapp\n\ngo 1.22\n' > go.mod && go build -o "$D/app/soakapp" .) || exit 2

# --- Apache + mod_fcgid: the shared-hosting setup ---------------------------
A=$D/apache; mkdir -p "$A/site/mysite" "$A/fcgid" "$A/run"
chown www-data:www-data "$A/fcgid" "$A/run"; chmod 700 "$A/run"
cp "$D/mysite.fcgi" "$A/site/mysite/mysite.fcgi"
cat > "$A/site/mysite/.htaccess" <<'EOF'
AddHandler fcgid-script .fcgi
RewriteEngine On
RewriteCond %{REQUEST_FILENAME} !-f
RewriteRule ^(.*)$ mysite.fcgi/$1 [QSA,L]
EOF
cat > "$A/site/mysite/mysite.toml" <<EOF
[app]
command = ["$D/app/soakapp", "{socket}"]
runtime_dir = "$A/run"
log = "$A/run/app.log"
EOF
chmod -R a+rX "$A/site" "$D/app"
aport=$(free_port)
mods=""
for m in mpm_event authz_core mime dir alias log_config fcgid rewrite; do
  [ -f /usr/lib/apache2/modules/mod_$m.so ] && mods="$mods
LoadModule ${m}_module /usr/lib/apache2/modules/mod_$m.so"
done
cat > "$A/httpd.conf" <<EOF
ServerRoot $A
$mods
Listen 127.0.0.1:$aport
ServerName 127.0.0.1
User www-data
Group www-data
PidFile $A/httpd.pid
ErrorLog $A/error.log
LogLevel warn
Mutex file:$A
DefaultRuntimeDir $A
TypesConfig /etc/mime.types
DocumentRoot $A/site
FcgidIPCDir $A/fcgid
FcgidProcessTableFile $A/fcgid_shm
FcgidMaxRequestsPerProcess 0
FcgidMaxProcessesPerClass 8
FcgidMaxRequestLen 1073741824
<Directory $A/site>
    Options +ExecCGI +FollowSymLinks
    AllowOverride All
    Require all granted
</Directory>
EOF
apache2 -t -f "$A/httpd.conf" >/dev/null 2>&1 || { apache2 -t -f "$A/httpd.conf"; exit 2; }
apache2 -f "$A/httpd.conf" -DFOREGROUND & pids+=($!)

# --- nginx → mysite.fcgi serve --listen unix:… ------------------------------
N=$D/nginx; mkdir -p "$N/ext" "$N/tmp" "$N/run"; chmod 700 "$N/run"
cp "$D/mysite.fcgi" "$N/ext/mysite.fcgi"
cat > "$N/ext/mysite.toml" <<EOF
[app]
command = ["$D/app/soakapp", "{socket}"]
runtime_dir = "$N/run"
log = "$N/run/app.log"
EOF
sock=$N/fcgi.sock
"$N/ext/mysite.fcgi" serve --listen "unix:$sock" --umask 007 2>"$N/mysite.log" & ext_pid=$!
nport=$(free_port)
cat > "$N/nginx.conf" <<EOF
daemon off;
worker_processes 1;
user root;
pid $N/nginx.pid;
error_log $N/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $N/tmp/body; proxy_temp_path $N/tmp/proxy; fastcgi_temp_path $N/tmp/fcgi;
    uwsgi_temp_path $N/tmp/uwsgi; scgi_temp_path $N/tmp/scgi;
    client_max_body_size 0;
    upstream shim { server unix:$sock; keepalive 8; }
    server {
        listen 127.0.0.1:$nport;
        location / {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_NAME "";
            fastcgi_param PATH_INFO \$uri;
            fastcgi_keep_conn on;
            fastcgi_pass shim;
        }
    }
}
EOF
nginx -t -c "$N/nginx.conf" >/dev/null 2>&1 || { nginx -t -c "$N/nginx.conf"; exit 2; }
nginx -c "$N/nginx.conf" & pids+=($!)

AURL=http://127.0.0.1:$aport/mysite
NURL=http://127.0.0.1:$nport
for url in "$AURL/warmup" "$NURL/warmup"; do
  ok=
  for _ in $(seq 100); do
    curl -sf -o /dev/null --max-time 10 "$url" && { ok=1; break; }
    sleep 0.2  # waiting for the servers and the apps to come up
  done
  [ -n "$ok" ] || { echo "soak: $url never answered"; cat "$A/error.log" "$N/error.log" "$N/mysite.log" 2>/dev/null | tail -30; exit 2; }
done
echo "soak: Apache+mod_fcgid at $AURL, nginx at $NURL; ${SOAK_SECONDS}s"

# --- traffic --------------------------------------------------------------
cat > "$D/count.lua" <<'EOF'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) errs = {} end
function response(status, headers, body)
  if status < 200 or status > 399 then
    local s = os.time()
    errs[s] = (errs[s] or 0) + 1
  end
end
function done(summary, latency, requests)
  local f = io.open(os.getenv("WRK_OUT"), "w")
  local e = summary.errors
  f:write(string.format("total %d\nsockerr %d\n", summary.requests, e.connect + e.read + e.write + e.timeout))
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("errs")) do f:write(string.format("err %d %d\n", s, n)) end
  end
  f:close()
end
EOF
start=$(now)
end=$((start + SOAK_SECONDS))
WRK_OUT=$D/wrk-apache.out wrk -t2 -c4 -d"${SOAK_SECONDS}s" --timeout 30s -s "$D/count.lua" "$AURL/get" >"$D/wrk-apache.log" 2>&1 & pids+=($!); wrk_a=$!
WRK_OUT=$D/wrk-nginx.out wrk -t2 -c8 -d"${SOAK_SECONDS}s" --timeout 30s -s "$D/count.lua" "$NURL/get" >"$D/wrk-nginx.log" 2>&1 & pids+=($!); wrk_n=$!
head -c 200000 /dev/urandom > "$D/body"
poster() { # $1 = base URL, $2 = log
  local out=$D/post.$BASHPID.out
  while [ "$(now)" -lt "$end" ]; do
    code=$(curl -s -o "$out" -w '%{http_code}' --max-time 30 --data-binary @"$D/body" "$1/post")
    [ "$code" = 200 ] && ! grep -q "^ok POST .* 200000\$" "$out" && code=bad-body
    echo "$(now) $code" >> "$2"
  done
}
poster "$AURL" "$D/post-apache.log" & pids+=($!)
poster "$NURL" "$D/post-nginx.log" & pids+=($!)

# --- injections and RSS sampling ----------------------------------------
cat > "$D/malformed.py" <<'EOF'
import os, random, socket, struct, sys
def rec(t, rid, content, pad=0, ver=1):
    return struct.pack(">BBHHBB", ver, t, rid, len(content), pad, 0) + content + b"\0" * pad
begin = rec(1, 1, struct.pack(">HB5x", 1, 1))
cases = [
    os.urandom(random.randint(1, 4096)),                        # garbage
    rec(1, 1, struct.pack(">HB5x", 1, 0), ver=2),                # bad version
    begin + rec(4, 1, b"\x0b\x7fREQUEST_URI")[:30],              # truncated params
    begin + rec(4, 1, b"\x8f\xff\xff\xffX"),                     # 4-byte length lying
    begin + rec(4, 1, b"") + rec(5, 1, b"ab")[:10],              # truncated stdin
    b"".join(rec(1, i, struct.pack(">HB5x", 1, 1)) for i in range(1, 300)),  # id flood
    rec(9, 0, b"\x0e\x00FCGI_MAX_CONNS") + rec(200, 0, b"x" * 100),  # mgmt + unknown
    rec(1, 0, struct.pack(">HB5x", 1, 1)),                       # BEGIN with id 0
]
for path in sys.argv[1:]:
    for c in cases:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(2)
            s.connect(path)
            s.sendall(c)
            s.shutdown(socket.SHUT_WR)
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
            s.close()
        except OSError:
            pass
EOF
: > "$D/inject.log"
: > "$D/rss.log"
malformed=0
next_touch=$((start + 20)); next_kill=$((start + 30)); next_bad=$((start + 3)); next_rss=$start
while [ "$(now)" -lt "$end" ]; do
  t=$(now)
  if [ "$t" -ge "$next_rss" ]; then
    total=0
    for p in $(pgrep -f 'mysite\.fcgi'); do
      kb=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null)
      total=$((total + ${kb:-0}))
    done
    echo "$((t - start)) $total $(pgrep -fc 'mysite\.fcgi')" >> "$D/rss.log"
    next_rss=$((next_rss + 5))
  fi
  if [ "$t" -ge "$next_touch" ]; then
    touch "$A/site/mysite/mysite.fcgi" "$N/ext/mysite.fcgi"
    echo "$t touch" >> "$D/inject.log"; next_touch=$((t + 20))
  fi
  if [ "$t" -ge "$next_kill" ]; then
    pkill -KILL -f "^$D/app/soakapp" && echo "$t kill" >> "$D/inject.log"; next_kill=$((t + 30))
  fi
  if [ "$t" -ge "$next_bad" ]; then
    python3 "$D/malformed.py" "$sock" $(find "$A/fcgid" -type s 2>/dev/null) && malformed=$((malformed + 8))
    echo "$t malformed" >> "$D/inject.log"; next_bad=$((t + 3))
  fi
  sleep 0.5  # the injection schedule's tick
done
wait "$wrk_a" "$wrk_n"

# --- report ----------------------------------------------------------------
python3 - "$D" "$KILL_WINDOW" "$SOAK_SECONDS" <<'EOF'
import sys, collections
D, W, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
kills = [int(l.split()[0]) for l in open(f"{D}/inject.log") if l.split()[1] == "kill"]
touches = sum(1 for l in open(f"{D}/inject.log") if l.split()[1] == "touch")
bad = sum(1 for l in open(f"{D}/inject.log") if l.split()[1] == "malformed")
in_window = lambda t: any(k - 1 <= t <= k + W for k in kills)
served = failed_window = failed = sockerr = 0
detail = collections.Counter()
for name in ("apache", "nginx"):
    for l in open(f"{D}/wrk-{name}.out"):
        f = l.split()
        if f[0] == "total": served += int(f[1])
        elif f[0] == "sockerr": sockerr += int(f[1]); failed += int(f[1]); detail[f"{name} wrk socket errors"] += int(f[1])
        elif f[0] == "err":
            if in_window(int(f[1])): failed_window += int(f[2]); served -= int(f[2])
            else: failed += int(f[2]); served -= int(f[2]); detail[f"{name} GET non-2xx at +{int(f[1])}"] += int(f[2])
    for l in open(f"{D}/post-{name}.log"):
        t, code = l.split()
        if code == "200": served += 1
        elif in_window(int(t)): failed_window += 1
        else: failed += 1; detail[f"{name} POST {code} at +{int(t)}"] += 1
t0 = None
rss = []
for l in open(f"{D}/rss.log"):
    s, kb, n = map(int, l.split())
    rss.append((s, kb, n))
print(f"soak: {secs}s, {touches} touches, {len(kills)} app kills, {bad} rounds of malformed connections (8 each)")
print(f"soak: requests served {served}, failed in app-kill windows {failed_window} (allowed), unexpected failures {failed}")
for k, v in sorted(detail.items()): print(f"  unexpected: {k}: {v}")
print("soak: RSS of mysite.fcgi processes (s, KiB total, processes):", " ".join(f"{s}:{kb}/{n}" for s, kb, n in rss))
ok = failed == 0
third = max(1, len(rss) // 3)
first = sum(kb for _, kb, _ in rss[:third]) / third
last = sum(kb for _, kb, _ in rss[-third:]) / third
grew = last - first
print(f"soak: RSS first third {first/1024:.1f} MiB, last third {last/1024:.1f} MiB")
if grew > first * 0.5 and grew > 20 * 1024:
    print("soak: FAIL: RSS grew beyond the bound"); ok = False
print("soak:", "PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
EOF
rc=$?
if [ $rc -ne 0 ]; then
  echo "--- apache error.log (tail)"; tail -20 "$A/error.log"
  echo "--- nginx error.log (tail)"; tail -20 "$N/error.log"
  echo "--- mysite.fcgi (nginx) log (tail)"; tail -20 "$N/mysite.log"
fi
exit $rc
