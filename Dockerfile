# ably-tokend container image. From the repository root:
#
#   docker build -t ably-tokend:0.1.0 .
#   docker run --rm -p 127.0.0.1:8080:8080 -e ABLY_API_KEY \
#     -v "$PWD/ably-tokend.toml:/etc/ably-tokend/ably-tokend.toml:ro" ably-tokend:0.1.0
#
# Needs BuildKit (the default builder since Docker 23; Podman/Buildah work too) for the cache
# mount below. deploy/README.md covers running it, Compose and the Kubernetes sidecar.
# Checked in CI by .ci/lint-deploy (hadolint) and tests/dockerfile_build.rs (runs the same
# cargo command as the build stage, then the binary's --version and `policy check`).

# ---- build -------------------------------------------------------------------------------
# The toolchain this repository is built and tested with (rustc 1.95.0; Cargo.toml's
# rust-version, 1.88, is only the minimum), on Debian 12 "bookworm" like the runtime stage so
# the binary links against the same glibc. For byte-for-byte reproducible builds also pin the
# digest your registry resolves the tag to (`docker buildx imagetools inspect
# rust:1.95.0-bookworm`), as FROM rust:1.95.0-bookworm@sha256:<digest>.
FROM rust:1.95.0-bookworm AS build
WORKDIR /src

# Dependencies first, in their own layer: reused until Cargo.toml or Cargo.lock change. Cargo
# reads the manifest's [[bench]] targets, so their files have to be present for `cargo fetch`.
COPY Cargo.toml Cargo.lock ./
COPY benches/*.rs ./benches/
RUN cargo fetch --locked

COPY src ./src
# src/ embeds policies/default.toml (include_str!) as the built-in example policy.
COPY policies ./policies
# Default features: jsonwebtoken and rustls on aws-lc-rs. aws-lc-sys compiles its C sources with
# the image's gcc (its "CC" builder): no cmake, clang, Go or NASM needed. Every crate was
# fetched above, so this step needs no network. The cache mount keeps compiled dependencies
# between builds on the same builder; the binary leaves it in the same step.
# tests/dockerfile_build.rs asserts this command is exactly `cargo build --release --locked`.
RUN --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
    && install -D -m 0755 target/release/ably-tokend /out/ably-tokend

# ---- runtime -----------------------------------------------------------------------------
# debian-slim rather than distroless: the HEALTHCHECK needs an HTTP client (curl), and the
# binary needs glibc and libgcc_s (ldd: libgcc_s, libm, libc) and the CA roots.
FROM debian:bookworm-slim AS runtime

# ca-certificates: /etc/ssl/certs, the roots rustls-platform-verifier trusts for the issuers'
# https JWKS endpoints. curl: the HEALTHCHECK. User 10001 is numeric in USER below so that
# Kubernetes' runAsNonRoot can verify it.
# DL3008 (pin apt package versions) is ignored on purpose: bookworm's mirrors keep only the
# current version of a package, so a pinned version stops installing at the next security
# update; the base tag itself is what pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ably-tokend \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin ably-tokend

COPY --from=build /out/ably-tokend /usr/local/bin/ably-tokend
# Example policies only, owned by root and read-only for the service user: mount your own
# policies over /etc/ably-tokend/policies/ (deploy/kubernetes mounts a ConfigMap there).
COPY policies/default.toml policies/support-chat.toml /etc/ably-tokend/policies/

# No configuration and no secret are baked in. Mount the config at
# /etc/ably-tokend/ably-tokend.toml and pass the key as ABLY_API_KEY at run time. The working
# directory makes the default `[policy] path = "policies/default.toml"` resolve to
# /etc/ably-tokend/policies/default.toml.
WORKDIR /etc/ably-tokend
# In a container the sidecar must listen beyond loopback (the config's default is
# 127.0.0.1:8080). This overrides `[server] bind` in the file: to change the port, set this
# variable (and the HEALTHCHECK's URL) rather than the file.
# DL3064 (sensitive data in ENV) is a false positive: it matches "TOKEN" in the name
# ABLY_TOKEND_*, and the value is a listen address.
# hadolint ignore=DL3064
ENV ABLY_TOKEND_SERVER__BIND=0.0.0.0:8080
USER 10001:10001
EXPOSE 8080
# /healthz answers 200 while the process runs (readiness, /readyz, is for orchestrators that
# route traffic; Kubernetes ignores HEALTHCHECK and uses the probes in deploy/kubernetes).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["curl", "--fail", "--silent", "--show-error", "--max-time", "3", "--output", "/dev/null", "http://127.0.0.1:8080/healthz"]
# SIGTERM (the default stop signal) drains in-flight requests within server.shutdown_timeout.
STOPSIGNAL SIGTERM
ENTRYPOINT ["ably-tokend"]
CMD ["serve", "--config", "/etc/ably-tokend/ably-tokend.toml"]
