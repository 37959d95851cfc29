#!/usr/bin/env bash
# Builds the multi-call `kube` binary (etcd and the Kubernetes components) into a
# cache outside the repository, keyed by the Kubernetes and Go versions and the
# wrapper's sources: a warm run finds it and only prints its path.
#   KUBE_CACHE (default ~/.cache/lameduck/kube): where built binaries are kept.
set -euo pipefail
cd "$(dirname "$0")"
source ../versions.env
go_version=$(go env GOVERSION)
sources=$(cat go.mod go.sum main.go | sha256sum | cut -c1-12)
dir="${KUBE_CACHE:-$HOME/.cache/lameduck/kube}/v${K8S_VERSION}-${go_version}-${sources}"
if [ ! -x "$dir/kube" ]; then
  mkdir -p "$dir.tmp"
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  v="-X k8s.io/component-base/version"
  c="-X k8s.io/client-go/pkg/version"
  ldflags="-s -w $v.gitVersion=v$K8S_VERSION $v.gitMajor=1 $v.gitMinor=$minor $v.gitTreeState=clean"
  ldflags="$ldflags $c.gitVersion=v$K8S_VERSION $c.gitMajor=1 $c.gitMinor=$minor $c.gitTreeState=clean"
  started=$(date +%s)
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir.tmp/kube" .
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
    ln -sf kube "$dir.tmp/$name"
  done
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  echo "built $dir/kube in $(( $(date +%s) - started )) s" >&2
fi
echo "$dir"
