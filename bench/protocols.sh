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
need_packages nginx apache2 wrk curl
read -r p_hello_fcgi p_hello_ajp p_nginx_fcgi p_nginx_scgi p_nginx_prefork p_nginx_threaded p_apache_fcgi p_apache_ajp <<< "$(free_ports 8 | tr '\n' ' ')"
bench_workdir proto
(cd "$here/.." && CGO_ENABLED=0 go build -o "$work/hello" ./bench/hello && CGO_ENABLED=0 go build -o "$work/mysite.fcgi" .)
"$work/hello" --listen "unix:$work/fcgi.sock" --protocol fcgi 2>/dev/null &
"$work/hello" --listen "unix:$work/scgi.sock" --protocol scgi 2>/dev/null &
"$work/hello" --listen 127.0.0.1:$p_hello_fcgi --protocol fcgi 2>/dev/null &
"$work/hello" --listen 127.0.0.1:$p_hello_ajp --protocol ajp 2>/dev/null &
# prefork with Django's defaults (minspare 2, maxspare 5, maxchildren 50); the info page app
"$work/mysite.fcgi" runfcgi method=prefork socket="$work/prefork.sock" daemonize=false 2>/dev/null &
"$work/mysite.fcgi" runfcgi method=threaded socket="$work/threaded.sock" daemonize=false 2>/dev/null &
{ nginx_prologue "$work" nginx; cat <<CONF
  upstream fcgi { server unix:$work/fcgi.sock; keepalive 32; }
  server { listen 127.0.0.1:$p_nginx_fcgi; location / { include /etc/nginx/fastcgi_params; fastcgi_pass fcgi; fastcgi_keep_conn on; } }
  server { listen 127.0.0.1:$p_nginx_scgi; location / { include /etc/nginx/scgi_params; scgi_pass unix:$work/scgi.sock; } }
  server { listen 127.0.0.1:$p_nginx_prefork; location / { include /etc/nginx/fastcgi_params; fastcgi_pass unix:$work/prefork.sock; } }
  server { listen 127.0.0.1:$p_nginx_threaded; location / { include /etc/nginx/fastcgi_params; fastcgi_pass unix:$work/threaded.sock; } }
}
CONF
} > "$work/nginx.conf"
{ apache_prologue "$work" proxy proxy_fcgi proxy_ajp; cat <<CONF
Listen 127.0.0.1:$p_apache_fcgi
Listen 127.0.0.1:$p_apache_ajp
<VirtualHost 127.0.0.1:$p_apache_fcgi>
  ProxyPass / fcgi://127.0.0.1:$p_hello_fcgi/ enablereuse=on
</VirtualHost>
<VirtualHost 127.0.0.1:$p_apache_ajp>
  ProxyPass / ajp://127.0.0.1:$p_hello_ajp/
</VirtualHost>
CONF
} > "$work/httpd.conf"
nginx -c "$work/nginx.conf"
apache2 -f "$work/httpd.conf" -k start
names=(nginx-fcgi nginx-scgi nginx-fcgi-prefork nginx-fcgi-threaded apache-proxy-fcgi apache-proxy-ajp)
urls=(http://127.0.0.1:$p_nginx_fcgi/ http://127.0.0.1:$p_nginx_scgi/ http://127.0.0.1:$p_nginx_prefork/ http://127.0.0.1:$p_nginx_threaded/ http://127.0.0.1:$p_apache_fcgi/ http://127.0.0.1:$p_apache_ajp/)
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
