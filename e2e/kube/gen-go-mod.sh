#!/usr/bin/env bash
# Writes go.mod for the wrapper module from upstream's own go.mod: k8s.io/kubernetes
# at K8S_VERSION, and each staging module it requires at v0.0.0 replaced by its
# published v0.<minor>.<patch> (the module zip has no staging directory). Then
# `go mod tidy` resolves the rest (etcd's server from the same graph).
set -euo pipefail
cd "$(dirname "$0")"
source ../versions.env
staging="v0.${K8S_VERSION#1.}"
upstream=$(go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
[ -f "$upstream" ] || { echo "gen-go-mod: no go.mod for k8s.io/kubernetes@v${K8S_VERSION}" >&2; exit 1; }
modules=$(awk '/^require/,/^\)/' "$upstream" | awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' | sort -u)
[ -n "$modules" ] || { echo "gen-go-mod: upstream go.mod lists no staging modules" >&2; exit 1; }
go_version=$(awk '$1 == "go" {print $2; exit}' "$upstream")
rm -f go.mod go.sum
go mod init lameduck.local/e2e/kube >/dev/null 2>&1
go mod edit -go="$go_version" -require="k8s.io/kubernetes@v${K8S_VERSION}"
for module in $modules; do
  go mod edit -replace="$module=$module@$staging"
done
go mod tidy
echo "go.mod: k8s.io/kubernetes v${K8S_VERSION}, $(echo "$modules" | wc -l) staging modules at $staging"
