#!/usr/bin/env bash
# The reverse-proxy path, side by side in one run, alternating rounds, wrk on
# loopback, the same Go HTTP app (bench/app) on a unix socket:
#   A. nginx -> mysite.fcgi (FastCGI, unix socket, keep-conn) -> app   (upstream = "unix:…")
#   B. nginx -> proxy_pass (keep-alive) -> app
#   C. nginx -> proxy_pass -> a second nginx -> proxy_pass -> app: the control,
#      what a middle hop written in C costs on this machine
# Prints req/s, p50/p99 latency and the middle hop's CPU time per request
# (from /proc: mysite.fcgi in A, the second nginx's worker in C) per
# round, the medians, the req/s ratios
# A/B (the figure we are held to) and C/B, and the latency mysite.fcgi adds;
# then streams a 256 MiB upload through A and reports whether it arrived
# intact and mysite.fcgi's peak RSS (VmHWM).
# Usage: bench/proxy.sh [ROUNDS] [SECONDS]   (needs nginx, wrk, curl; root for nginx's user)
set -euo pipefail
rounds=${1:-5}
secs=${2:-5}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
need_packages nginx wrk curl
read -r p_shim p_direct p_nginxhop <<< "$(free_ports 3 | tr '\n' ' ')"
bench_workdir proxy
(cd "$here/.." && CGO_ENABLED=0 go build -o "$work/mysite.fcgi" . && CGO_ENABLED=0 go build -o "$work/app" ./bench/app)

"$work/app" "unix:$work/app.sock" & 
printf '[app]\nupstream = "unix:%s/app.sock"\n' "$work" > "$work/mysite.toml"
"$work/mysite.fcgi" serve --listen "unix:$work/shim.sock" --protocol fcgi 2>"$work/shim.log" &
shim_pid=$!

{ nginx_prologue "$work" nginx2; cat <<CONF
  upstream app { server unix:$work/app.sock; keepalive 32; }
  server {
    listen unix:$work/mid.sock;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
} > "$work/nginx2.conf"
{ nginx_prologue "$work" nginx; cat <<CONF
  client_max_body_size 0;
  upstream shim { server unix:$work/shim.sock; keepalive 32; }
  upstream app  { server unix:$work/app.sock;  keepalive 32; }
  upstream mid  { server unix:$work/mid.sock;  keepalive 32; }
  server {
    listen 127.0.0.1:$p_shim;
    location / { include /etc/nginx/fastcgi_params; fastcgi_pass shim; fastcgi_keep_conn on;
                 fastcgi_request_buffering off; }
  }
  server {
    listen 127.0.0.1:$p_direct;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen 127.0.0.1:$p_nginxhop;
    location / { proxy_pass http://mid; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
} > "$work/nginx.conf"
nginx -c "$work/nginx2.conf"
nginx -c "$work/nginx.conf"
wait_up http://127.0.0.1:$p_shim/ || { cat "$work/shim.log"; exit 1; }
wait_up http://127.0.0.1:$p_direct/
wait_up http://127.0.0.1:$p_nginxhop/

# ticks PID...: CPU time (user + system, clock ticks) of the processes.
ticks() { local p t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
# run URL PID...: req/s, p50, p99 and the CPU microseconds per request that
# the middle hop's processes (PID...) spent; "-" without one.
run() { local a b n cpu=-
  a=$(ticks "${@:2}")
  wrk -t2 -c32 -d"${secs}s" --latency "$1" > "$work/out"
  b=$(ticks "${@:2}")
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/out")
  p50=$(awk '$1=="50%" {print $2}' "$work/out"); p99=$(awk '$1=="99%" {print $2}' "$work/out")
  n=$(awk '/requests in/ {print $1}' "$work/out")
  [ $# -gt 1 ] && cpu=$(awk -v a="$a" -v b="$b" -v n="$n" -v t="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", (b-a)/t*1e6/n}')
  echo "$rps $(ms "$p50") $(ms "$p99") $cpu"; }
# wrk prints 812.00us / 1.23ms / 1.02s: convert to milliseconds.
ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/,"",v); print v/1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v); print v+0 } else if (v ~ /s$/) { sub(/s$/,"",v); print v*1000 } else print v }'; }
: > "$work/r"
for r in $(seq 1 "$rounds"); do
  for t in shim direct nginxhop; do
    case $t in
      shim) u=http://127.0.0.1:$p_shim/; mid=("$shim_pid") ;;
      direct) u=http://127.0.0.1:$p_direct/; mid=() ;;
      nginxhop) u=http://127.0.0.1:$p_nginxhop/; mid=($(pgrep -P "$(cat "$work/nginx2.pid")")) ;;
    esac
    read -r rps p50 p99 cpu < <(run "$u" "${mid[@]}")
    echo "$t $rps $p50 $p99 $cpu" >> "$work/r"
    echo "round $r $t: $rps req/s, p50 ${p50} ms, p99 ${p99} ms, middle hop CPU ${cpu} us/request"
  done
done
med() { awk -v t="$1" -v c="$2" '$1==t {print $c}' "$work/r" | median; }
echo
for t in shim direct nginxhop; do echo "$t median: $(med $t 2) req/s, p50 $(med $t 3) ms, p99 $(med $t 4) ms"; done
echo "middle hop CPU per request, median: mysite.fcgi $(med shim 5) us, nginx $(med nginxhop 5) us"
ratio() { awk -v a="$(med "$1" 2)" -v b="$(med "$2" 2)" 'BEGIN {printf "%.2f", a/b}'; }
echo "ratio req/s  nginx->mysite.fcgi->app / nginx->proxy_pass->app: $(ratio shim direct)"
echo "control      nginx->nginx->app / nginx->proxy_pass->app:       $(ratio nginxhop direct)"
echo "ratio req/s  nginx->mysite.fcgi->app / nginx->nginx->app:       $(ratio shim nginxhop)"
echo "added latency: p50 $(awk -v a="$(med shim 3)" -v b="$(med direct 3)" 'BEGIN {printf "%.3f", a-b}') ms, p99 $(awk -v a="$(med shim 4)" -v b="$(med direct 4)" 'BEGIN {printf "%.3f", a-b}') ms"

# 256 MiB upload through nginx -> mysite.fcgi -> app, streamed.
head -c $((256*1024*1024)) /dev/urandom > "$work/big"
want="$((256*1024*1024)) $(sha256sum "$work/big" | cut -d' ' -f1)"
got=$(curl -s --data-binary @"$work/big" -H 'Content-Type: application/octet-stream' http://127.0.0.1:$p_shim/upload)
[ "$got" = "$want" ] && echo "256 MiB upload: intact" || { echo "256 MiB upload: MISMATCH (got '$got')"; exit 1; }
echo "mysite.fcgi peak RSS (VmHWM) after the upload: $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$shim_pid/status)"
