# Shared by the benchmark scripts; sourced, not run.

# wait_up URL: until URL answers 2xx (10 s at most).
wait_up() {
  for _ in $(seq 1 200); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "not up: $1" >&2
  return 1
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
