#!/usr/bin/env bash
# `lameduck load --grpc` against ghz: the highest constant rate of unary gRPC calls
# each holds within 1 % with every call recorded and OK, side by side in one run
# against the same grpc-go server (its standard health service, Health/Check), in
# interleaved rounds with the tool order rotating. Both tools use one HTTP/2
# connection, as gRPC clients do (ghz --connections 1 with 64 workers; lameduck load
# multiplexes every call in flight on one connection).
#
#   benches/grpc-load/run.sh [OUT_DIR]   RATES="2000 4000 ..." SECONDS_PER_RUN=5 ROUNDS=3
#
# ghz (github.com/bojand/ghz) and the server (benches/grpc-load/server, grpc-go 1.85)
# come from the Go module proxy into target/tools. Everything targets 127.0.0.1 and
# stops by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
RATES=${RATES:-"2000 4000 6000 8000 12000 16000 24000"}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
ROUNDS=${ROUNDS:-3}
OUT=${1:-benches/results/$(date -u +%Y-%m-%d)-$(hostname -s)/grpc-load}
mkdir -p "$OUT/raw"
OUT=$(cd "$OUT" && pwd)
TOOLS=$PWD/target/tools/bin
mkdir -p "$TOOLS"
export PATH="$TOOLS:$PATH"
GHZ=github.com/bojand/ghz/cmd/ghz@v0.120.0
command -v ghz >/dev/null || GOBIN=$TOOLS go install "$GHZ"
(cd benches/grpc-load/server && go build -o "$TOOLS/grpc-bench-server" .)

cargo build --release -q -p lameduck
APP=127.0.0.1:18490
METHOD=grpc.health.v1.Health/Check
grpc-bench-server "$APP" 2>"$OUT/raw/server.log" & APP_PID=$!
trap 'kill $APP_PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q listening "$OUT/raw/server.log" 2>/dev/null && break; sleep 0.1; done

{
  echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) cores; ${SECONDS_PER_RUN}s per run; unary $METHOD, one HTTP/2 connection per tool"
  echo "# ghz ${GHZ#*@} (go install); server: grpc-go $(cd benches/grpc-load/server && go list -m -f '{{.Version}}' google.golang.org/grpc)"
} >"$OUT/README.SETUP"
echo "round,tool,rate,calls,ok,achieved_rate" >"$OUT/raw.csv"

run_lameduck() {
  local rate=$1 dir=$OUT/raw/lameduck-$1-$ROUND
  mkdir -p "$dir"
  ./target/release/lameduck load -q --url "http://$APP" --grpc "/$METHOD" --rate "$rate" \
    --duration "${SECONDS_PER_RUN}s" -o "$dir/records.jsonl" --json-summary "$dir/summary.json" \
    >"$dir/stdout.txt" 2>&1 || true
  python3 - "$dir" "$rate" "$ROUND" <<'PY' >>"$OUT/raw.csv"
import json, sys
d, rate = sys.argv[1], sys.argv[2]
s = json.load(open(d + "/summary.json"))
lines = sum(1 for _ in open(d + "/records.jsonl"))
print(f"{sys.argv[3]},lameduck,{rate},{lines},{s['grpc_statuses'].get('0', 0)},{s['achieved_rate']:.1f}")
PY
  rm -f "$dir/records.jsonl"
}
run_ghz() {
  local rate=$1 file=$OUT/raw/ghz-$1-$ROUND.json
  ghz --insecure --call "$METHOD" -d '{}' --rps "$rate" -n $((rate * SECONDS_PER_RUN)) -c 64 \
    --connections 1 -O json "$APP" >"$file" 2>/dev/null || true
  python3 - "$file" "$rate" "$ROUND" <<'PY' >>"$OUT/raw.csv"
import json, sys
f, rate = sys.argv[1], sys.argv[2]
s = json.load(open(f))
s.pop("details", None)  # one entry per call: kept out of the results
json.dump(s, open(f, "w"), indent=1)
ok = int(s.get("statusCodeDistribution", {}).get("OK", 0))
print(f"{sys.argv[3]},ghz,{rate},{s['count']},{ok},{s['rps']:.1f}")
PY
}
order=(lameduck ghz)
for ROUND in $(seq "$ROUNDS"); do
  for rate in $RATES; do
    for tool in "${order[@]}"; do "run_$tool" "$rate"; done
    order=("${order[@]:1}" "${order[0]}")
  done
done

python3 - "$OUT" "$SECONDS_PER_RUN" "$ROUNDS" <<'PY'
import csv, os, statistics, sys
from collections import defaultdict
out, seconds, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = list(csv.DictReader(open(os.path.join(out, "raw.csv"))))
held, achieved = defaultdict(int), defaultdict(list)
for r in rows:
    rate = int(r["rate"])
    ok = (abs(float(r["achieved_rate"]) - rate) <= 0.01 * rate
          and int(r["calls"]) >= 0.99 * rate * seconds and int(r["ok"]) == int(r["calls"]))
    held[(r["tool"], rate)] += ok
    achieved[(r["tool"], rate)].append(float(r["achieved_rate"]))
tools = ["lameduck", "ghz"]
rates = sorted({int(r["rate"]) for r in rows})
best = {t: max([rate for rate in rates if held[(t, rate)] * 2 > rounds], default=0) for t in tools}
lines = [f"# Highest constant rate of unary gRPC calls held within 1 %, every call recorded and OK, in most of {rounds} rounds", "",
         "| tool | highest rate held | median achieved calls/s at each rate |", "|---|---|---|"]
for t in tools:
    cells = ", ".join(f"{rate}: {statistics.median(achieved[(t, rate)]):.0f}" for rate in rates)
    lines.append(f"| {t} | {best[t]} | {cells} |")
if best["ghz"]:
    lines += ["", f"lameduck / ghz: {best['lameduck'] / best['ghz']:.2f}x"]
open(os.path.join(out, "summary.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
