#!/usr/bin/env bash
# End-to-end benchmark, one run, alternating rounds, wrk on loopback:
#   A. nginx -> mysite.fcgi (FastCGI, unix socket, keep-conn)  vs  nginx -> php-fpm hello.php (pm=static, 2 children)
#   B. Apache + mod_fcgid spawning mysite.fcgi on fd 0          vs  Apache + mod_fcgid spawning php-cgi hello.php
# Both sides serve a hello-world; ours is the built-in "hello" handler of the
# bench binary (bench/hello), so nothing but the FastCGI path is measured.
# Prints req/s per round, the medians and the ratio ours/php per path.
# Usage: bench/e2e.sh [ROUNDS] [SECONDS]   (needs root: nginx, php-fpm, apache2, wrk)
set -euo pipefail
rounds=${1:-5}
secs=${2:-5}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
bench_workdir bench

(cd "$here/.." && CGO_ENABLED=0 go build -o "$work/hello.fcgi" ./bench/hello)
printf '<?php echo "Hello, world!";\n' > "$work/hello.php"
chmod 644 "$work/hello.php"; chmod 755 "$work/hello.fcgi"

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
    listen 127.0.0.1:18081;
    location / { include /etc/nginx/fastcgi_params; fastcgi_pass ours; fastcgi_keep_conn on; }
  }
  server {
    listen 127.0.0.1:18082;
    location / { include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_FILENAME $work/hello.php; fastcgi_pass php; }
  }
}
CONF
} > "$work/nginx.conf"
nginx -c "$work/nginx.conf"

# --- Apache + mod_fcgid: /ours/ spawns hello.fcgi, /php/ spawns php-cgi
mkdir -p "$work/docroot/ours" "$work/docroot/php"
cp "$work/hello.fcgi" "$work/docroot/ours/hello.fcgi"
cp "$work/hello.php" "$work/docroot/php/hello.php"
echo ok > "$work/docroot/index.html"
chmod -R a+rX "$work/docroot"
{ apache_prologue "$work" mime fcgid; cat <<CONF
Listen 127.0.0.1:18083
TypesConfig /etc/mime.types
FcgidIPCDir $work/fcgid
FcgidProcessTableFile $work/fcgid_shm
FcgidMaxProcessesPerClass 8
FcgidMaxRequestsPerProcess 0
DocumentRoot $work/docroot
<Directory $work/docroot>
  Options +ExecCGI
  Require all granted
</Directory>
<Directory $work/docroot/ours>
  SetHandler fcgid-script
</Directory>
<Directory $work/docroot/php>
  AddHandler fcgid-script .php
  FcgidWrapper /usr/bin/php-cgi .php
</Directory>
CONF
} > "$work/httpd.conf"
apache2 -f "$work/httpd.conf" -k start || { cat "$work/httpd.err"; exit 1; }

wait_up http://127.0.0.1:18081/
wait_up http://127.0.0.1:18082/
wait_up http://127.0.0.1:18083/ours/hello.fcgi
wait_up http://127.0.0.1:18083/php/hello.php
for u in http://127.0.0.1:18081/ http://127.0.0.1:18082/ http://127.0.0.1:18083/ours/hello.fcgi http://127.0.0.1:18083/php/hello.php; do
  [ "$(curl -fsS "$u")" = "Hello, world!" ] || { echo "wrong body from $u"; exit 1; }
done

rps() { wrk -t2 -c32 -d"${secs}s" "$1" | awk '/Requests\/sec/ {print $2}'; }
: > "$work/r"
for r in $(seq 1 "$rounds"); do
  for t in nginx-ours nginx-php apache-ours apache-php; do
    case $t in
      nginx-ours) u=http://127.0.0.1:18081/ ;;
      nginx-php) u=http://127.0.0.1:18082/ ;;
      apache-ours) u=http://127.0.0.1:18083/ours/hello.fcgi ;;
      apache-php) u=http://127.0.0.1:18083/php/hello.php ;;
    esac
    v=$(rps "$u"); echo "$t $v" >> "$work/r"; echo "round $r $t $v req/s"
  done
done
echo
for t in nginx-ours nginx-php apache-ours apache-php; do
  printf '%-12s median %s req/s\n' "$t" "$(awk -v t=$t '$1==t {print $2}' "$work/r" | median)"
done
no=$(awk '$1=="nginx-ours" {print $2}' "$work/r" | median); np=$(awk '$1=="nginx-php" {print $2}' "$work/r" | median)
ao=$(awk '$1=="apache-ours" {print $2}' "$work/r" | median); ap=$(awk '$1=="apache-php" {print $2}' "$work/r" | median)
echo "ratio nginx  ours/php-fpm: $(awk -v a=$no -v b=$np 'BEGIN {printf "%.2f", a/b}')"
echo "ratio apache ours/php-cgi: $(awk -v a=$ao -v b=$ap 'BEGIN {printf "%.2f", a/b}')"

# Cold start: first request to a freshly started Apache + mod_fcgid, ours vs php-cgi.
apache2 -f "$work/httpd.conf" -k stop; while [ -f "$work/httpd.pid" ]; do sleep 0.05; done
apache2 -f "$work/httpd.conf" -k start || { cat "$work/httpd.err"; exit 1; }
wait_up http://127.0.0.1:18083/index.html
for t in ours php; do
  u=http://127.0.0.1:18083/ours/hello.fcgi; [ $t = php ] && u=http://127.0.0.1:18083/php/hello.php
  echo "cold start $t: $(curl -s -o /dev/null -w '%{time_total}' "$u") s"
done
pid=$(pgrep -f "$work/docroot/ours/hello.fcgi" | head -1 || true)
[ -n "$pid" ] && echo "idle RSS of a mod_fcgid-spawned hello.fcgi: $(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)"
pid=$(pgrep -f "php-cgi" | head -1 || true)
[ -n "$pid" ] && echo "idle RSS of a mod_fcgid-spawned php-cgi: $(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)"
