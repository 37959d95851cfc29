#!/usr/bin/env bash
# Two builds of lameduck-sidecar side by side, in interleaved rounds of one run: a
# change is kept only if it wins against the build before it on this noisy machine.
#
#   benches/sidecar-ab/run.sh OLD_BINARY NEW_BINARY [OUT_DIR]
#   ROUNDS=5 SECONDS_PER_RUN=5 benches/sidecar-ab/run.sh /tmp/a/lameduck-sidecar target/release/lameduck-sidecar
#
# Per round and build: saturated keep-alive POST req/s (wrk, one thread, 32
# connections) and the process's CPU seconds per 1 000 requests during it; then, once
# per build, RSS idle, with IDLE_CONNECTIONS idle keep-alive connections (each after
# one GET) and after they closed. Each sidecar runs one worker thread in front of
# the same demo-app. Needs wrk. Everything listens on 127.0.0.1 and stops on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
OLD=$(realpath "${1:?old sidecar binary}")
NEW=$(realpath "${2:?new sidecar binary}")
OUT=${3:-benches/results/$(date -u +%Y-%m-%d)-$(hostname -s)/sidecar-ab}
ROUNDS=${ROUNDS:-5}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-1000}
command -v wrk >/dev/null || { echo "missing: wrk (apt-get install wrk)" >&2; exit 1; }
mkdir -p "$OUT/raw"
OUT=$(cd "$OUT" && pwd)
ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p demo-app
source benches/lib/processes.sh

APP=127.0.0.1:18380
declare -A LISTEN=([old]=127.0.0.1:18381 [new]=127.0.0.1:18382)
declare -A ADMIN=([old]=127.0.0.1:18391 [new]=127.0.0.1:18392)
declare -A BINARY=([old]=$OLD [new]=$NEW)
declare -A PID
target/release/demo-app --listen "$APP" --startup-delay 0s 2>"$WORK/app.log" & pids+=($!)
for build in old new; do
  TOKIO_WORKER_THREADS=1 LAMEDUCK_WORKERS=1 LAMEDUCK_LOG=warn "${BINARY[$build]}" --listen "${LISTEN[$build]}" \
    --admin "${ADMIN[$build]}" --upstream "$APP" 2>"$WORK/$build.log" &
  PID[$build]=$!; pids+=($!)
done
for build in old new; do
  for _ in $(seq 100); do curl -fsS -o /dev/null "http://${ADMIN[$build]}/ready" 2>/dev/null && break; sleep 0.1; done
done
{
  echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) cores; rounds=$ROUNDS seconds=$SECONDS_PER_RUN"
  echo "# old: $OLD ($(sha256sum "$OLD" | cut -c1-12)); new: $NEW ($(sha256sum "$NEW" | cut -c1-12))"
} >"$OUT/README.SETUP"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "round,build,requests_per_second,cpu_ms_per_1000_requests" >"$OUT/raw.csv"
for round in $(seq "$ROUNDS"); do
  order=(old new); ((round % 2 == 0)) && order=(new old)
  for build in "${order[@]}"; do
    before=$(cpu_ticks "${PID[$build]}")
    wrk -t1 -c32 -d"${SECONDS_PER_RUN}s" -s benches/proxy-overhead/post.lua \
      "http://${LISTEN[$build]}/" >"$OUT/raw/$round-$build.txt"
    after=$(cpu_ticks "${PID[$build]}")
    rps=$(awk '/^Requests\/sec/ {print $2}' "$OUT/raw/$round-$build.txt")
    requests=$(awk '/requests in/ {print $1}' "$OUT/raw/$round-$build.txt")
    hz=$(getconf CLK_TCK)
    echo "$round,$build,$rps,$(awk -v t=$((after - before)) -v hz="$hz" -v n="$requests" 'BEGIN {printf "%.2f", t * 1000 / hz / n * 1000}')" >>"$OUT/raw.csv"
  done
done

echo "build,rss_idle_kib,rss_open_kib,rss_closed_kib,kib_per_connection" >"$OUT/memory.csv"
for build in old new; do
  python3 - "${LISTEN[$build]}" "${PID[$build]}" "$IDLE_CONNECTIONS" "$build" >>"$OUT/memory.csv" <<'PY'
import socket, sys, time
target, pid, count, build = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
host, port = target.rsplit(":", 1)
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
idle = rss()
held = []
for _ in range(count):
    s = socket.create_connection((host, int(port)))
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    s.recv(4096)
    held.append(s)
time.sleep(2)
open_ = rss()
for s in held:
    s.close()
time.sleep(2)
print(f"{build},{idle},{open_},{rss()},{(open_ - idle) / count:.2f}")
PY
done

python3 - "$OUT" <<'PY'
import csv, os, statistics, sys
out = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(out, "raw.csv"))))
med = lambda b, k: statistics.median(float(r[k]) for r in rows if r["build"] == b)
lines = ["| build | req/s (median) | CPU ms per 1 000 requests |", "|---|---|---|"]
for b in ["old", "new"]:
    lines.append(f"| {b} | {med(b, 'requests_per_second'):.0f} | {med(b, 'cpu_ms_per_1000_requests'):.1f} |")
lines.append(f"\nnew/old req/s: {med('new', 'requests_per_second') / med('old', 'requests_per_second'):.3f}")
lines += ["", "| build | RSS idle KiB | with open connections | after close | KiB per connection |", "|---|---|---|---|---|"]
for r in list(csv.reader(open(os.path.join(out, "memory.csv"))))[1:]:
    lines.append("| " + " | ".join(r) + " |")
open(os.path.join(out, "summary.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
