#!/usr/bin/env bash
# Builds the ingress controller, Traefik, from its own module as the Go module proxy
# serves it (its go.mod's replace directives apply only there), into a cache outside
# the repository keyed by the Traefik and Go versions: a warm run only prints the
# binary's directory.
#   KUBE_CACHE (default ~/.cache/lameduck/kube): where built binaries are kept.
set -euo pipefail
cd "$(dirname "$0")"
source ../versions.env
module=github.com/traefik/traefik/v3
dir="${KUBE_CACHE:-$HOME/.cache/lameduck/kube}/traefik-v${TRAEFIK_VERSION}-$(go env GOVERSION)"
if [ ! -x "$dir/traefik" ]; then
  started=$(date +%s)
  source=$(go mod download -json "$module@v$TRAEFIK_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -d "$source" ] || { echo "e2e: go mod download $module@v$TRAEFIK_VERSION gave no source" >&2; exit 1; }
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/src"
  # The module cache is read-only; the build writes nothing into the source, but a
  # copy keeps it apart from the cache all the same.
  cp -r "$source/." "$dir.tmp/src" && chmod -R u+w "$dir.tmp/src"
  v="-X github.com/traefik/traefik/v3/pkg/version"
  (cd "$dir.tmp/src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $v.Version=v$TRAEFIK_VERSION" \
    -o "$dir.tmp/traefik" ./cmd/traefik)
  rm -rf "$dir.tmp/src" "$dir" && mv "$dir.tmp" "$dir"
  echo "built $dir/traefik in $(( $(date +%s) - started )) s" >&2
fi
echo "$dir"
