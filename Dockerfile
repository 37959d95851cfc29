# syntax=docker/dockerfile:1.7
# One build stage, one small image per deployable:
#   docker build --target sidecar  -t lameduck/sidecar:0.1.0 .
#   docker build --target demo-app -t lameduck/demo-app:0.1.0 .
#   docker build --target cli      -t lameduck/lameduck:0.1.0 .
# All images run as the distroless `nonroot` user (65532) and need no writable
# root filesystem. No container engine runs on the development machines of this
# project, so these images are not built in CI (see README).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace \
 && mkdir -p /out \
 && cp target/release/lameduck target/release/lameduck-sidecar target/release/demo-app /out/

# A static `sleep` for the exec preStop fallback (k8s/patches/pre-stop-exec) on
# clusters older than 1.30; busybox picks the applet from argv[0].
FROM busybox:1.36-musl AS busybox

FROM gcr.io/distroless/cc-debian12:nonroot AS sidecar
COPY --from=build /out/lameduck-sidecar /usr/local/bin/lameduck-sidecar
USER 65532:65532
EXPOSE 8000 9901
ENTRYPOINT ["/usr/local/bin/lameduck-sidecar"]

FROM gcr.io/distroless/cc-debian12:nonroot AS demo-app
COPY --from=build /out/demo-app /usr/local/bin/demo-app
COPY --from=busybox /bin/busybox /bin/sleep
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/demo-app"]

FROM gcr.io/distroless/cc-debian12:nonroot AS cli
COPY --from=build /out/lameduck /usr/local/bin/lameduck
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/lameduck"]
