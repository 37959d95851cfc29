#!/usr/bin/env bash
# The webhook's admission throughput and latency on loopback: `lameduck webhook
# --no-cluster` with a throwaway certificate, and the admission-load client (an
# example of crates/webhook) posting review.json (a Deployment's pod as the API
# server sends it: defaulted, with managedFields) over TLS keep-alive connections.
# Two measures, ROUNDS (3) rounds each, the median kept:
#   saturated: CONNECTIONS (4) connections, closed loop, SECONDS (10): admissions/s;
#   paced:     RATE (200/s, a burst of pods being created) over 4 connections: p50/p99.
# Raw JSON lines and a summary go to benches/results/<date>-<host>/webhook.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-4}
SECONDS_EACH=${SECONDS_EACH:-10}
RATE=${RATE:-200}
OUT=${OUT:-benches/results/$(date +%F)-$(hostname -s)/webhook}
mkdir -p "$OUT"
cargo build --release -q -p lameduck -p lameduck-webhook --example admission-load
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RUST_LOG=warn ./target/release/lameduck webhook --no-cluster --listen "127.0.0.1:$port" \
  --tls-cert "$work/tls.crt" --tls-key "$work/tls.key" &
pid=$!
for _ in $(seq 50); do
  curl -skf "https://127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.1
done
{
  echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) cores; lameduck $(./target/release/lameduck --version)"
  echo "# review.json: $(wc -c < benches/webhook/review.json) bytes; rounds $ROUNDS, $SECONDS_EACH s each"
} > "$OUT/README.SETUP"
: > "$OUT/raw.jsonl"
for round in $(seq "$ROUNDS"); do
  for mode in saturated paced; do
    if [ "$mode" = saturated ]; then
      line=$(./target/release/examples/admission-load "127.0.0.1:$port" benches/webhook/review.json "$CONNECTIONS" "$SECONDS_EACH")
    else
      line=$(./target/release/examples/admission-load "127.0.0.1:$port" benches/webhook/review.json 4 "$SECONDS_EACH" "$RATE")
    fi
    echo "{\"round\":$round,\"mode\":\"$mode\",\"result\":$line}" | tee -a "$OUT/raw.jsonl"
  done
done
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
python3 - "$OUT" "$rss_kib" <<'PY' | tee "$OUT/summary.md"
import json, statistics, sys
out, rss = sys.argv[1], int(sys.argv[2])
rows = [json.loads(l) for l in open(f"{out}/raw.jsonl")]
def med(mode, key):
    return statistics.median(r["result"][key] for r in rows if r["mode"] == mode)
print("| measure | median of rounds |")
print("|---|---|")
print(f"| admissions/s, saturated | {med('saturated', 'per_second'):.0f} |")
print(f"| p50 / p99 / p99.9 ms, saturated | {med('saturated', 'p50_ms'):.2f} / {med('saturated', 'p99_ms'):.2f} / {med('saturated', 'p999_ms'):.2f} |")
print(f"| p50 / p99 / p99.9 ms, paced | {med('paced', 'p50_ms'):.2f} / {med('paced', 'p99_ms'):.2f} / {med('paced', 'p999_ms'):.2f} |")
print(f"| webhook RSS after the runs | {rss / 1024:.1f} MiB |")
PY
