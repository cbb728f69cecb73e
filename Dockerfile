# registry-gate as a small static image.
#
#   docker build -t registry-gate .          (or: buildah bud -t registry-gate .)
#   docker run -p 443:5443 -v ./certs:/certs:ro -v ./auth:/auth:ro \
#     -e REGISTRY_GATE_LISTEN=0.0.0.0:5443 -e REGISTRY_GATE_UPSTREAM=http://registry:5000 \
#     -e REGISTRY_GATE_TLS_CERT=/certs/server.pem -e REGISTRY_GATE_TLS_KEY=/certs/server.key \
#     -e REGISTRY_GATE_AUTH_HTPASSWD=/auth/htpasswd registry-gate
#
# or mount a gate.toml and add `--config /etc/registry-gate/gate.toml` after the image name.

# --- build: a static musl binary ---------------------------------------------------------------
# Rust 1.88 or newer (edition 2024, let chains).
# TLS uses aws-lc-rs: aws-lc-sys compiles AWS-LC with the C compiler (musl-gcc from musl-tools;
# its builder ships x86_64-unknown-linux-musl bindings, so neither cmake, clang nor Go is needed).
# Checked on the development machine (2026-12-07) outside docker, with Debian 12's musl-tools
# and rustup's x86_64-unknown-linux-musl target: the cargo command below built a static-pie
# binary that served TLS, bcrypt logins and the registry API. The image build itself was not run
# there (no access to the base images).
FROM rust:1-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --target x86_64-unknown-linux-musl \
 && cp target/x86_64-unknown-linux-musl/release/registry-gate /registry-gate

# --- run: no shell, no package manager, CA certificates for an https upstream, a non-root user -
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /registry-gate /usr/local/bin/registry-gate
USER 65532:65532
EXPOSE 5443 9095
ENTRYPOINT ["registry-gate", "serve"]
