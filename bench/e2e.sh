#!/usr/bin/env bash
# End-to-end benchmark, one run, alternating rounds, wrk on loopback.
#   A. nginx -> ours as an external FastCGI server (unix socket, keep-conn)
#      vs nginx -> php-fpm hello.php (pm = static, 2 children)
#   B. Apache (event MPM) + mod_fcgid spawning each program on fd 0:
#        fcgid-ours  bench/hello (our fcgi.Server behind the shim)
#        fcgid-ping  mysite.fcgi itself, answering its [server] ping_path
#        fcgid-php   php-cgi hello.php, PHP_FCGI_MAX_REQUESTS=0 as mod_fcgid's
#                    documentation says (php-cgi never exits on its own;
#                    mod_fcgid's FcgidMaxRequestsPerProcess is 0 as well)
#        fcgid-tuned bench/hello again (or the binary TUNED_BIN, e.g. an older
#                    build), with TUNED_ENV (default GOMAXPROCS=1; "-" for none)
#                    in its environment: an A/B in the same run (only when named
#                    in TARGETS)
#        fcgid-c     a C program on libfcgi: while (FCGI_Accept() >= 0) printf(...)
#                    (the ceiling of what Apache + mod_fcgid can deliver here)
# Each round runs every target once, in turn; the medians and ratios follow,
# then cold start (median of COLD fresh Apache starts) and idle RSS.
# Every target answers a hello-world; the script checks the bodies first.
#
# Usage: bench/e2e.sh [ROUNDS] [SECONDS]
# Environment: CONNS_NGINX (32), CONNS_FCGID (8), PROCS (16, mod_fcgid's
# FcgidMaxProcessesPerClass), COLD (5), TARGETS (a subset of the names
# above, for a quicker run), PROFILE=1 adds system calls per
# request (strace -c -f) and context switches / CPU per request (perf stat)
# of the spawned programs under mod_fcgid, OURS_ENV="K=V ..." sets
# environment variables (e.g. GOMAXPROCS=1) for our two programs only
# (FcgidCmdOptions ... InitialEnv).
# Needs root (nginx, php-fpm, apache2 as www-data), wrk, cc, libfcgi-dev.
set -euo pipefail
rounds=${1:-5}
secs=${2:-5}
conns_nginx=${CONNS_NGINX:-32}
conns_fcgid=${CONNS_FCGID:-8}
procs=${PROCS:-16}
cold=${COLD:-5}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
need_packages nginx apache2 libapache2-mod-fcgid php-fpm php-cgi libfcgi-dev gcc wrk curl
read -r port_nginx_ours port_nginx_php port_fcgid <<< "$(free_ports 3 | tr '\n' ' ')"
bench_workdir bench

(cd "$here/.." && CGO_ENABLED=0 go build -o "$work/hello.fcgi" ./bench/hello &&
  CGO_ENABLED=0 go build -o "$work/mysite.fcgi" .)
printf '<?php echo "Hello, world!";\n' > "$work/hello.php"
cat > "$work/hello.c" <<'C'
#include <fcgi_stdio.h>
int main(void) {
  while (FCGI_Accept() >= 0)
    printf("Content-Type: text/plain; charset=utf-8\r\n\r\nHello, world!");
  return 0;
}
C
cc -O2 -o "$work/hello-c.fcgi" "$work/hello.c" -lfcgi
chmod 644 "$work/hello.php"; chmod 755 "$work/hello.fcgi" "$work/mysite.fcgi" "$work/hello-c.fcgi"

# --- php-fpm, pm=static, 2 children
phpfpm=$(ls /usr/sbin/php-fpm* | head -1)
cat > "$work/php-fpm.conf" <<CONF
[global]
pid = $work/php-fpm.pid
error_log = $work/php-fpm.log
daemonize = yes
[www]
user = www-data
group = www-data
listen = $work/php.sock
listen.owner = root
listen.mode = 0666
pm = static
pm.max_children = 2
CONF
$phpfpm -y "$work/php-fpm.conf" -R

# --- ours as an external FastCGI server (threaded)
"$work/hello.fcgi" --listen "unix:$work/ours.sock" --protocol fcgi 2>"$work/ours.log" &

# --- nginx in front of both
{ nginx_prologue "$work" nginx; cat <<CONF
  upstream ours { server unix:$work/ours.sock; keepalive 32; }
  upstream php  { server unix:$work/php.sock; }
  server {
    listen 127.0.0.1:$port_nginx_ours;
    location / { include /etc/nginx/fastcgi_params; fastcgi_pass ours; fastcgi_keep_conn on; }
  }
  server {
    listen 127.0.0.1:$port_nginx_php;
    location / { include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_FILENAME $work/hello.php; fastcgi_pass php; }
  }
}
CONF
} > "$work/nginx.conf"
nginx -c "$work/nginx.conf"

# --- Apache + mod_fcgid: one directory per spawned program
mkdir -p "$work/docroot/ours" "$work/docroot/site" "$work/docroot/php" "$work/docroot/c" "$work/docroot/tuned"
cp "$work/hello.fcgi" "$work/docroot/ours/hello.fcgi"
cp "${TUNED_BIN:-$work/hello.fcgi}" "$work/docroot/tuned/hello.fcgi"
cp "$work/mysite.fcgi" "$work/docroot/site/mysite.fcgi"
printf '[server]\nping_path = "/ping"\n' > "$work/docroot/site/mysite.toml"
cp "$work/hello.php" "$work/docroot/php/hello.php"
cp "$work/hello-c.fcgi" "$work/docroot/c/hello.fcgi"
echo ok > "$work/docroot/index.html"
chmod -R a+rX "$work/docroot"
ours_env=""
for kv in ${OURS_ENV:-}; do ours_env+=" InitialEnv $kv"; done
cmdopts=""
[ -n "$ours_env" ] && cmdopts="FcgidCmdOptions $work/docroot/ours/hello.fcgi$ours_env
FcgidCmdOptions $work/docroot/site/mysite.fcgi$ours_env"
tuned_env=""
for kv in ${TUNED_ENV:-GOMAXPROCS=1}; do [ "$kv" = - ] || tuned_env+=" InitialEnv $kv"; done
{ apache_prologue "$work" mime fcgid; cat <<CONF
Listen 127.0.0.1:$port_fcgid
TypesConfig /etc/mime.types
FcgidIPCDir $work/fcgid
FcgidProcessTableFile $work/fcgid_shm
FcgidMaxProcessesPerClass $procs
FcgidMaxRequestsPerProcess 0
FcgidInitialEnv PHP_FCGI_MAX_REQUESTS 0
DocumentRoot $work/docroot
<Directory $work/docroot>
  Options +ExecCGI
  Require all granted
</Directory>
$cmdopts
${tuned_env:+FcgidCmdOptions $work/docroot/tuned/hello.fcgi$tuned_env}
<Directory $work/docroot/tuned>
  SetHandler fcgid-script
</Directory>
<Directory $work/docroot/ours>
  SetHandler fcgid-script
</Directory>
<Directory $work/docroot/site>
  SetHandler fcgid-script
</Directory>
<Directory $work/docroot/c>
  SetHandler fcgid-script
</Directory>
<Directory $work/docroot/php>
  AddHandler fcgid-script .php
  FcgidWrapper /usr/bin/php-cgi .php
</Directory>
CONF
} > "$work/httpd.conf"
apache2 -f "$work/httpd.conf" -k start || { cat "$work/httpd.err"; exit 1; }

targets=${TARGETS:-nginx-ours nginx-php fcgid-ours fcgid-ping fcgid-php fcgid-c}
url() {
  case $1 in
    nginx-ours) echo http://127.0.0.1:$port_nginx_ours/ ;;
    nginx-php) echo http://127.0.0.1:$port_nginx_php/ ;;
    fcgid-ours) echo http://127.0.0.1:$port_fcgid/ours/hello.fcgi ;;
    fcgid-ping) echo http://127.0.0.1:$port_fcgid/site/mysite.fcgi/ping ;;
    fcgid-php) echo http://127.0.0.1:$port_fcgid/php/hello.php ;;
    fcgid-c) echo http://127.0.0.1:$port_fcgid/c/hello.fcgi ;;
    fcgid-tuned) echo http://127.0.0.1:$port_fcgid/tuned/hello.fcgi ;;
  esac
}
conns() { case $1 in nginx-*) echo "$conns_nginx" ;; *) echo "$conns_fcgid" ;; esac; }
# class T: the command line that identifies target T's spawned copies (pgrep -f)
class() {
  case $1 in
    fcgid-ours) echo "$work/docroot/ours/hello.fcgi" ;;
    fcgid-ping) echo "$work/docroot/site/mysite.fcgi" ;;
    fcgid-php) echo "php-cgi" ;;
    fcgid-c) echo "$work/docroot/c/hello.fcgi" ;;
    fcgid-tuned) echo "$work/docroot/tuned/hello.fcgi" ;;
  esac
}
for t in $targets; do wait_up "$(url $t)"; done
for t in $targets; do
  want="Hello, world!"; [ $t = fcgid-ping ] && want=pong
  [ "$(curl -fsS "$(url $t)")" = "$want" ] || { echo "wrong body from $t ($(url $t))"; exit 1; }
done

echo "== configuration"
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); $(uname -r)"
echo "wrk -t2 -c$conns_nginx -d${secs}s (nginx), wrk -t2 -c$conns_fcgid -d${secs}s (mod_fcgid), $rounds alternating rounds"
echo "$(apache2 -v | head -1), $(dpkg-query -W -f='libapache2-mod-fcgid ${Version}' libapache2-mod-fcgid 2>/dev/null)"
echo "$(nginx -v 2>&1), $(php-cgi -v | head -1 | cut -d'(' -f1), $(dpkg-query -W -f='libfcgi ${Version}' libfcgi-dev 2>/dev/null), $(go version)"
echo "--- httpd.conf (mod_fcgid part)"
sed -n '/^Listen/,$p' "$work/httpd.conf"
echo "--- php-fpm.conf [www]"
sed -n '/^\[www\]/,$p' "$work/php-fpm.conf"
echo "--- hello.c"; cat "$work/hello.c"
echo "--- mysite.toml"; cat "$work/docroot/site/mysite.toml"
echo

# Warm up: let mod_fcgid spawn its copies of every class.
for t in $targets; do wrk -t2 -c"$(conns $t)" -d2s "$(url $t)" > /dev/null; done

rps() { wrk -t2 -c"$(conns $1)" -d"${secs}s" "$(url $1)" | awk '/Requests\/sec/ {print $2}'; }
: > "$work/r"
echo "== rounds (req/s)"
for r in $(seq 1 "$rounds"); do
  for t in $targets; do
    v=$(rps $t); echo "$t $v" >> "$work/r"; echo "round $r $t $v"
  done
done
echo
med() { awk -v t=$1 '$1==t {print $2}' "$work/r" | median; }
rng() { awk -v t=$1 '$1==t {print $2}' "$work/r" | sort -n | awk 'NR==1 {lo=$1} {hi=$1} END {print lo "-" hi}'; }
echo "== medians (range)"
for t in $targets; do printf '%-11s %9s req/s  (%s)\n' $t "$(med $t)" "$(rng $t)"; done
ratio() { awk -v a="$(med $1)" -v b="$(med $2)" 'BEGIN {if (a > 0 && b > 0) printf "%.2f", a/b; else printf "-"}'; }
# per-round ratios show the spread that a loaded machine adds
rratios() {
  paste <(awk -v t=$1 '$1==t {print $2}' "$work/r") <(awk -v t=$2 '$1==t {print $2}' "$work/r") |
    awk '$1 > 0 && $2 > 0 {printf "%s%.2f", (n++?" ":""), $1/$2}'
}
echo "== ratios of medians (per round)"
echo "nginx  ours / php-fpm:    $(ratio nginx-ours nginx-php)  ($(rratios nginx-ours nginx-php))"
echo "fcgid  ours / php-cgi:    $(ratio fcgid-ours fcgid-php)  ($(rratios fcgid-ours fcgid-php))"
echo "fcgid  ping / php-cgi:    $(ratio fcgid-ping fcgid-php)  ($(rratios fcgid-ping fcgid-php))"
echo "fcgid  ours / C libfcgi:  $(ratio fcgid-ours fcgid-c)  ($(rratios fcgid-ours fcgid-c))"
echo "fcgid  ping / C libfcgi:  $(ratio fcgid-ping fcgid-c)  ($(rratios fcgid-ping fcgid-c))"
echo "fcgid  php-cgi / C:       $(ratio fcgid-php fcgid-c)"
echo "fcgid  tuned / ours:      $(ratio fcgid-tuned fcgid-ours)  ($(rratios fcgid-tuned fcgid-ours))"
echo

if [ "${PROFILE:-}" = 1 ]; then
  # Per request, summed over all copies of a class: system calls (strace
  # slows everything down, but the counts per request hold) and, in a
  # separate run, context switches and CPU time (perf stat).
  echo "== profile under mod_fcgid (per request, all copies of the class)"
  for t in $targets; do
    case $t in nginx-*) continue ;; esac
    pids=$(pgrep -f "$(class $t)" | paste -sd, -)
    perf stat -x, -e task-clock,context-switches,cpu-migrations -p "$pids" -o "$work/perf.$t" -- sleep "$secs" 2>/dev/null &
    pp=$!
    req=$(wrk -t2 -c"$(conns $t)" -d"${secs}s" "$(url $t)" | awk '/requests in/ {print $1}')
    wait $pp || true
    awk -F, -v t=$t -v n="$req" '$3=="task-clock" {cpu=$1} $3=="context-switches" {cs=$1} $3=="cpu-migrations" {mig=$1}
      END {printf "%-11s perf:   %.1f us CPU, %.2f context switches, %.2f migrations per request (%d requests, %d copies)\n", t, cpu*1000/n, cs/n, mig/n, n, copies}' \
      copies="$(echo "$pids" | tr , '\n' | wc -l)" "$work/perf.$t"
    strace -c -f -q -o "$work/strace.$t" $(printf -- '-p %s ' ${pids//,/ }) &
    sp=$!; sleep 0.5
    wrk -t2 -c"$(conns $t)" -d"${secs}s" "$(url $t)" > /dev/null
    kill -INT $sp; wait $sp 2>/dev/null || true
    # per accepted connection (successful accepts; one request each under
    # mod_fcgid), failed calls included in the counts: copies
    # spawned after strace attached are not counted, so wrk's total is not
    # the denominator
    awk -v t=$t '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {c[$NF]=$4; tot+=$4; o[++k]=$NF; if (NF == 6) e[$NF]=$5}
      END {n = c["accept"] + c["accept4"] - e["accept"] - e["accept4"]; for (i=1; i<=k; i++) l = l sprintf(" %s %.2f", o[i], c[o[i]]/n);
        printf "%-11s strace: %.2f system calls per request (%d requests traced):%s\n", t, tot/n, n, l}' "$work/strace.$t"
  done
  echo
fi

# Cold start: the first request to a freshly started Apache + mod_fcgid.
echo "== cold start (first request after an Apache start; median of $cold)"
: > "$work/cold"
for i in $(seq 1 "$cold"); do
  apache2 -f "$work/httpd.conf" -k stop; while [ -f "$work/httpd.pid" ]; do sleep 0.05; done
  for _ in $(seq 1 50); do # the port may linger for a moment after the stop
    apache2 -f "$work/httpd.conf" -k start 2>/dev/null && break; sleep 0.1
  done
  wait_up http://127.0.0.1:$port_fcgid/index.html
  for t in fcgid-ours fcgid-ping fcgid-php fcgid-c; do
    echo "$t $(curl -s -o /dev/null -w '%{time_total}' "$(url $t)")" >> "$work/cold"
  done
done
for t in fcgid-ours fcgid-ping fcgid-php fcgid-c; do
  printf '%-11s %s ms  (runs: %s)\n' $t "$(awk -v t=$t '$1==t {print $2*1000}' "$work/cold" | median)" \
    "$(awk -v t=$t '$1==t {printf "%s%.1f", (n++?" ":""), $2*1000}' "$work/cold")"
done
echo "== idle RSS of one spawned copy (after its first request)"
for t in fcgid-ours fcgid-ping fcgid-php fcgid-c; do
  pid=$(pgrep -f "$(class $t)" | head -1 || true)
  [ -n "$pid" ] && printf '%-11s %s, of which anonymous (private) %s\n' $t \
    "$(awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' /proc/$pid/status)" \
    "$(awk '/^Anonymous/ {printf "%.1f MiB", $2/1024}' /proc/$pid/smaps_rollup)"
done
