# Shared by the benchmark scripts; sourced, not run.

# wait_up URL: until URL answers 2xx (10 s at most).
wait_up() {
  for _ in $(seq 1 200); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "not up: $1" >&2
  return 1
}

# need_packages PKG...: install the Debian packages a benchmark needs that
# are missing (as root, with apt-get; otherwise say which and stop). The
# test suite does not need them, so test.sh does not install them.
need_packages() {
  local p missing=
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "missing packages:$missing (install them, or run as root)" >&2
    exit 1
  fi
  echo "installing:$missing" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  for p in apache2 nginx php8.2-fpm; do service "$p" stop >/dev/null 2>&1 || true; done
}

# free_ports N: N distinct loopback TCP ports that no socket uses now, one
# per line, below the kernel's range for outgoing connections (a listener
# cannot bind a port that a client connection holds), so two runs on one
# machine do not collide. A port could still be taken between this and the
# server's bind; the server then fails to start and the script says so.
free_ports() {
  local n=$1 p lo taken
  lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  taken=" $(ss -Htan | awk '{sub(/.*:/, "", $4); print $4}' | tr '\n' ' ') "
  while [ "$n" -gt 0 ]; do
    p=$((10000 + RANDOM % (lo - 10000)))
    case "$taken" in *" $p "*) continue ;; esac
    taken="$taken$p "
    echo "$p"
    n=$((n - 1))
  done
}

# median: of the numbers on stdin, one per line.
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# nginx_prologue DIR NAME: the start of a throwaway nginx configuration, up
# to and including the opening of the http block: one worker, pid, error
# log and temporary files under DIR (DIR/NAME.pid, DIR/NAME.err,
# DIR/NAME.tmp/). The caller adds upstreams and servers and closes the block.
nginx_prologue() {
  mkdir -p "$1/$2.tmp"
  cat <<CONF
worker_processes 1;
user root;
pid $1/$2.pid;
error_log $1/$2.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $1/$2.tmp; fastcgi_temp_path $1/$2.tmp; proxy_temp_path $1/$2.tmp;
  scgi_temp_path $1/$2.tmp; uwsgi_temp_path $1/$2.tmp;
CONF
}

# apache_prologue DIR MODULE... : the start of a throwaway Apache
# configuration: mpm_event, authz_core and the given modules (mod_NAME.so),
# children as www-data, pid, error log, mutexes and runtime files in DIR
# (DIR/httpd.pid, DIR/httpd.err). The caller adds Listen lines and the rest.
apache_prologue() {
  local dir=$1 m; shift
  echo "ServerRoot $dir"
  for m in mpm_event authz_core "$@"; do
    echo "LoadModule ${m}_module /usr/lib/apache2/modules/mod_${m}.so"
  done
  cat <<CONF
ServerName 127.0.0.1
User www-data
Group www-data
PidFile $dir/httpd.pid
ErrorLog $dir/httpd.err
Mutex file:$dir
DefaultRuntimeDir $dir
CONF
}

# bench_workdir NAME: a fresh work directory in $work (world-readable, for
# the web servers' users), removed on exit after stopping the background
# jobs and every daemon whose pid file ($work/*.pid) is in it.
bench_workdir() {
  work=$(mktemp -d "/tmp/fcgishim-$1.XXXXXX")
  chmod 755 "$work"
  trap bench_cleanup EXIT
}

bench_cleanup() {
  local f pid pids=()
  for f in "$work"/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f") && kill "$pid" 2>/dev/null && pids+=("$pid")
  done
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  for pid in "${pids[@]}"; do # daemons are not our jobs: wait for them by polling
    for _ in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
  done
  rm -rf "$work"
}

export PATH=$PATH:/usr/local/go/bin:/usr/sbin
