#!/usr/bin/env bash
# Protocols and process models side by side in one run, alternating rounds,
# wrk on loopback, the same hello handler (bench/hello) behind each:
#   nginx  -> FastCGI (threaded), SCGI, FastCGI (prefork, runfcgi defaults)
#   Apache -> mod_proxy_fcgi, mod_proxy_ajp
# Usage: bench/protocols.sh [ROUNDS] [SECONDS]   (root: nginx, apache2, wrk)
set -euo pipefail
rounds=${1:-3}
secs=${2:-4}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
bench_workdir proto
(cd "$here/.." && CGO_ENABLED=0 go build -o "$work/hello" ./bench/hello && CGO_ENABLED=0 go build -o "$work/mysite.fcgi" .)
"$work/hello" --listen "unix:$work/fcgi.sock" --protocol fcgi 2>/dev/null &
"$work/hello" --listen "unix:$work/scgi.sock" --protocol scgi 2>/dev/null &
"$work/hello" --listen 127.0.0.1:18111 --protocol fcgi 2>/dev/null &
"$work/hello" --listen 127.0.0.1:18112 --protocol ajp 2>/dev/null &
# prefork with Django's defaults (minspare 2, maxspare 5, maxchildren 50); the info page app
"$work/mysite.fcgi" runfcgi method=prefork socket="$work/prefork.sock" daemonize=false 2>/dev/null &
"$work/mysite.fcgi" runfcgi method=threaded socket="$work/threaded.sock" daemonize=false 2>/dev/null &
{ nginx_prologue "$work" nginx; cat <<CONF
  upstream fcgi { server unix:$work/fcgi.sock; keepalive 32; }
  server { listen 127.0.0.1:18101; location / { include /etc/nginx/fastcgi_params; fastcgi_pass fcgi; fastcgi_keep_conn on; } }
  server { listen 127.0.0.1:18102; location / { include /etc/nginx/scgi_params; scgi_pass unix:$work/scgi.sock; } }
  server { listen 127.0.0.1:18103; location / { include /etc/nginx/fastcgi_params; fastcgi_pass unix:$work/prefork.sock; } }
  server { listen 127.0.0.1:18104; location / { include /etc/nginx/fastcgi_params; fastcgi_pass unix:$work/threaded.sock; } }
}
CONF
} > "$work/nginx.conf"
{ apache_prologue "$work" proxy proxy_fcgi proxy_ajp; cat <<CONF
Listen 127.0.0.1:18105
Listen 127.0.0.1:18106
<VirtualHost 127.0.0.1:18105>
  ProxyPass / fcgi://127.0.0.1:18111/ enablereuse=on
</VirtualHost>
<VirtualHost 127.0.0.1:18106>
  ProxyPass / ajp://127.0.0.1:18112/
</VirtualHost>
CONF
} > "$work/httpd.conf"
nginx -c "$work/nginx.conf"
apache2 -f "$work/httpd.conf" -k start
names=(nginx-fcgi nginx-scgi nginx-fcgi-prefork nginx-fcgi-threaded apache-proxy-fcgi apache-proxy-ajp)
urls=(http://127.0.0.1:18101/ http://127.0.0.1:18102/ http://127.0.0.1:18103/ http://127.0.0.1:18104/ http://127.0.0.1:18105/ http://127.0.0.1:18106/)
for u in "${urls[@]}"; do wait_up "$u"; done
: > "$work/r"
for r in $(seq 1 "$rounds"); do
  for i in "${!names[@]}"; do
    v=$(wrk -t2 -c32 -d"${secs}s" "${urls[$i]}" | awk '/Requests\/sec/ {print $2}')
    echo "${names[$i]} $v" >> "$work/r"; echo "round $r ${names[$i]} $v req/s"
  done
done
echo
for n in "${names[@]}"; do printf '%-22s median %s req/s\n' "$n" "$(awk -v t=$n '$1==t {print $2}' "$work/r" | median)"; done
echo "(prefork and threaded serve the info page; the others the hello handler)"
