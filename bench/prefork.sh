#!/usr/bin/env bash
# runfcgi method=prefork against method=threaded, in alternating rounds of
# one run, behind one nginx with fastcgi_keep_conn on and an upstream
# keep-alive pool of 16 (wrk -c32, so nginx also opens and closes
# connections beyond the pool), for two apps:
#   info  : the built-in info page (no mysite.toml)
#   proxy : the app mode, proxying to a Go HTTP app (bench/app) on a unix socket
# and, as the reference, nginx proxy_pass (keep-alive) straight to that app.
# Both servers run with Django's defaults (prefork: minspare 2, maxspare 5,
# maxchildren 50). Every round is printed, so a decline shows; after each
# prefork round the supervisor's workers are sampled: how many, how many
# processes it has started so far (spawn/retire churn), their open fds,
# threads and RSS. Each run also reports the CPU time our processes spent
# per request, which load from elsewhere disturbs far less than req/s. At
# the end: medians, and the medians of the rounds' prefork/threaded ratios
# (load from elsewhere changes less within a round than between rounds).
# Usage: bench/prefork.sh [ROUNDS] [SECONDS]   (root: nginx; needs wrk, curl)
set -euo pipefail
rounds=${1:-5}
secs=${2:-3}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
need_packages nginx wrk curl
read -r p_info_prefork p_info_threaded p_proxy_prefork p_proxy_threaded p_direct <<< "$(free_ports 5 | tr '\n' ' ')"
bench_workdir prefork
(cd "$here/.." && CGO_ENABLED=0 go build -o "$work/mysite.fcgi" . && CGO_ENABLED=0 go build -o "$work/app" ./bench/app)
"$work/app" "unix:$work/app.sock" &
for d in info proxy; do mkdir -p "$work/$d" && cp "$work/mysite.fcgi" "$work/$d/"; done
printf '[app]\nupstream = "unix:%s/app.sock"\n' "$work" > "$work/proxy/mysite.toml"
declare -A pid
for d in info proxy; do
  for m in prefork threaded; do
    "$work/$d/mysite.fcgi" runfcgi method=$m socket="$work/$d-$m.sock" daemonize=false 2>"$work/$d-$m.log" &
    pid[$d-$m]=$!
  done
done

{ nginx_prologue "$work" nginx; cat <<CONF
  upstream app { server unix:$work/app.sock; keepalive 16; }
  upstream info-prefork { server unix:$work/info-prefork.sock; keepalive 16; }
  upstream info-threaded { server unix:$work/info-threaded.sock; keepalive 16; }
  upstream proxy-prefork { server unix:$work/proxy-prefork.sock; keepalive 16; }
  upstream proxy-threaded { server unix:$work/proxy-threaded.sock; keepalive 16; }
  server { listen 127.0.0.1:$p_info_prefork; location / { include /etc/nginx/fastcgi_params; fastcgi_pass info-prefork; fastcgi_keep_conn on; } }
  server { listen 127.0.0.1:$p_info_threaded; location / { include /etc/nginx/fastcgi_params; fastcgi_pass info-threaded; fastcgi_keep_conn on; } }
  server { listen 127.0.0.1:$p_proxy_prefork; location / { include /etc/nginx/fastcgi_params; fastcgi_pass proxy-prefork; fastcgi_keep_conn on; } }
  server { listen 127.0.0.1:$p_proxy_threaded; location / { include /etc/nginx/fastcgi_params; fastcgi_pass proxy-threaded; fastcgi_keep_conn on; } }
  server { listen 127.0.0.1:$p_direct; location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
CONF
} > "$work/nginx.conf"
nginx -c "$work/nginx.conf"
names=(info-prefork info-threaded proxy-prefork proxy-threaded direct)
declare -A url=([info-prefork]=http://127.0.0.1:$p_info_prefork/ [info-threaded]=http://127.0.0.1:$p_info_threaded/
  [proxy-prefork]=http://127.0.0.1:$p_proxy_prefork/ [proxy-threaded]=http://127.0.0.1:$p_proxy_threaded/ [direct]=http://127.0.0.1:$p_direct/)
for n in "${names[@]}"; do wait_up "${url[$n]}" || { cat "$work"/*.log; exit 1; }; done

# workers PID: the live children of PID.
workers() { local p; for p in /proc/[0-9]*; do
  awk -v want="$1" '{ sub(/^.*\) /, ""); if ($1 != "Z" && $2 == want) { n = split(FILENAME, f, "/"); print f[3] } }' "$p/stat" 2>/dev/null
done; }
declare -A seen
# ticks NAME: CPU time (clock ticks) used so far by NAME's server: the
# process, its live workers, and the workers it has reaped. "direct" is
# nginx's own path: nothing of ours runs, so 0.
hz=$(getconf CLK_TCK)
ticks() {
  local p=${pid[$1]:-} t=0 w
  [ -n "$p" ] || { echo 0; return; }
  for w in $p $(workers "$p"); do
    t=$((t + $(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$w/stat" 2>/dev/null || echo 0)))
  done
  t=$((t + $(awk '{sub(/^.*\) /, ""); print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  echo "$t"
}
# num FILE KEY: the number after KEY: in a /proc status file, or 0.
num() { local v; v=$(awk -v k="$2:" '$1==k {print $2}' "$1" 2>/dev/null | head -1); echo "${v:-0}"; }
# sample NAME: one line on NAME's supervisor and its workers (never fails:
# a worker may exit while it is read).
sample() {
  local sup=${pid[$1]} w ws fds=0 thr=0 rss=0 started=0 k
  ws=$(workers "$sup")
  for w in $ws; do
    seen[$1:$w]=1
    fds=$((fds + $(ls "/proc/$w/fd" 2>/dev/null | wc -l)))
    thr=$((thr + $(num "/proc/$w/status" Threads)))
    rss=$((rss + $(num "/proc/$w/status" VmRSS)))
  done
  for k in "${!seen[@]}"; do if [[ $k == "$1:"* ]]; then started=$((started + 1)); fi; done
  echo "  $1: $(echo $ws | wc -w) workers, $started started so far, fds $fds, threads $thr, RSS $((rss / 1024)) MiB" \
    "(supervisor: fds $(ls /proc/$sup/fd 2>/dev/null | wc -l), RSS $(($(num /proc/$sup/status VmRSS) / 1024)) MiB)"
}
sample info-prefork; sample proxy-prefork

: > "$work/r"
for r in $(seq 1 "$rounds"); do
  order=("${names[@]}")
  # Every other round in reverse, so that a drift of the machine's load
  # during a round favours neither side.
  if (( r % 2 == 0 )); then order=(direct proxy-threaded proxy-prefork info-threaded info-prefork); fi
  for n in "${order[@]}"; do
    c0=$(ticks "$n")
    wrk -t2 -c32 -d"${secs}s" "${url[$n]}" > "$work/out"
    c1=$(ticks "$n")
    v=$(awk '/Requests\/sec/ {print $2}' "$work/out")
    us=$(awk -v c=$((c1 - c0)) -v hz="$hz" '/requests in/ {printf "%.0f", c / hz * 1e6 / $1}' "$work/out")
    echo "$r $n $v $us" >> "$work/r"; echo "round $r $n $v req/s, ${us} us CPU per request"
    if [[ $n == *-prefork ]]; then sample "$n"; fi
  done
  echo "round $r prefork/threaded: info page $(awk -v r=$r '$1==r && $2=="info-prefork" {a=$3} $1==r && $2=="info-threaded" {b=$3} END {printf "%.2f", a/b}' "$work/r")," \
    "app proxy $(awk -v r=$r '$1==r && $2=="proxy-prefork" {a=$3} $1==r && $2=="proxy-threaded" {b=$3} END {printf "%.2f", a/b}' "$work/r")"
done
med() { awk -v t="$1" -v c="${2:-3}" '$2==t {print $c}' "$work/r" | median; }
# ratios A/B of each round, then their median: the load of the machine
# changes between rounds, much less within one.
rmed() { awk -v a="$1" -v b="$2" '$2==a {x[$1]=$3} $2==b {y[$1]=$3} END {for (r in x) printf "%.3f\n", x[r]/y[r]}' "$work/r" | median; }
echo
for n in "${names[@]}"; do printf '%-15s median %s req/s, %s us CPU per request\n' "$n" "$(med "$n")" "$(med "$n" 4)"; done
echo "prefork/threaded, median of the rounds' ratios: info page $(rmed info-prefork info-threaded), app proxy $(rmed proxy-prefork proxy-threaded)"
echo "app proxy/direct, median of the rounds' ratios: prefork $(rmed proxy-prefork direct), threaded $(rmed proxy-threaded direct)"
echo "CPU per request, prefork/threaded (median): info page $(awk -v a="$(med info-prefork 4)" -v b="$(med info-threaded 4)" 'BEGIN {printf "%.2f", a/b}')," \
  "app proxy $(awk -v a="$(med proxy-prefork 4)" -v b="$(med proxy-threaded 4)" 'BEGIN {printf "%.2f", a/b}')"
echo "warnings and errors logged by the servers:"
grep -h -E 'level=(WARN|ERROR)' "$work"/*.log | sed 's/^/  /' | head -20 || true
