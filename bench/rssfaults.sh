#!/usr/bin/env bash
# Which code maps each page of the executable into a spawned copy's RSS.
# Every page fault on a file-backed page maps a 64 KiB window around it
# (the kernel's fault-around), so the faults on the executable, each with
# its call chain, say who pulls each window in: runtime start-up, package
# initialisers, itab set-up, stack growth, the first request.
#
#   bench/rssfaults.sh BINARY [PATH_INFO]     e.g. /tmp/mysite.fcgi /ping
#
# Needs perf (linux-perf), python3, and root for page-fault events.
set -euo pipefail
bin=$(realpath "$1"); path=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; [ -n "${KEEP:-}" ] && trap - EXIT && echo "$work"
cat > "$work/wrap" <<W
#!/bin/sh
exec perf record -q -e page-faults -c 1 -d -g -o $work/pf.data -- timeout -s TERM 2 $bin
W
chmod +x "$work/wrap"
(cd "$here/.." && go run ./bench/rssprobe -settle 3s ${path:+-path "$path"} "$work/wrap" >/dev/null 2>&1) || true
perf script -i "$work/pf.data" -F comm,addr,ip,sym 2>/dev/null > "$work/pf.txt"
readelf -SW "$bin" | sed 's/^ *\[ *[0-9]*\]//' | awk '$1 ~ /^\.(text|rodata|gopclntab|typelink|itablink|go.buildinfo|noptrdata|data|bss)$/ {print $1, $3, $5}' > "$work/sec"
python3 - "$work/pf.txt" "$work/sec" "$(basename "$bin")" <<'PY'
import sys, collections, re
secs = [(n, int(a, 16), int(a, 16) + int(s, 16)) for n, a, s in (l.split() for l in open(sys.argv[2]))]
recs, cur = [], None
for line in open(sys.argv[1]):
    if not line.strip():
        continue
    if not line.startswith('\t'):
        t = line.split()
        cur = {'comm': t[0], 'addr': int(t[1].rstrip(':'), 16), 'fr': []}
        recs.append(cur)
    elif cur:
        t = line.split()
        if len(t) >= 2:
            cur['fr'].append(t[1])
def section(a):
    for n, lo, hi in secs:
        if lo & ~4095 <= a < hi:
            return n
def why(fr):
    s = ' '.join(fr)
    if 'newstack' not in s and 'itabsinit' not in s and any(
            re.search(r'\.init(\.\d+)?$', f) and not f.startswith('runtime.') for f in fr):
        return 'package initialisers'
    for key, name in [('itabsinit', 'itab set-up'), ('itabInit', 'itab set-up'),
                      ('newstack', 'stack growth (copystack walks every frame)'),
                      ('mProf_Malloc', 'runtime memory-profile sample'),
                      ('moduledataverify', 'runtime table check'),
                      ('isSystemGoroutine', 'goroutine start (function name)'),
                      ('runtime.callers', 'runtime.Callers (slog)'),
                      ('doInit1', 'package initialisers'),
                      ('fcgi.(*conn)', 'the first request'), ('serve.', 'serve.Run start-up'),
                      ('schedinit', 'runtime start-up'), ('rt0_go', 'runtime start-up'),
                      ('runtime.main', 'runtime start-up')]:
        if key in s:
            return name
    return 'other'
c = collections.Counter()
for r in recs:
    if r['comm'] != sys.argv[3][:15]:
        continue
    sec = section(r['addr'])
    if sec in ('.text', '.rodata', '.gopclntab', '.typelink', '.itablink', '.go.buildinfo'):
        c[(sec, why(r['fr']))] += 1
print("faults on read-only pages of %s (each maps up to a 64 KiB window)" % sys.argv[3])
tot = collections.Counter()
for (sec, w), n in sorted(c.items()):
    print("%-12s %-45s %3d" % (sec, w, n)); tot[sec] += n
print("total: " + ", ".join("%s %d" % kv for kv in tot.items()), "=", sum(tot.values()), "windows")
PY
