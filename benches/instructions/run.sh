#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind. The count repeats within
# about 0.5 % on this shared machine, where wall-clock CPU per request moves by
# ±15 % between rounds: it is how each change to the sidecar's hot path is judged.
#
# Each target runs under valgrind in front of the same demo-app. WARMUP keep-alive
# POSTs go through it; then its counters are zeroed, REQUESTS POSTs are sent at RATE/s
# over CONNECTIONS connections (`lameduck load`), and the counters are dumped. The
# figure is the user-space instructions of the whole process (every thread) divided
# by REQUESTS; the kernel's work is not counted.
#
# Targets: this checkout's lameduck-sidecar (one worker), every build named in
# SIDECARS, nginx (one worker, upstream keep-alive), and the bare proxy
# (sidecar/examples/bare_proxy.rs: two hyper connections and nothing else) with its
# app connection in a task of its own, driven inline, and with header case kept.
#
#   benches/instructions/run.sh [OUT_DIR]   (default: benches/results/<date>-<host>/instructions)
#   SIDECARS="before=/tmp/old/lameduck-sidecar" benches/instructions/run.sh
#
# Needs valgrind, nginx and curl (Debian: valgrind nginx curl). Everything listens on
# 127.0.0.1 and stops when the script exits.
set -euo pipefail
cd "$(dirname "$0")/../.."
WARMUP=${WARMUP:-400}
REQUESTS=${REQUESTS:-1000}
RATE=${RATE:-200}
CONNECTIONS=${CONNECTIONS:-8}
SIDECARS=${SIDECARS:-}
OUT=${1:-benches/results/$(date -u +%Y-%m-%d)-$(hostname -s)/instructions}
for p in valgrind callgrind_control callgrind_annotate nginx curl; do
  command -v "$p" >/dev/null || { echo "missing: $p (Debian: valgrind nginx curl)" >&2; exit 1; }
done
mkdir -p "$OUT/raw"
OUT=$(cd "$OUT" && pwd)
cargo build --release -q -p lameduck-sidecar -p demo-app -p lameduck --example bare_proxy
BIN=target/release
source benches/lib/processes.sh

APP=127.0.0.1:18480 PROXY=127.0.0.1:18481 ADMIN=127.0.0.1:18491
"$BIN/demo-app" --listen "$APP" --startup-delay 0s 2>"$WORK/app.log" & pids+=($!)
cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
master_process off;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx-body;
  proxy_temp_path $WORK/nginx-proxy;
  upstream app { server $APP max_fails=0; keepalive 64; }
  server {
    listen $PROXY;
    keepalive_requests 1000000;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF

declare -A COMMAND=(
  [lameduck-sidecar]="$BIN/lameduck-sidecar --listen $PROXY --admin $ADMIN --upstream $APP"
  [nginx]="nginx -c $WORK/nginx.conf"
  [bare-proxy]="$BIN/examples/bare_proxy $PROXY $APP"
  [bare-proxy-inline]="$BIN/examples/bare_proxy $PROXY $APP --inline"
  [bare-proxy-header-case]="$BIN/examples/bare_proxy $PROXY $APP --preserve-header-case"
)
ORDER=(nginx bare-proxy bare-proxy-inline bare-proxy-header-case lameduck-sidecar)
for named in $SIDECARS; do
  COMMAND[${named%%=*}]="$(realpath "${named#*=}") --listen $PROXY --admin $ADMIN --upstream $APP"
  ORDER+=("${named%%=*}")
done
{
  echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) cores; $(valgrind --version); $(nginx -v 2>&1)"
  echo "# warmup=$WARMUP requests=$REQUESTS rate=$RATE connections=$CONNECTIONS"
  echo "# lameduck-sidecar $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- sidecar || echo '+changes')"
  for name in "${ORDER[@]}"; do echo "# $name: ${COMMAND[$name]}"; done
} >"$OUT/README.SETUP"

load() { # requests
  "$BIN/lameduck" load --url "http://$PROXY/" --rate "$RATE" --requests "$1" --body lameduck-bench \
    --connections "$CONNECTIONS" --quiet --json-summary "$WORK/load.json" >/dev/null
}
echo "target,instructions_per_request,answered_200" >"$OUT/results.csv"
for name in "${ORDER[@]}"; do
  # shellcheck disable=SC2086 # the command's words
  LAMEDUCK_WORKERS=1 LAMEDUCK_LOG=warn valgrind --tool=callgrind \
    --callgrind-out-file="$WORK/$name.%p" ${COMMAND[$name]} 2>"$WORK/$name.log" &
  vg=$!
  pids+=("$vg")
  for _ in $(seq 150); do curl -fsS -o /dev/null -d x "http://$PROXY/" 2>/dev/null && break; sleep 0.2; done
  load "$WARMUP"
  callgrind_control --zero "$vg" >/dev/null
  load "$REQUESTS"
  answered=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['statuses'].get('200', 0))" "$WORK/load.json")
  callgrind_control --dump "$vg" >/dev/null
  kill -9 "$vg" 2>/dev/null || true
  wait "$vg" 2>/dev/null || true
  dump=$(ls "$WORK/$name".*.1)
  callgrind_annotate --inclusive=yes --auto=no --threshold=99.5 "$dump" >"$OUT/raw/$name-inclusive.txt" 2>/dev/null
  total=$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}' "$OUT/raw/$name-inclusive.txt")
  echo "$name,$((total / REQUESTS)),$answered" | tee -a "$OUT/results.csv"
done

python3 - "$OUT/results.csv" >"$OUT/summary.md" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
nginx = next(int(r["instructions_per_request"]) for r in rows if r["target"] == "nginx")
print("# User-space instructions per proxied request (callgrind), ratios to nginx\n")
print("| target | instructions per request | vs nginx | answered 200 |")
print("|---|---|---|---|")
for r in rows:
    n = int(r["instructions_per_request"])
    print(f"| {r['target']} | {n} | {n / nginx:.2f} | {r['answered_200']} |")
PY
cat "$OUT/summary.md"
