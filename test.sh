#!/usr/bin/env bash
# The full test suite: formatting, vet, every test (with the race detector)
# against the real web servers, and a short run of every fuzz target.
set -euo pipefail
cd "$(dirname "$0")"
export PATH=$PATH:/usr/local/go/bin:/usr/sbin
# The tests run against real web servers. As root with apt-get, install the
# missing ones; otherwise the tests that need them skip (in CI they fail).
peers="apache2 libapache2-mod-fcgid apache2-suexec-pristine apache2-dev nginx lighttpd haproxy libfcgi-bin libfcgi-dev php-fpm php-cgi python3-django gunicorn wrk spawn-fcgi caddy systemd"
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
# -v so that skips are visible; the progress lines of passing tests are
# filtered out, everything else (failures, logs, package results) is shown.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
go test -race -count=1 -timeout 20m -v ./... >"$log" 2>&1 || status=$?
grep -vE '^ *(=== (RUN|PAUSE|CONT|NAME)|--- PASS)' "$log" || true
# Every skip with its reason. Under CI=true a skip is a failure (a peer the
# tests need is missing, or a case is not run), except a fuzz seed that a
# target itself rejects as out of scope.
skips=$(awk '/^ *--- SKIP/ {print; s=1; next} s && /^    / && !/--- (PASS|FAIL)/ {print; next} {s=0}' "$log")
if [ -n "$skips" ]; then
  echo "skipped:"
  echo "$skips"
  if [ "${CI:-}" = true ] && echo "$skips" | grep -E -- '--- SKIP' | grep -vqE -- '--- SKIP: Fuzz[^ ]*/'; then
    echo "tests were skipped under CI=true"
    status=1
  fi
fi
# Allocation counts hold only without the race detector, which allocates
# on its own: the tests that pin them are built with !race and run here.
go test -count=1 -run 'Allocs' ./fcgi || status=1
[ "$status" = 0 ] || exit "$status"
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
