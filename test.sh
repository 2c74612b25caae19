#!/usr/bin/env bash
# The full test suite: formatting, vet, every test (with the race detector)
# against the real web servers, and a short run of every fuzz target.
set -euo pipefail
cd "$(dirname "$0")"
export PATH=$PATH:/usr/local/go/bin:/usr/sbin
# The tests run against real web servers. As root with apt-get, install the
# missing ones; otherwise the tests that need them skip (in CI they fail).
peers="apache2 libapache2-mod-fcgid apache2-suexec-pristine apache2-dev nginx lighttpd haproxy libfcgi-bin libfcgi-dev php-fpm php-cgi python3-django gunicorn wrk spawn-fcgi caddy"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=
  for p in $peers; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    echo "installing test peers:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    # Packages start their services on install; the tests start their own.
    for s in apache2 nginx lighttpd haproxy caddy php8.2-fpm; do service "$s" stop >/dev/null 2>&1 || true; done
  fi
fi
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted"; exit 1; fi
go vet ./...
go test -race -count=1 -timeout 20m ./...
# Fuzz targets: a fixed number of inputs each (FUZZTIME=50000x by default,
# 2-12 s per target here). A count, not a duration: with a duration, Go
# 1.26's fuzz coordinator can fail a clean run with "context deadline
# exceeded" as the time runs out (golang/go#75804, fixed in Go 1.27).
fuzztime=${FUZZTIME:-50000x}
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "fuzz $pkg $f ($fuzztime)"
    go test -run '^$' -fuzz "^$f\$" -fuzztime "$fuzztime" "$pkg"
  done
done
