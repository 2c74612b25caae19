#!/usr/bin/env bash
# A Django site in public_html, ours against the recipe of Django's old
# FastCGI guide, in one run with alternating rounds. The same generated
# Django project (Debian's python3-django, DEBUG off) behind the same
# Apache + mod_fcgid (event MPM, FcgidMaxProcessesPerClass 8,
# FcgidMaxRequestsPerProcess 0), wrk -t2 -c8 on loopback:
#   recipe: mysite.fcgi is the guide's Python script, flup's threaded
#           WSGIServer around get_wsgi_application() (flup from
#           ../shared/peers/flup, or $FLUP_DIR; skipped when absent)
#   ours:   mysite.fcgi is our binary, [app] wsgi = "mysite.wsgi" (the
#           built-in WSGI runner) or [app] command = gunicorn on a unix
#           socket (one site per entry of $DJANGO_APPS, so app servers and
#           their settings can be compared in the same run)
# Pages: /hello/ (a one-line view) and /admin/login/ (Django's template-heavy
# admin login form). After each round: the resident memory of all the
# site's processes (every process started for it and their descendants:
# the mysite.fcgi copies, our supervisor, gunicorn's master and workers),
# VmRSS summed from /proc, and PSS (shared pages divided among sharers).
# And the CPU time per request of each program on the machine during the
# round (utime+stime from /proc/PID/stat summed by program name, over the
# requests wrk made; "idle" is the CPUs' idle time), which shows where the
# time goes: mysite.fcgi is the flup script on the recipe's side and our
# binary on ours, python3 the WSGI runner, gunicorn gunicorn.
# Prints the configuration, every round, the medians and the ratios; the
# output is also kept in bench/results/django-<UTC time>.txt.
#
# Apache (so every site process) and wrk run at nice -10: on a machine
# shared with other jobs, both sides then get the CPU as on an idle one
# (otherwise the side with more processes gets more of a loaded machine).
# Usage: bench/django.sh [ROUNDS] [SECONDS]   (root: Apache runs the sites as www-data)
# DJANGO_APPS: "name=gunicorn args;name2=args…" (after --bind unix:{socket},
# before mysite.wsgi), or "name=WSGI" / "name=WSGI N" for the built-in
# runner (with N workers; default one per CPU); default: the runner as the
# README recommends it, and the README's gunicorn command (gthread, one
# worker per CPU, 4 threads, keep-alive longer than our 30 s idle pool,
# --proxy-protocol with [app] proxy_protocol so Django sees the visitor's
# address). gunicorn's documented starting point, (2 x CPUs) + 1 sync
# workers, is one entry away: "sync=--workers 5 --proxy-protocol".
set -euo pipefail
rounds=${1:-5}
secs=${2:-5}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
need_packages apache2 libapache2-mod-fcgid python3-django gunicorn wrk curl
read -r port_apache <<< "$(free_ports 1 | tr '\n' ' ')"
flup=${FLUP_DIR:-$here/../../shared/peers/flup}
if [ ! -d "$flup/flup/server" ]; then
  echo "SKIP: flup not found at $flup (set FLUP_DIR to the directory holding flup/): the recipe side cannot run"
  exit 0
fi
flup=$(cd "$flup" && pwd)
for p in /usr/bin/python3 django-admin gunicorn apache2 wrk; do
  command -v "$p" >/dev/null || { echo "SKIP: $p not installed"; exit 0; }
done
cpus=$(nproc)
apps=${DJANGO_APPS:-"wsgi=WSGI;gthread=--worker-class gthread --workers $cpus --threads 4 --keep-alive 60 --proxy-protocol"}

main() {
bench_workdir django

# --- the Django project: a one-line view, the admin's login page
project=$work/project
mkdir -p "$project"
django-admin startproject mysite "$project"
cat >> "$project/mysite/settings.py" <<'PY'

DEBUG = False
ALLOWED_HOSTS = ['*']
STATIC_URL = 'static/'
PY
cat > "$project/mysite/views.py" <<'PY'
from django.http import HttpResponse


def hello(request):
    return HttpResponse("Hello, world!")
PY
cat >> "$project/mysite/urls.py" <<'PY'

from mysite.views import hello  # noqa: E402

urlpatterns += [path('hello/', hello)]
PY
(cd "$project" && /usr/bin/python3 manage.py migrate --noinput >/dev/null)

# --- the sites under one docroot: /recipe/ and /ours-NAME/
docroot=$work/docroot
mkdir -p "$docroot/recipe" "$work/run"
cat > "$docroot/recipe/mysite.fcgi" <<PY
#!/usr/bin/python3
import os, sys
sys.path.insert(0, "$flup")
sys.path.insert(0, "$project")
os.chdir("$project")
os.environ["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
from django.core.wsgi import get_wsgi_application
from flup.server.fcgi import WSGIServer      # threaded, as runfastcgi(method="threaded")
WSGIServer(get_wsgi_application()).run()
PY
(cd "$here/.." && CGO_ENABLED=0 go build -o "$work/mysite.fcgi" .)
names=()
IFS=';' read -ra entries <<< "$apps"
for e in "${entries[@]}"; do
  name=${e%%=*}; args=${e#*=}
  names+=("$name")
  mkdir -p "$docroot/ours-$name"
  cp "$work/mysite.fcgi" "$docroot/ours-$name/mysite.fcgi"
  if [ "${args%% *}" = WSGI ]; then
    workers=0
    [ "$args" != WSGI ] && workers=${args#WSGI }
    cat > "$docroot/ours-$name/mysite.toml" <<TOML
[app]
wsgi = "mysite.wsgi"
python = "/usr/bin/python3"
workers = $workers
workdir = "$project"
runtime_dir = "$work/run/$name"
idle_stop = "1s"   # only so that the run ends promptly
TOML
    continue
  fi
  cmd='"gunicorn", "--bind", "unix:{socket}"'
  for a in $args; do cmd+=", \"$a\""; done
  cmd+=', "mysite.wsgi"'
  # gunicorn's --proxy-protocol goes with ours: the app then sees the
  # visitor's address, as the README's command has it.
  pp=false
  case " $args " in *" --proxy-protocol "*) pp=true ;; esac
  cat > "$docroot/ours-$name/mysite.toml" <<TOML
[app]
command = [$cmd]
proxy_protocol = $pp
workdir = "$project"
runtime_dir = "$work/run/$name"
idle_stop = "1s"   # only so that the run ends promptly
TOML
done
chmod -R a+rX "$docroot" "$work/mysite.fcgi"
chmod 755 "$docroot"/*/mysite.fcgi
chown -R www-data:www-data "$project" "$work/run"

{ apache_prologue "$work" fcgid; cat <<CONF
Listen 127.0.0.1:$port_apache
FcgidIPCDir $work/fcgid
FcgidProcessTableFile $work/fcgid_shm
FcgidMaxProcessesPerClass 8
FcgidMaxRequestsPerProcess 0
FcgidIOTimeout 60
DocumentRoot $docroot
<Directory $docroot>
  Options +ExecCGI
  SetHandler fcgid-script
  Require all granted
</Directory>
CONF
} > "$work/httpd.conf"

sides=(recipe); for n in "${names[@]}"; do sides+=("ours-$n"); done
echo "== configuration"
echo "Apache $(apache2 -v | awk -F/ '/version/ {print $2}') event MPM + mod_fcgid: FcgidMaxProcessesPerClass 8, FcgidMaxRequestsPerProcess 0"
echo "Django $(/usr/bin/python3 -c 'import django; print(django.get_version())'), DEBUG = False, sqlite; gunicorn $(gunicorn --version 2>&1 | awk '{print $NF}' | tr -d ')'); $(nproc) CPUs; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk -t2 -c8 -d${secs}s, $rounds rounds, sides alternating; Apache and wrk at nice -10"
echo "recipe mysite.fcgi:"; sed 's/^/    /' "$docroot/recipe/mysite.fcgi"
for n in "${names[@]}"; do echo "ours-$n mysite.toml:"; sed 's/^/    /' "$docroot/ours-$n/mysite.toml"; done
echo

# site_pids SIDE: every process whose command line names the side's
# directory, and their descendants.
site_pids() {
  ps -e -o pid=,ppid=,args= | awk -v pat="$docroot/$1/" '
    { pid[NR]=$1; ppid[NR]=$2; if (index($0, pat) && $3 !~ /awk$/) in_[$1]=1 }
    END { do { ch=0; for (i=1;i<=NR;i++) if (!(pid[i] in in_) && (ppid[i] in in_)) { in_[pid[i]]=1; ch=1 } } while (ch)
          for (p in in_) print p }'
}
# stop_sites: Apache, then every process of the sites (SIGTERM after 20 s).
stop_sites() {
  local s p left
  [ -f "$work/httpd.pid" ] && apache2 -f "$work/httpd.conf" -k stop 2>/dev/null
  for _ in $(seq 1 200); do
    left=$(for s in "${sides[@]}"; do site_pids "$s"; done)
    [ -z "$left" ] && return 0
    sleep 0.1
  done
  for p in $left; do kill "$p" 2>/dev/null || true; done
}
trap 'stop_sites; bench_cleanup' EXIT
nice -n -10 apache2 -f "$work/httpd.conf" -k start || { cat "$work/httpd.err"; exit 1; }

# up URL WANT: until URL answers with a body containing WANT (60 s: the
# first request starts gunicorn).
up() {
  local b
  for _ in $(seq 1 600); do
    b=$(curl -fsS --max-time 30 "$1" 2>/dev/null) && [[ $b == *"$2"* ]] && return 0
    sleep 0.1
  done
  echo "not up: $1" >&2; tail -20 "$work/httpd.err" >&2; return 1
}
for s in "${sides[@]}"; do
  up "http://127.0.0.1:$port_apache/$s/mysite.fcgi/hello/" "Hello, world!"
  up "http://127.0.0.1:$port_apache/$s/mysite.fcgi/admin/login/" csrfmiddlewaretoken
done

# site_mem SIDE: "processes VmRSS-KiB PSS-KiB" of the side's processes.
site_mem() {
  local p rss pss n=0 trss=0 tpss=0
  for p in $(site_pids "$1"); do
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null) || continue
    pss=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null) || continue
    [ -n "$rss" ] || continue
    n=$((n+1)); trss=$((trss+rss)); tpss=$((tpss+${pss:-0}))
  done
  echo "$n $trss $tpss"
}
mib() { awk -v k="$1" 'BEGIN {printf "%.0f", k/1024}'; }

# cpu_snap: "program ticks" for every program running (utime+stime of all
# its processes), and "idle ticks" of the machine.
cpu_snap() {
  cat /proc/[0-9]*/stat 2>/dev/null | awk '{
    c = $0; sub(/^[0-9]+ \(/, "", c); sub(/\) [A-Z] .*/, "", c); gsub(/[ \/:]/, "_", c)
    r = $0; sub(/.*\) /, "", r); split(r, f, " "); t[c] += f[12] + f[13] }
    END { for (c in t) print c, t[c] }'
  awk '/^cpu / {print "idle", $5 + $6}' /proc/stat
}
# cpu_per_req BEFORE AFTER REQUESTS: microseconds of CPU per request for the
# programs of the path, the rest together, and idle.
cpu_per_req() {
  join -a2 -e0 -o 0,1.2,2.2 <(sort "$1") <(sort "$2") | awk -v n="$3" -v hz="$(getconf CLK_TCK)" '
    { d = ($3 - $2) / hz / n * 1e6; if (d <= 0) next
      if ($1 ~ /^(apache2|mysite.fcgi|python3|gunicorn|wrk|idle)$/) v[$1] = d; else other += d }
    END { printf "apache2 %.0f, mysite.fcgi %.0f, python3 %.0f, gunicorn %.0f, wrk %.0f, other %.0f, idle %.0f",
          v["apache2"], v["mysite.fcgi"], v["python3"], v["gunicorn"], v["wrk"], other, v["idle"] }'
}

# Warm-up: mod_fcgid spawns up to 8 copies of each, Django loads lazily.
for s in "${sides[@]}"; do
  for page in hello admin/login; do nice -n -10 wrk -t2 -c8 -d2s "http://127.0.0.1:$port_apache/$s/mysite.fcgi/$page/" >/dev/null; done
done

: > "$work/r"
for r in $(seq 1 "$rounds"); do
  for page in hello admin/login; do
    for s in "${sides[@]}"; do
      cpu_snap > "$work/cpu0"
      nice -n -10 wrk -t2 -c8 -d"${secs}s" --latency "http://127.0.0.1:$port_apache/$s/mysite.fcgi/$page/" > "$work/wrk"
      cpu_snap > "$work/cpu1"
      rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk")
      p50=$(awk '$1=="50%" {print $2}' "$work/wrk"); p99=$(awk '$1=="99%" {print $2}' "$work/wrk")
      errs=$(awk '/Non-2xx|Socket errors/' "$work/wrk" | tr '\n' ' ')
      read -r n rss pss < <(site_mem "$s")
      echo "$page $s $rps $rss $pss" >> "$work/r"
      printf 'round %d %-12s %-14s %9s req/s  p50 %-8s p99 %-8s  %2d processes, RSS %4s MiB, PSS %4s MiB %s\n' \
        "$r" "$page" "$s" "$rps" "$p50" "$p99" "$n" "$(mib "$rss")" "$(mib "$pss")" "$errs"
      echo "        CPU us/request: $(cpu_per_req "$work/cpu0" "$work/cpu1" "$(awk '/requests in/ {print $1}' "$work/wrk")")"
    done
  done
done

echo
col() { awk -v p="$1" -v s="$2" -v c="$3" '$1==p && $2==s {print $c}' "$work/r"; }
for page in hello admin/login; do
  base=$(col "$page" recipe 3 | median)
  for s in "${sides[@]}"; do
    m=$(col "$page" "$s" 3 | median)
    printf '%-12s %-14s median %9s req/s  ratio to recipe %s\n' "$page" "$s" "$m" "$(awk -v a="$m" -v b="$base" 'BEGIN {printf "%.2f", a/b}')"
  done
done
for s in "${sides[@]}"; do
  printf 'memory %-14s RSS max %4s MiB (median %4s), PSS max %4s MiB\n' "$s" \
    "$(mib "$(awk -v s="$s" '$2==s {print $4}' "$work/r" | sort -n | tail -1)")" \
    "$(mib "$(awk -v s="$s" '$2==s {print $4}' "$work/r" | median)")" \
    "$(mib "$(awk -v s="$s" '$2==s {print $5}' "$work/r" | sort -n | tail -1)")"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); raw output: $out"
}

mkdir -p "$here/results"
out="$here/results/django-$(date -u +%Y%m%dT%H%M%SZ).txt"
main 2>&1 | tee "$out"
exit "${PIPESTATUS[0]}"
