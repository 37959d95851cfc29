#!/usr/bin/env bash
# The highest constant rate each load generator sustains within 1 % with every
# request recorded and answered 200, side by side in one run against the same
# demo-app (interleaved: every rate is tried by every tool before the next rate).
# wrk is closed-loop, so only its ceiling (requests/s at 64 connections) is given.
#
#   benches/load-peers/run.sh [OUT_DIR]       RATES="5000 10000 ..." SECONDS_PER_RUN=5
#
# Tools: lameduck (this repo), oha (cargo install oha), vegeta (go install
# github.com/tsenart/vegeta/v12@v12.13.0), wrk (Debian). Missing ones are installed
# into target/tools. Everything targets 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
RATES=${RATES:-"2000 5000 10000 15000 20000 25000 30000 40000"}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
OUT=${1:-benches/results/$(date -u +%Y-%m-%d)-$(hostname -s)/load-peers}
mkdir -p "$OUT/raw"
OUT=$(cd "$OUT" && pwd)
TOOLS=$PWD/target/tools/bin
export PATH="$TOOLS:$PATH"
command -v oha >/dev/null || cargo install oha --locked --root "$PWD/target/tools"
command -v vegeta >/dev/null || GOBIN=$TOOLS go install github.com/tsenart/vegeta/v12@v12.13.0
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
ulimit -n "$(ulimit -Hn)"

cargo build --release -q -p lameduck -p demo-app
APP=127.0.0.1:18480
URL=http://$APP/
./target/release/demo-app --listen "$APP" --startup-delay 0s 2>/dev/null & APP_PID=$!
trap 'kill $APP_PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fsS -o /dev/null "$URL" 2>/dev/null && break; sleep 0.1; done

{
  echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) cores; ${SECONDS_PER_RUN}s per run; POST, keep-alive"
  echo "# $(oha --version); vegeta $(vegeta -version 2>&1 | head -1); wrk $(dpkg-query -W -f '${Version}' wrk 2>/dev/null)"
} >"$OUT/README.SETUP"
echo "tool,rate,requests,ok,achieved_rate" >"$OUT/raw.csv"
planned() { echo $(( $1 * SECONDS_PER_RUN )); }

run_lameduck() {
  local rate=$1 dir=$OUT/raw/lameduck-$1
  mkdir -p "$dir"
  ./target/release/lameduck load -q --url "$URL" --rate "$rate" --duration "${SECONDS_PER_RUN}s" \
    -o "$dir/records.jsonl" --json-summary "$dir/summary.json" >"$dir/stdout.txt" 2>&1 || true
  python3 - "$dir" "$rate" <<'PY' >>"$OUT/raw.csv"
import json, sys
d, rate = sys.argv[1], sys.argv[2]
s = json.load(open(d + "/summary.json"))
lines = sum(1 for _ in open(d + "/records.jsonl"))
print(f"lameduck,{rate},{lines},{s['ok']},{s['achieved_rate']:.1f}")
PY
  rm -f "$dir/records.jsonl"
}
run_oha() {
  local rate=$1 file=$OUT/raw/oha-$1.json
  # -n rather than -z: oha counts requests still in flight at a -z deadline as errors.
  oha --no-tui --output-format json -o "$file" -m POST -d lameduck-bench -n "$(planned "$rate")" \
    -q "$rate" --latency-correction -c 2000 "$URL" >/dev/null 2>&1 || true
  python3 - "$file" "$rate" <<'PY' >>"$OUT/raw.csv"
import json, sys
f, rate = sys.argv[1], sys.argv[2]
s = json.load(open(f))
codes = s.get("statusCodeDistribution", {})
ok = int(codes.get("200", 0))
total = sum(int(v) for v in codes.values()) + sum(int(v) for v in s.get("errorDistribution", {}).values())
dur = s["summary"]["total"]
print(f"oha,{rate},{total},{ok},{total / dur if dur else 0:.1f}")
PY
}
run_vegeta() {
  local rate=$1 file=$OUT/raw/vegeta-$1
  echo "POST $URL" | vegeta attack -rate="$rate" -duration="${SECONDS_PER_RUN}s" -max-workers=2000 \
    -body <(printf lameduck-bench) >"$file.bin" 2>/dev/null || true
  vegeta report -type=json "$file.bin" >"$file.json"
  rm -f "$file.bin"
  python3 - "$file.json" "$rate" <<'PY' >>"$OUT/raw.csv"
import json, sys
f, rate = sys.argv[1], sys.argv[2]
s = json.load(open(f))
ok = int(s.get("status_codes", {}).get("200", 0))
print(f"vegeta,{rate},{s['requests']},{ok},{s['rate']:.1f}")
PY
}
for rate in $RATES; do
  for tool in lameduck oha vegeta; do "run_$tool" "$rate"; done
done
wrk -t2 -c64 -d"${SECONDS_PER_RUN}s" -s benches/proxy-overhead/post.lua "$URL" >"$OUT/raw/wrk.txt"
WRK=$(awk '/^Requests\/sec/ {print $2}' "$OUT/raw/wrk.txt")

python3 - "$OUT" "$SECONDS_PER_RUN" "$WRK" <<'PY'
import csv, os, sys
out, seconds, wrk = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rows = list(csv.DictReader(open(os.path.join(out, "raw.csv"))))
best = {}
for r in rows:
    rate = int(r["rate"])
    planned = rate * seconds
    held = (abs(float(r["achieved_rate"]) - rate) <= 0.01 * rate
            and int(r["requests"]) >= 0.99 * planned and int(r["ok"]) == int(r["requests"]))
    if held:
        best[r["tool"]] = max(best.get(r["tool"], 0), rate)
lines = ["# Highest constant rate held within 1 %, every request recorded and 200", "",
         "| tool | highest rate held (req/s) | vs lameduck |", "|---|---|---|"]
base = best.get("lameduck", 0) or 1
for tool in ["lameduck", "oha", "vegeta"]:
    lines.append(f"| {tool} | {best.get(tool, 0)} | {best.get(tool, 0) / base:.2f} |")
lines.append(f"| wrk (closed loop, 64 connections: ceiling, not a constant rate) | {wrk:.0f} | {wrk / base:.2f} |")
open(os.path.join(out, "summary.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
