# Sourced by the bench scripts: a scratch directory in $WORK and the processes a script
# starts (append their pids to `pids`), all stopped and removed when it exits.
WORK=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
