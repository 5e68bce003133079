# syntax=docker/dockerfile:1.7
# jetq's container images: one binary each, on a distroless base, running as a non-root user.
#
#   docker build --target example-worker -t jetq/example-worker:0.1.0 .
#   docker build --target example-web    -t jetq/example-web:0.1.0 .
#   docker build --target scheduler      -t jetq/scheduler:0.1.0 .
#   docker build --target cli            -t jetq/cli:0.1.0 .     # jetq and jetq-provision
#   docker build --target push           -t jetq/push:0.1.0 .    # HTTP push dispatch (docs/PUSH.md)
#   docker build --target relay          -t jetq/relay:0.1.0 .   # transactional outbox relay (docs/OUTBOX.md)
#
# (buildah bud / podman build take the same arguments.) The images are what k8s/values.yaml
# names; k8s/README.md shows how to push them and point the overlays at your registry.
#
# The build stage runs k8s/build-binaries.sh; the test command (scripts/test.sh) runs the same
# script with the dev profile, so what ships here is what the tests build.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
# glibc, libgcc and CA certificates, nothing else; the same Debian release as the build stage.
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
ARG PROFILE=release
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    sh k8s/build-binaries.sh "$PROFILE" /out

FROM ${RUNTIME_IMAGE} AS runtime
# The uid/gid the Kubernetes manifests run as (runAsUser/runAsGroup 65532: distroless nonroot).
USER 65532:65532
WORKDIR /tmp

FROM runtime AS example-worker
COPY --from=build /out/worker /usr/local/bin/worker
ENTRYPOINT ["/usr/local/bin/worker"]

FROM runtime AS example-web
COPY --from=build /out/web /usr/local/bin/web
ENTRYPOINT ["/usr/local/bin/web"]

FROM runtime AS scheduler
COPY --from=build /out/jetq-scheduler /usr/local/bin/jetq-scheduler
ENTRYPOINT ["/usr/local/bin/jetq-scheduler"]

FROM runtime AS cli
COPY --from=build /out/jetq /out/jetq-provision /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/jetq"]

FROM runtime AS push
COPY --from=build /out/jetq-push /usr/local/bin/jetq-push
ENTRYPOINT ["/usr/local/bin/jetq-push"]

FROM runtime AS relay
COPY --from=build /out/jetq-relay /usr/local/bin/jetq-relay
ENTRYPOINT ["/usr/local/bin/jetq-relay"]
