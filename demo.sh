#!/usr/bin/env bash
# The main job, on this machine: build mysite.fcgi, drop it into a
# public_html/mysite/ with the shared-hosting .htaccess, and serve it with a
# real Apache + mod_fcgid on http://127.0.0.1:8080/mysite/ — as a shared host
# would. Without Apache (and not root to install it), it falls back to the
# local preview on http://127.0.0.1:8000/. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")"
export PATH=$PATH:/usr/local/go/bin:/usr/sbin
if ! command -v apache2 >/dev/null || [ ! -f /usr/lib/apache2/modules/mod_fcgid.so ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq apache2 libapache2-mod-fcgid >/dev/null
    service apache2 stop >/dev/null 2>&1 || true
  fi
fi
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o mysite.fcgi .
if ! command -v apache2 >/dev/null || [ "$(id -u)" != 0 ]; then
  echo "No Apache here (or not root): local preview on http://127.0.0.1:8000/"
  exec ./mysite.fcgi serve --http 127.0.0.1:8000
fi
site=$(mktemp -d /tmp/fcgishim-demo.XXXXXX); chmod 755 "$site"
mkdir -p "$site/public_html/mysite"
./mysite.fcgi install "$site/public_html/mysite" >/dev/null 2>&1 || {
  cp mysite.fcgi "$site/public_html/mysite/mysite.fcgi"
  cat > "$site/public_html/mysite/.htaccess" <<'HT'
AddHandler fcgid-script .fcgi
RewriteEngine On
RewriteCond %{REQUEST_FILENAME} !-f
RewriteRule ^(.*)$ mysite.fcgi/$1 [QSA,L]
HT
}
chmod -R a+rX "$site"
cat > "$site/httpd.conf" <<CONF
ServerRoot $site
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule mime_module /usr/lib/apache2/modules/mod_mime.so
LoadModule dir_module /usr/lib/apache2/modules/mod_dir.so
LoadModule rewrite_module /usr/lib/apache2/modules/mod_rewrite.so
LoadModule fcgid_module /usr/lib/apache2/modules/mod_fcgid.so
Listen 127.0.0.1:8080
ServerName 127.0.0.1
User www-data
Group www-data
PidFile $site/httpd.pid
ErrorLog /dev/stderr
Mutex file:$site
DefaultRuntimeDir $site
TypesConfig /etc/mime.types
FcgidIPCDir $site/fcgid
FcgidProcessTableFile $site/fcgid_shm
DocumentRoot $site/public_html
<Directory $site/public_html>
  Options +ExecCGI +FollowSymLinks
  AllowOverride All
  Require all granted
</Directory>
CONF
echo "Serving $site/public_html/mysite/ with Apache + mod_fcgid:"
echo "  open   http://127.0.0.1:8080/mysite/            (the info page)"
echo "  JSON   curl -H 'Accept: application/json' http://127.0.0.1:8080/mysite/some/path"
echo "  touch  $site/public_html/mysite/mysite.fcgi      (restarts it; watch 'started')"
exec apache2 -f "$site/httpd.conf" -DFOREGROUND
