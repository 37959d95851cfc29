#!/usr/bin/env bash
# Proxy overhead and efficiency: the same demo-app reached directly, through
# lameduck-sidecar, nginx and haproxy, each proxy with one worker, measured side by
# side in interleaved rounds of one run (the machine is shared and noisy: compare
# ratios within a run, not absolute numbers across runs).
#
# Sections (4 runs first, on fresh processes), the timed ones in ROUNDS interleaved
# rounds with the target order rotating per round:
#  1. saturated keep-alive POST req/s (wrk, one thread, CONNECTIONS) and p50/p99 at
#     one sequential connection;
#  2. fixed-rate latency, open model: `lameduck load` at each of RATES for
#     RATE_SECONDS, p50/p99/p99.9 from send to the end of the response, and each
#     process's CPU seconds per second of load (its own, not the client's);
#  3. HTTP/2 (h2c prior knowledge): h2load, 10 connections x 10 streams, req/s;
#  4. memory: RSS idle, then with each of IDLE_COUNTS keep-alive connections open (one
#     GET each, then idle; measured IDLE_SETTLE seconds later), then IN_FLIGHT requests
#     in flight on top (`?wait=6`, its peak RSS and how many got 200), then after all
#     closed;
#  5. streaming (the sidecar only): a 1 GiB upload and a 1 GiB download through it to
#     an origin that streams (stream_origin.py), the sidecar's RSS sampled throughout.
#
#   benches/proxy-overhead/run.sh [OUT_DIR]        (default: benches/results/<date>-<host>/proxy-overhead)
#   ROUNDS=3 SECONDS_PER_RUN=5 RATE_SECONDS=30 RATES="1000 10000" benches/proxy-overhead/run.sh
#   SECTIONS="saturated memory" benches/proxy-overhead/run.sh   (a subset)
#
# Needs wrk, h2load, nginx, haproxy, curl (Debian: wrk nghttp2-client nginx haproxy
# curl; installed here if missing and root) and builds lameduck itself. Everything
# listens on 127.0.0.1 and stops when the script exits.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
CONNECTIONS=${CONNECTIONS:-32}
RATES=${RATES:-1000 10000}
RATE_SECONDS=${RATE_SECONDS:-30}
H2_REQUESTS=${H2_REQUESTS:-100000}
IDLE_COUNTS=${IDLE_COUNTS:-1000 10000}
IDLE_SETTLE=${IDLE_SETTLE:-3}
IN_FLIGHT=${IN_FLIGHT:-2000}
STREAM_BYTES=${STREAM_BYTES:-1073741824}
SECTIONS=${SECTIONS:-saturated rate h2 memory streaming}
OUT=${1:-benches/results/$(date -u +%Y-%m-%d)-$(hostname -s)/proxy-overhead}
mkdir -p "$OUT/raw"
OUT=$(cd "$OUT" && pwd)

need=()
declare -A PACKAGE=([wrk]=wrk [h2load]=nghttp2-client [nginx]=nginx [haproxy]=haproxy [curl]=curl)
for p in "${!PACKAGE[@]}"; do command -v "$p" >/dev/null || need+=("${PACKAGE[$p]}"); done
if ((${#need[@]})); then
  [ "$(id -u)" = 0 ] || { echo "missing: ${need[*]} (apt-get install ${need[*]})" >&2; exit 1; }
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
# 10 000 idle connections need more descriptors than the usual 20 000 hard limit
# leaves haproxy (two per connection); root may raise it.
ulimit -n 100000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
HAPROXY_MAXCONN=$((($(ulimit -n) - 200) / 2))
((HAPROXY_MAXCONN > 30000)) && HAPROXY_MAXCONN=30000
has() { [[ " $SECTIONS " == *" $1 "* ]]; }

cargo build --release -q -p lameduck-sidecar -p demo-app -p lameduck
BIN=target/release
source benches/lib/processes.sh

APP=127.0.0.1:18180 SIDECAR=127.0.0.1:18181 ADMIN=127.0.0.1:18191 NGINX=127.0.0.1:18182 HAPROXY=127.0.0.1:18183
NGINX_H2=127.0.0.1:18184 HAPROXY_H2=127.0.0.1:18186 ORIGIN=127.0.0.1:18185 STREAM_SIDECAR=127.0.0.1:18187 STREAM_ADMIN=127.0.0.1:18192

"$BIN/demo-app" --listen "$APP" --startup-delay 0s 2>"$WORK/app.log" & pids+=($!); APP_PID=$!
LAMEDUCK_WORKERS=1 LAMEDUCK_LOG=warn "$BIN/lameduck-sidecar" --listen "$SIDECAR" --admin "$ADMIN" \
  --upstream "$APP" 2>"$WORK/sidecar.log" & pids+=($!); SIDECAR_PID=$!

cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile 40000;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 30000; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx-body;
  proxy_temp_path $WORK/nginx-proxy;
  upstream app { server $APP max_fails=0; keepalive 64; keepalive_timeout 60s; }
  server {
    listen $NGINX;
    listen $NGINX_H2 http2;
    keepalive_requests 1000000;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
nginx -c "$WORK/nginx.conf" & pids+=($!); NGINX_PID=$!

cat >"$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn $HAPROXY_MAXCONN
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend serving
  bind $HAPROXY
  bind $HAPROXY_H2 proto h2
  default_backend app
backend app
  server app $APP
CONF
haproxy -f "$WORK/haproxy.cfg" -db & pids+=($!); HAPROXY_PID=$!

for target in $APP $SIDECAR $NGINX $HAPROXY; do
  for _ in $(seq 100); do curl -fsS -o /dev/null "http://$target/" 2>/dev/null && break; sleep 0.05; done
done

rss_kib() { # summed over the given processes
  local pid total=0
  for pid in "$@"; do total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0))); done
  echo "$total"
}
cpu_ticks() { # user + system, summed over the given processes
  local pid total=0
  for pid in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done
  echo "$total"
}
HZ=$(getconf CLK_TCK)

declare -A TARGETS=([direct]=$APP [sidecar]=$SIDECAR [nginx]=$NGINX [haproxy]=$HAPROXY)
declare -A H2_TARGETS=([sidecar]=$SIDECAR [nginx]=$NGINX_H2 [haproxy]=$HAPROXY_H2)
# nginx: its master and its one worker.
declare -A PIDS=([direct]=$APP_PID [sidecar]=$SIDECAR_PID [nginx]="$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')" [haproxy]=$HAPROXY_PID)
ORDER=(direct sidecar nginx haproxy)
rotated() { # round, names...: the names rotated by the round, so no target always goes first
  local r=$1; shift; local n=$#; local a=("$@") i
  for ((i = 0; i < n; i++)); do echo "${a[$(((i + r) % n))]}"; done
}
{
  echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) cores"
  echo "# rounds=$ROUNDS seconds=$SECONDS_PER_RUN connections=$CONNECTIONS rates=$RATES rate_seconds=$RATE_SECONDS h2_requests=$H2_REQUESTS idle=$IDLE_COUNTS; one worker per proxy"
  echo "# rustc: $(rustc --version); $(nginx -v 2>&1); $(haproxy -v | head -1); wrk $(dpkg-query -W -f '${Version}' wrk); $(h2load --version | head -1)"
  echo "# lameduck-sidecar $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- sidecar || echo '+changes')"
} >"$OUT/README.SETUP"

# 4. Memory (run first, on fresh processes: what later load leaves behind would blur
# the per-connection figures): idle keep-alive connections, then IN_FLIGHT requests in
# flight on top.
if has memory; then
  echo "target,connections,rss_idle_kib,rss_open_kib,rss_closed_kib,kib_per_connection" >"$OUT/memory.csv"
  echo "target,idle_connections,in_flight,rss_before_kib,rss_peak_kib,kib_per_request,answered_200" >"$OUT/in-flight.csv"
  for t in sidecar nginx haproxy; do
    python3 - "${TARGETS[$t]}" "${PIDS[$t]}" "$t" "$IDLE_SETTLE" "$IN_FLIGHT" "$OUT/in-flight.csv" $IDLE_COUNTS >>"$OUT/memory.csv" <<'PY'
import socket, sys, time
target, pids, name, settle = sys.argv[1], sys.argv[2].split(), sys.argv[3], float(sys.argv[4])
in_flight, in_flight_csv = int(sys.argv[5]), sys.argv[6]
counts = [int(c) for c in sys.argv[7:]]
host, port = target.rsplit(":", 1)
def rss():
    total = 0
    for pid in pids:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS"):
                total += int(line.split()[1])
    return total
def connect(request):
    s = socket.create_connection((host, int(port)), timeout=5)
    s.sendall(request)
    return s
time.sleep(settle)  # what earlier sections left behind may still be going back
idle = rss()
held = []
for count in counts:
    try:
        while len(held) < count:
            s = connect(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            s.recv(4096)
            held.append(s)
    except OSError as error:  # a proxy at its connection limit
        print(f"{name},refused at {len(held)}: {error},{idle},,,")
        break
    time.sleep(settle)
    opened = rss()
    print(f"{name},{count},{idle},{opened},,{(opened - idle) / count:.2f}", flush=True)
before = rss()
busy = []
try:
    for _ in range(in_flight):
        busy.append(connect(b"POST /?wait=6 HTTP/1.1\r\nHost: bench\r\nContent-Length: 14\r\n\r\nlameduck-bench"))
except OSError:
    pass
peak = before
for _ in range(8):
    time.sleep(0.5)
    peak = max(peak, rss())
answered = 0
for s in busy:
    s.settimeout(15)
    try:
        answered += s.recv(4096).startswith(b"HTTP/1.1 200")
    except OSError:
        pass
    s.close()
with open(in_flight_csv, "a") as out:
    out.write(f"{name},{len(held)},{len(busy)},{before},{peak},{(peak - before) / max(len(busy), 1):.1f},{answered}\n")
for s in held:
    s.close()
time.sleep(settle)
print(f"{name},closed,{idle},,{rss()},")
PY
  done
fi

# 1. Saturated and sequential.
to_us() { # wrk latency like 1.23ms / 456.00us / 1.01s -> microseconds
  awk -v v="$1" 'BEGIN { n=v+0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n*1000; else if (v ~ /s$/) print n*1000000; else print n }'
}
if has saturated; then
  echo "round,target,mode,requests_per_second,p50_us,p99_us" >"$OUT/saturated.csv"
  measure() { # round target mode connections
    local file="$OUT/raw/$1-$2-$3.txt"
    wrk -t1 -c"$4" -d"${SECONDS_PER_RUN}s" --latency -s benches/proxy-overhead/post.lua "http://${TARGETS[$2]}/" >"$file"
    local rps p50 p99
    rps=$(awk '/^Requests\/sec/ {print $2}' "$file")
    p50=$(to_us "$(awk '$1=="50%" {print $2}' "$file")")
    p99=$(to_us "$(awk '$1=="99%" {print $2}' "$file")")
    echo "$1,$2,$3,$rps,$p50,$p99" >>"$OUT/saturated.csv"
  }
  for round in $(seq "$ROUNDS"); do
    for t in $(rotated "$round" "${ORDER[@]}"); do measure "$round" "$t" saturated "$CONNECTIONS"; done
    for t in $(rotated "$round" "${ORDER[@]}"); do measure "$round" "$t" sequential 1; done
  done
fi

# 2. Fixed rate: latency and CPU per second of load.
if has rate; then
  echo "round,target,rate,achieved,failed,p50_ms,p99_ms,p999_ms,cpu_per_second" >"$OUT/rate.csv"
  for rate in $RATES; do
    for round in $(seq "$ROUNDS"); do
      for t in $(rotated "$round" "${ORDER[@]}"); do
        summary="$OUT/raw/rate-$rate-$round-$t.json"
        before=$(cpu_ticks ${PIDS[$t]}); start=$(date +%s.%N)
        "$BIN/lameduck" load --url "http://${TARGETS[$t]}/" --rate "$rate" --duration "${RATE_SECONDS}s" \
          --body lameduck-bench --quiet --allow-failures 1000000 --json-summary "$summary" >/dev/null ||
          # A target that falls behind the rate fills the client's in-flight limit: that
          # run is recorded as measured (its achieved rate says so), not the end of all.
          echo "$t at $rate/s: the load fell behind (exit $?), recorded as measured" >&2
        after=$(cpu_ticks ${PIDS[$t]}); end=$(date +%s.%N)
        python3 - "$summary" "$round" "$t" "$rate" "$((after - before))" "$HZ" "$start" "$end" >>"$OUT/rate.csv" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
round_, target, rate, ticks, hz, start, end = sys.argv[2:]
l = s["latency_from_sent"]
cpu = int(ticks) / int(hz) / (float(end) - float(start))
print(f"{round_},{target},{rate},{s['achieved_rate']:.0f},{s['failed']},{l['p50_ms']},{l['p99_ms']},{l['p999_ms']},{cpu:.4f}")
PY
      done
    done
  done
fi

# 3. HTTP/2, h2c prior knowledge.
if has h2; then
  printf 'lameduck-bench' >"$WORK/body"
  echo "round,target,requests_per_second,succeeded,failed" >"$OUT/h2.csv"
  for round in $(seq "$ROUNDS"); do
    for t in $(rotated "$round" sidecar nginx haproxy); do
      file="$OUT/raw/h2-$round-$t.txt"
      h2load -n "$H2_REQUESTS" -c 10 -m 10 -d "$WORK/body" "http://${H2_TARGETS[$t]}/" >"$file" 2>&1 || true
      rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$file")
      ok=$(awk '/^requests:/ {print $8}' "$file"); failed=$(awk '/^requests:/ {print $10}' "$file")
      echo "$round,$t,${rps:-0},${ok:-0},${failed:-0}" >>"$OUT/h2.csv"
    done
  done
fi

# 5. Streaming through the sidecar: RSS must stay flat.
if has streaming; then
  python3 benches/proxy-overhead/stream_origin.py "$ORIGIN" & pids+=($!)
  LAMEDUCK_WORKERS=1 LAMEDUCK_LOG=warn "$BIN/lameduck-sidecar" --listen "$STREAM_SIDECAR" --admin "$STREAM_ADMIN" \
    --upstream "$ORIGIN" 2>"$WORK/stream-sidecar.log" & pids+=($!); STREAM_PID=$!
  for _ in $(seq 100); do curl -fsS -o /dev/null "http://$STREAM_ADMIN/ready" 2>/dev/null && break; sleep 0.1; done
  truncate -s "$STREAM_BYTES" "$WORK/upload"
  echo "direction,bytes,seconds,rss_before_kib,rss_max_kib,rss_after_kib" >"$OUT/streaming.csv"
  for direction in upload download; do
    before=$(rss_kib "$STREAM_PID"); start=$(date +%s.%N)
    if [ "$direction" = upload ]; then
      curl -fsS -X POST -T "$WORK/upload" -o "$WORK/answer" "http://$STREAM_SIDECAR/upload" &
    else
      curl -fsS -o /dev/null -w '%{size_download}\n' "http://$STREAM_SIDECAR/bytes/$STREAM_BYTES" >"$WORK/answer" &
    fi
    transfer=$!; max=$before
    while kill -0 "$transfer" 2>/dev/null; do
      now=$(rss_kib "$STREAM_PID"); ((now > max)) && max=$now; sleep 0.05
    done
    wait "$transfer"
    end=$(date +%s.%N); sleep 1
    bytes=$(tr -d '\n' <"$WORK/answer")
    echo "$direction,$bytes,$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f", b - a}'),$before,$max,$(rss_kib "$STREAM_PID")" >>"$OUT/streaming.csv"
  done
fi

python3 benches/proxy-overhead/summary.py "$OUT" | tee "$OUT/summary.md"
