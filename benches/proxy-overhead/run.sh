#!/usr/bin/env bash
# Proxy overhead and efficiency: the same demo-app reached directly, through
# lameduck-sidecar, nginx and haproxy, each proxy with one worker, measured side by
# side in interleaved rounds of one run (the machine is shared and noisy: compare
# ratios within a run, not absolute numbers across runs).
#
#   benches/proxy-overhead/run.sh [OUT_DIR]        (default: benches/results/<date>-<host>)
#   ROUNDS=3 SECONDS_PER_RUN=5 CONNECTIONS=32 benches/proxy-overhead/run.sh
#
# Needs wrk, nginx and haproxy (Debian packages; installed here if missing and root).
# Everything listens on 127.0.0.1 and stops when the script exits.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
CONNECTIONS=${CONNECTIONS:-32}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-1000}
OUT=${1:-benches/results/$(date -u +%Y-%m-%d)-$(hostname -s)}
mkdir -p "$OUT/raw"
OUT=$(cd "$OUT" && pwd)

need=()
for p in wrk nginx haproxy; do command -v "$p" >/dev/null || need+=("$p"); done
if ((${#need[@]})); then
  [ "$(id -u)" = 0 ] || { echo "missing: ${need[*]} (apt-get install ${need[*]})" >&2; exit 1; }
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
ulimit -n "$(ulimit -Hn)"

cargo build --release -q -p lameduck-sidecar -p demo-app
BIN=target/release
WORK=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

APP=127.0.0.1:18180 SIDECAR=127.0.0.1:18181 ADMIN=127.0.0.1:18191 NGINX=127.0.0.1:18182 HAPROXY=127.0.0.1:18183

"$BIN/demo-app" --listen "$APP" --startup-delay 0s 2>"$WORK/app.log" & pids+=($!)
TOKIO_WORKER_THREADS=1 LAMEDUCK_WORKERS=1 LAMEDUCK_LOG=warn "$BIN/lameduck-sidecar" --listen "$SIDECAR" --admin "$ADMIN" \
  --upstream "$APP" 2>"$WORK/sidecar.log" & pids+=($!); SIDECAR_PID=$!

cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx-body;
  proxy_temp_path $WORK/nginx-proxy;
  upstream app { server $APP max_fails=0; keepalive 64; keepalive_timeout 60s; }
  server {
    listen $NGINX;
    keepalive_requests 1000000;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
nginx -c "$WORK/nginx.conf" & pids+=($!); NGINX_PID=$!

cat >"$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend serving
  bind $HAPROXY
  default_backend app
backend app
  server app $APP
CONF
haproxy -f "$WORK/haproxy.cfg" -db & pids+=($!); HAPROXY_PID=$!

for target in $APP $SIDECAR $NGINX $HAPROXY; do
  for _ in $(seq 100); do curl -fsS -o /dev/null "http://$target/" 2>/dev/null && break; sleep 0.05; done
done

rss_kib() { # total RSS of a process and its children, KiB
  local total=0 pid
  for pid in "$@" $(pgrep -P "$(echo "$@" | tr ' ' ,)" 2>/dev/null || true); do
    total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

declare -A TARGETS=([direct]=$APP [sidecar]=$SIDECAR [nginx]=$NGINX [haproxy]=$HAPROXY)
ORDER=(direct sidecar nginx haproxy)
{
  echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) cores"
  echo "# rounds=$ROUNDS seconds=$SECONDS_PER_RUN connections=$CONNECTIONS; one worker per proxy"
  echo "# rustc: $(rustc --version); $(nginx -v 2>&1); $(haproxy -v | head -1); wrk $(dpkg-query -W -f '${Version}' wrk)"
} >"$OUT/README.SETUP"

echo "round,target,mode,requests_per_second,p50_us,p99_us" >"$OUT/raw.csv"
to_us() { # wrk latency like 1.23ms / 456.00us / 1.01s -> microseconds
  awk -v v="$1" 'BEGIN { n=v+0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n*1000; else if (v ~ /s$/) print n*1000000; else print n }'
}
measure() { # round target mode connections
  local file="$OUT/raw/$1-$2-$3.txt"
  wrk -t1 -c"$4" -d"${SECONDS_PER_RUN}s" --latency -s benches/proxy-overhead/post.lua "http://${TARGETS[$2]}/" >"$file"
  local rps p50 p99
  rps=$(awk '/^Requests\/sec/ {print $2}' "$file")
  p50=$(to_us "$(awk '$1=="50%" {print $2}' "$file")")
  p99=$(to_us "$(awk '$1=="99%" {print $2}' "$file")")
  echo "$1,$2,$3,$rps,$p50,$p99" >>"$OUT/raw.csv"
}
for round in $(seq "$ROUNDS"); do
  for t in "${ORDER[@]}"; do measure "$round" "$t" saturated "$CONNECTIONS"; done
  for t in "${ORDER[@]}"; do measure "$round" "$t" sequential 1; done
done

# Memory: idle, then with IDLE_CONNECTIONS keep-alive connections open on each proxy.
echo "target,rss_idle_kib,rss_with_${IDLE_CONNECTIONS}_connections_kib" >"$OUT/memory.csv"
idle_sidecar=$(rss_kib "$SIDECAR_PID"); idle_nginx=$(rss_kib "$NGINX_PID"); idle_haproxy=$(rss_kib "$HAPROXY_PID")
python3 - "$IDLE_CONNECTIONS" "$SIDECAR" "$NGINX" "$HAPROXY" <<'PY' &
import socket, sys, time
count, targets = int(sys.argv[1]), sys.argv[2:]
held = []
for target in targets:
    host, port = target.rsplit(":", 1)
    for _ in range(count):
        s = socket.create_connection((host, int(port)))
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        s.recv(4096)
        held.append(s)
print("open", flush=True)
time.sleep(8)
PY
HOLDER=$!
sleep 6
busy_sidecar=$(rss_kib "$SIDECAR_PID"); busy_nginx=$(rss_kib "$NGINX_PID"); busy_haproxy=$(rss_kib "$HAPROXY_PID")
wait "$HOLDER" || true
echo "sidecar,$idle_sidecar,$busy_sidecar" >>"$OUT/memory.csv"
echo "nginx,$idle_nginx,$busy_nginx" >>"$OUT/memory.csv"
echo "haproxy,$idle_haproxy,$busy_haproxy" >>"$OUT/memory.csv"

python3 - "$OUT" <<'PY'
import csv, statistics, sys, os
out = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(out, "raw.csv"))))
def med(target, mode, key):
    return statistics.median(float(r[key]) for r in rows if r["target"] == target and r["mode"] == mode)
lines = ["# Proxy overhead (medians over rounds; ratios are within this run)", ""]
lines.append("| target | req/s saturated | vs direct | vs nginx | p50 µs seq | p99 µs seq | added p50 µs | added p99 µs |")
lines.append("|---|---|---|---|---|---|---|---|")
for t in ["direct", "sidecar", "nginx", "haproxy"]:
    rps = med(t, "saturated", "requests_per_second")
    p50, p99 = med(t, "sequential", "p50_us"), med(t, "sequential", "p99_us")
    lines.append("| %s | %.0f | %.2f | %.2f | %.0f | %.0f | %.0f | %.0f |" % (
        t, rps, rps / med("direct", "saturated", "requests_per_second"),
        rps / med("nginx", "saturated", "requests_per_second"),
        p50, p99, p50 - med("direct", "sequential", "p50_us"), p99 - med("direct", "sequential", "p99_us")))
lines += ["", "| proxy | RSS idle KiB | RSS with open connections KiB |", "|---|---|---|"]
for r in csv.reader(open(os.path.join(out, "memory.csv"))):
    if r[0] != "target":
        lines.append("| %s | %s | %s |" % tuple(r))
open(os.path.join(out, "summary.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
