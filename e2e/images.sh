# The images the node runs, built without a daemon and imported into containerd
# (sourced by e2e/up): the pause image, and the project's lameduck-sidecar,
# demo-app and lameduck CLI from this checkout's release build. Each image holds its
# binary and the shared libraries it loads (glibc, libgcc: what distroless `cc`
# holds), runs as the non-root user 65532 (pause: 65535) and needs no writable root.
IMAGE_TOOLS_SOURCES=$(cat "$E2E/image/go.mod" "$E2E/image/go.sum" "$E2E/image/main.go" "$E2E/image/pause/main.go" | sha256sum | cut -c1-12)
IMAGE_TOOLS="${KUBE_CACHE:-$HOME/.cache/lameduck/kube}/image-$(go env GOVERSION)-$IMAGE_TOOLS_SOURCES"

# The workspace's version: the images' tag.
project_version() {
  awk -F'"' '/^version = / {print $2; exit}' "$E2E/../Cargo.toml"
}

image_tools() {
  [ -x "$IMAGE_TOOLS/image" ] && [ -x "$IMAGE_TOOLS/pause" ] && return 0
  mkdir -p "$IMAGE_TOOLS"
  (cd "$E2E/image" && CGO_ENABLED=0 go build -trimpath -o "$IMAGE_TOOLS/image" . \
    && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$IMAGE_TOOLS/pause" ./pause)
}

images() {
  image_tools
  local repo version out="$STATE/images"
  repo=$(cd "$E2E/.." && pwd)
  version=$(project_version)
  log "building the project's release binaries (version $version)"
  (cd "$repo" && cargo build --release -q -p lameduck -p lameduck-sidecar -p demo-app)
  mkdir -p "$out"
  local bin="$repo/target/release"
  "$IMAGE_TOOLS/image" -ref "$SANDBOX_IMAGE" -out "$out/pause.tar" \
    -entrypoint /pause -user 65535:65535 -add "/pause=$IMAGE_TOOLS/pause"
  "$IMAGE_TOOLS/image" -ref "lameduck/sidecar:$version" -out "$out/sidecar.tar" -libs \
    -entrypoint /usr/local/bin/lameduck-sidecar -add "/usr/local/bin/lameduck-sidecar=$bin/lameduck-sidecar"
  # demo-app carries `sleep` for the exec preStop fallback, as the Dockerfile's image does.
  "$IMAGE_TOOLS/image" -ref "lameduck/demo-app:$version" -out "$out/demo-app.tar" -libs \
    -entrypoint /usr/local/bin/demo-app -add "/usr/local/bin/demo-app=$bin/demo-app" -add "/bin/sleep=$(command -v sleep)"
  "$IMAGE_TOOLS/image" -ref "lameduck/lameduck:$version" -out "$out/cli.tar" -libs \
    -entrypoint /usr/local/bin/lameduck -add "/usr/local/bin/lameduck=$bin/lameduck"
  for tarball in "$out"/*.tar; do
    ctr --address "$CONTAINERD_SOCK" -n k8s.io images import "$tarball" >/dev/null
  done
}
