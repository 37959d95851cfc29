#!/usr/bin/env bash
# Bounded fuzzing (CI runs it), SECONDS_TO_FUZZ each (default 60): `lameduck inject`
# over arbitrary YAML, and the webhook over arbitrary AdmissionReview bodies and pods.
# Needs the nightly toolchain and cargo-fuzz (installed here when missing).
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
corpus=target/corpus/inject
mkdir -p "$corpus"
cp ../crates/manifests/tests/data/inject/*.yaml ../k8s/rendered/*.yaml "$corpus/"
for target in inject admission; do
  cargo +nightly fuzz run "$target" "$corpus" -- -max_total_time="${SECONDS_TO_FUZZ:-60}" -rss_limit_mb=2048 -timeout=10
done
