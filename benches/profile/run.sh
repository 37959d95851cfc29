#!/usr/bin/env bash
# Where lameduck-sidecar's time and memory go, before anything is changed:
#  1. CPU: `perf record` (software clock: hardware counters are not available here)
#     of the sidecar, one worker thread, under saturated keep-alive POST load (wrk);
#     the flat and the caller-grouped top functions are kept.
#  2. Allocations per request: heaptrack over a fixed number of requests, the
#     sidecar's start-up subtracted by a run with none.
#  3. Memory per idle keep-alive connection: RSS with 0, 1 000 and 5 000 idle client
#     connections (each after one request), and after they close; and heaptrack's
#     peak heap with 1 000 of them open, by allocation site.
#
#   benches/profile/run.sh [OUT_DIR]   (default: benches/results/<date>-<host>/profile)
#
# Needs perf, heaptrack and wrk (Debian packages). Everything listens on 127.0.0.1
# and stops when the script exits.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-benches/results/$(date -u +%Y-%m-%d)-$(hostname -s)/profile}
SECONDS_OF_LOAD=${SECONDS_OF_LOAD:-15}
REQUESTS=${REQUESTS:-20000}
mkdir -p "$OUT/raw"
OUT=$(cd "$OUT" && pwd)
for p in perf heaptrack heaptrack_print wrk; do
  command -v "$p" >/dev/null || { echo "missing: $p (Debian: linux-perf, heaptrack, wrk)" >&2; exit 1; }
done
ulimit -n "$(ulimit -Hn)"

cargo build --release -q -p lameduck-sidecar -p demo-app
BIN=$PWD/target/release
source benches/lib/processes.sh

APP=127.0.0.1:18280 SIDECAR=127.0.0.1:18281 ADMIN=127.0.0.1:18291
"$BIN/demo-app" --listen "$APP" --startup-delay 0s 2>"$WORK/app.log" & pids+=($!)

sidecar() { # starts the sidecar (optionally under a wrapper); sets SIDECAR_PID
  TOKIO_WORKER_THREADS=1 LAMEDUCK_WORKERS=1 LAMEDUCK_LOG=warn LAMEDUCK_SHUTDOWN_DELAY=0s "$@" "$BIN/lameduck-sidecar" --listen "$SIDECAR" \
    --admin "$ADMIN" --upstream "$APP" >>"$WORK/sidecar.out" 2>>"$WORK/sidecar.log" &
  SIDECAR_PID=$!; pids+=("$SIDECAR_PID")
  SERVER_PID=
  for _ in $(seq 100); do
    if curl -fsS "http://$ADMIN/ready" >/dev/null 2>&1; then
      SERVER_PID=$(pgrep -f "^$BIN/lameduck-sidecar --listen $SIDECAR")
      return
    fi
    sleep 0.1
  done
  echo "the sidecar did not become ready" >&2; exit 1
}
stop_sidecar() { # the server itself: under heaptrack, $SIDECAR_PID is the wrapper, which
  # then writes its data and exits
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SIDECAR_PID" 2>/dev/null || true
}
post_lua=$PWD/benches/proxy-overhead/post.lua

# 1. CPU profile.
sidecar
wrk -t1 -c32 -d"$((SECONDS_OF_LOAD + 4))s" -s "$post_lua" "http://$SIDECAR/" >"$OUT/raw/wrk.txt" &
wrk_pid=$!
sleep 2
perf record -e cpu-clock -F 999 -g --call-graph dwarf,16384 -p "$SERVER_PID" -o "$WORK/perf.data" \
  -- sleep "$SECONDS_OF_LOAD" 2>"$OUT/raw/perf-record.txt"
wait "$wrk_pid"
perf report -i "$WORK/perf.data" --stdio --no-children --sort symbol --percent-limit 0.7 \
  -g none 2>/dev/null | grep -v '^$' >"$OUT/cpu-flat.txt"
perf report -i "$WORK/perf.data" --stdio --children --sort symbol --percent-limit 4 \
  -g none 2>/dev/null | grep -v '^$' >"$OUT/cpu-inclusive.txt"
stop_sidecar

# 2. Allocations per request.
allocations() { # heaptrack the sidecar over $1 requests; prints its allocation calls
  sidecar heaptrack -o "$WORK/heap-$1"
  if [ "$1" -gt 0 ]; then
    wrk -t1 -c8 -d60s -s "$post_lua" "http://$SIDECAR/" >/dev/null &
    local w=$!
    # wrk has no request count: stop it once the sidecar has proxied enough.
    while :; do
      local n
      n=$(curl -fsS "http://$ADMIN/metrics" | awk '/^lameduck_requests_total/ {s += $2} END {print s + 0}')
      [ "${n%.*}" -ge "$1" ] && break
      sleep 0.2
    done
    kill "$w" 2>/dev/null; wait "$w" 2>/dev/null || true
    curl -fsS "http://$ADMIN/metrics" | awk '/^lameduck_requests_total/ {s += $2} END {printf "%d", s}' >"$WORK/served"
  fi
  stop_sidecar
  heaptrack_print -f "$WORK"/heap-"$1".*zst 2>/dev/null >"$OUT/raw/heaptrack-$1.txt" || true
  awk '/^calls to allocation functions:/ {print $5}' "$OUT/raw/heaptrack-$1.txt"
}
base=$(allocations 0)
loaded=$(allocations "$REQUESTS")
served=$(cat "$WORK/served")

# 3. Memory per idle keep-alive connection.
sidecar
rss() { awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status"; }
python3 - "$SIDECAR" "$(rss)" "$SERVER_PID" >"$OUT/idle-connections.csv" <<'PY'
import socket, sys, time
host, port = sys.argv[1].split(":")
idle, pid = int(sys.argv[2]), sys.argv[3]
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
print("connections,rss_kib,kib_per_connection")
print(f"0,{idle},")
socks = []
for target in (1000, 5000):
    batch = []
    while len(socks) + len(batch) < target:
        s = socket.create_connection((host, int(port)))
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        batch.append(s)
    for s in batch:
        s.settimeout(5)
        s.recv(65536)  # the response; the connection stays open, idle
    socks += batch
    time.sleep(1)
    now = rss()
    print(f"{target},{now},{(now - idle) / target:.1f}")
for s in socks:
    s.close()
time.sleep(3)
print(f"closed,{rss()},")
PY
stop_sidecar

# The heap behind 1 000 idle connections, by allocation site.
sidecar heaptrack -o "$WORK/heap-idle"
python3 - "$SIDECAR" <<'PY'
import socket, sys, time
host, port = sys.argv[1].split(":")
socks = []
for _ in range(1000):
    s = socket.create_connection((host, int(port)))
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    socks.append(s)
for s in socks:
    s.settimeout(5)
    s.recv(65536)
time.sleep(2)
PY
stop_sidecar
heaptrack_print -f "$WORK"/heap-idle.*zst 2>/dev/null >"$OUT/raw/heaptrack-idle-1000.txt" || true
idle_peak=$(awk -F': ' '/^peak heap memory consumption:/ {print $2}' "$OUT/raw/heaptrack-idle-1000.txt")

# Self time grouped by where it is spent.
python3 - "$OUT/cpu-flat.txt" >"$OUT/cpu-by-area.txt" <<'PY'
import re, sys
areas = {}
for line in open(sys.argv[1]):
    m = re.match(r"\s*([0-9.]+)%\s+\[(.)\]\s+(\S.*?)\s{2,}", line)
    if not m:
        continue
    share, space, symbol = float(m.group(1)), m.group(2), m.group(3)
    if space == "k":
        area = "kernel (sockets, syscalls, scheduling)"
    elif re.search(r"malloc|free|realloc|mi_|_int_", symbol):
        area = "allocator"
    elif re.search(r"memmove|memcpy|memset", symbol):
        area = "memory copies"
    elif "clock_gettime" in symbol:
        area = "clock reads"
    elif "hyper::" in symbol or symbol.startswith("hyper"):
        area = "hyper"
    elif "tokio::" in symbol:
        area = "tokio runtime, channels, timers"
    elif "lameduck_sidecar" in symbol:
        area = "lameduck_sidecar"
    elif "prometheus" in symbol:
        area = "metrics"
    else:
        area = "other user space"
    areas[area] = areas.get(area, 0.0) + share
print("self time in functions above 0.7 % each, by area (the rest is spread thinner):")
for area, share in sorted(areas.items(), key=lambda a: -a[1]):
    print(f"{share:6.2f} %  {area}")
PY
sed -i 's/ \{3,\}/  /g' "$OUT/cpu-flat.txt" "$OUT/cpu-inclusive.txt"

{
  echo "# lameduck-sidecar profile ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, one worker thread)"
  echo
  echo "wrk -t1 -c32 POST through the sidecar: $(awk '/Requests\/sec/ {print $2}' "$OUT/raw/wrk.txt") req/s"
  echo
  echo "allocation calls: $base at start-up and shutdown alone, $loaded with $served requests:"
  echo "$(( (loaded - base) / served )) allocation calls per proxied request (raw/heaptrack-$REQUESTS.txt: by site)"
  echo
  echo "idle keep-alive connections (RSS KiB):"
  cat "$OUT/idle-connections.csv"
  echo
  echo "heap peak with 1 000 idle connections: $idle_peak (raw/heaptrack-idle-1000.txt: by site)"
  echo
  cat "$OUT/cpu-by-area.txt"
  echo
  echo "top functions, self time (cpu-flat.txt) and inclusive (cpu-inclusive.txt)"
} >"$OUT/summary.md"
cat "$OUT/summary.md"
