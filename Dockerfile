# syntax=docker/dockerfile:1
#
# Atlas Agent Host image, and the stub upstreams used by compose's `local` profile.
#
#   docker build -t atlas-agent-host .                       # the host (last stage, the default)
#   docker build --target stubs -t atlas-agent-stubs .       # atlas-stub + openai-stub
#
# The builder tag follows rust-toolchain.toml (1.95.0). The runtime is the same
# Debian release as the builder, so the binary finds the glibc it was linked
# against.

ARG RUST_IMAGE=rust:1.95.0-trixie
ARG RUNTIME_IMAGE=debian:trixie-slim

# ---------------------------------------------------------------- toolchain
FROM ${RUST_IMAGE} AS toolchain
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
# Install what rust-toolchain.toml asks for (components and the guest targets)
# once, in a layer that survives source changes.
COPY rust-toolchain.toml ./
RUN rustup toolchain install \
 && rustup target add wasm32-unknown-unknown wasm32-wasip2

# ---------------------------------------------------------------- host + plugins
FROM toolchain AS build
COPY . .
# The cache mounts keep the registry and target dir between builds; the
# artefacts are copied out in the same step because the mounts are not part
# of the layer. `cargo xtask plugins` only writes files, so target/plugins is
# emptied first: a plugin removed from plugins/ must not ship from the cache.
RUN --mount=type=cache,id=agent-host-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=agent-host-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=agent-host-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p agent-host \
 && rm -rf target/plugins \
 && cargo xtask plugins \
 && mkdir -p /out/plugins \
 && cp target/release/agent-host /out/agent-host \
 && cp target/plugins/*.wasm target/plugins/*.policy.toml /out/plugins/

# ---------------------------------------------------------------- stubs
FROM toolchain AS build-stubs
COPY . .
RUN --mount=type=cache,id=agent-host-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=agent-host-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=agent-host-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p atlas-stubs --bins \
 && mkdir -p /out \
 && cp target/release/atlas-stub target/release/openai-stub /out/

# ---------------------------------------------------------------- runtime base
# debian-slim rather than distroless: the HEALTHCHECK needs an HTTP client and
# the Kubernetes preStop hook needs `sleep`. busybox brings a ~1 MB `wget`;
# ca-certificates lets rustls verify the model endpoint.
FROM ${RUNTIME_IMAGE} AS runtime-base
# Package versions follow the pinned Debian release; pinning each one would
# break the build at every security update.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates busybox \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 agent \
 && useradd --system --uid 10001 --gid agent --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin agent

# ---------------------------------------------------------------- stubs image
FROM runtime-base AS stubs
COPY --from=build-stubs /out/ /usr/local/bin/
ENV STUB_BIND=0.0.0.0 \
    ATLAS_STUB_PORT=8081 \
    OPENAI_STUB_PORT=8082
USER 10001:10001
EXPOSE 8081 8082
CMD ["atlas-stub"]

# ---------------------------------------------------------------- host image (default)
FROM runtime-base AS runtime
LABEL org.opencontainers.image.title="atlas-agent-host" \
      org.opencontainers.image.description="Tool-calling assistant for Atlas CMMS with WebAssembly tool and policy plugins" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /app
# Owned by root and read-only for the service user: the process can load its
# plugins but never rewrite them. Kubernetes may mount a ConfigMap over
# /app/plugins instead (see k8s/README.md).
COPY --from=build /out/agent-host /usr/local/bin/agent-host
COPY --from=build /out/plugins/ /app/plugins/
ENV PORT=4005 \
    PLUGIN_DIR=/app/plugins \
    LOG_FORMAT=json
USER 10001:10001
EXPOSE 4005
# SIGTERM starts the drain: the listener closes and in-flight chats get
# SHUTDOWN_GRACE_MS to finish.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/bin/sh", "-c", "busybox wget -q -O /dev/null \"http://127.0.0.1:${PORT}/health/live\" || exit 1"]
ENTRYPOINT ["/usr/local/bin/agent-host"]
