# Shared by e2e/up and e2e/down: where the node keeps its state, and its addresses.
# Every address is in 198.18.0.0/15 (the benchmarking range), on devices this
# script creates, so no traffic leaves the machine.
E2E="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${E2E_STATE:-$E2E/.state}"
PKI="$STATE/pki"
LOGS="$STATE/logs"
PIDS="$STATE/pids"
NODE=lameduck-node
NODE_DEVICE=ldnode0
NODE_IP=198.18.0.1
POD_CIDR=198.18.1.0/24
SERVICE_CIDR=198.18.128.0/24
API_SERVICE_IP=198.18.128.1
API=https://127.0.0.1:6443

log() { printf 'e2e: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# Starts a named process in the background, its output in $LOGS/NAME.log.
start() {
  local name=$1; shift
  if [ -f "$PIDS/$name" ] && kill -0 "$(cat "$PIDS/$name")" 2>/dev/null; then
    return 0
  fi
  mkdir -p "$LOGS" "$PIDS"
  setsid "$@" >"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$PIDS/$name"
}

# Polls a command until it succeeds, for at most SECONDS.
wait_for() {
  local what=$1 seconds=$2; shift 2
  local deadline=$(( $(date +%s) + seconds ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "$what: not within ${seconds}s (see $LOGS)"
    sleep 1
  done
}
