# syntax=docker/dockerfile:1
#
# One image for the whole mesh: loyalty-points, loyalty-tiers,
# loyalty-gateway and loadgen. One build and one dependency cache serve every
# service, and every Deployment of a release runs the same version of the
# shared code (protos, common runtime). Each Deployment picks its binary with
# `command:` (see k8s/base); the image has no entrypoint of its own.
#
#   docker build -t loyalty-mesh:dev .
#   docker run --rm loyalty-mesh:dev loyalty-points --help
#
# Adding a service (referral, rewards): append its binary to BINARIES.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
# Debian 12 like the builder, so the glibc the binaries link against is there;
# `nonroot` runs as UID/GID 65532 and ships CA certificates and tzdata.
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS chef
# cargo-chef turns the workspace manifests into a recipe, so dependencies build
# in their own layer that only a Cargo.toml or Cargo.lock change invalidates.
RUN cargo install cargo-chef --locked --version 0.1.76
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ARG BINARIES="loyalty-points loyalty-tiers loyalty-referral loyalty-rewards loyalty-insights loyalty-webhooks loyalty-gateway loadgen"
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: cached until the recipe changes.
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
# protoc comes from the protoc-bin-vendored crate and SQLite is compiled from
# the bundled sources with the image's gcc, so no extra packages are needed.
RUN set -eu; \
    bins=""; for b in ${BINARIES}; do bins="$bins --bin $b"; done; \
    cargo build --release --locked $bins; \
    mkdir -p /out; \
    for b in ${BINARIES}; do cp "target/release/$b" /out/; done

FROM ${RUNTIME_IMAGE}
COPY --from=builder /out/ /usr/local/bin/
# Numeric, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
USER 65532:65532
# The services need no writable path but /tmp, which the Deployments mount as
# an emptyDir next to a read-only root filesystem.
CMD ["/usr/local/bin/loyalty-points", "--help"]
