# appflow-export as a container image (ECS, AWS Batch, Kubernetes):
#   docker build -t appflow-export .
#   docker buildx build --platform linux/arm64 -t appflow-export .   # for Graviton (or linux/amd64)
#   docker run --rm -e AWS_REGION=eu-west-1 -e APPFLOW_EXPORT_DEST=s3://my-data-lake/appflow-runs appflow-export
# deploy/README.md pushes it to ECR. It bakes no configuration: options come from the
# task's environment (APPFLOW_EXPORT_<OPTION>), flags, or a mounted --config file; with
# none the run says which option is missing.
# Stage 1 builds the release binary without debug information (its symbols kept, so a
# panic's backtrace names functions) for the platform asked for (built on it, or under
# emulation: buildx's QEMU, registered on Linux hosts with binfmt; slow for the AWS SDK
# and Arrow; nothing is cross-compiled). Its crates and build folder are BuildKit cache
# mounts (Docker 23 and later), locked while in use, so on a builder that keeps its
# cache a rebuild after a change compiles only the crates that changed; an ephemeral CI
# runner starts from nothing each time. Stage 2 is a slim runtime with CA certificates
# (the AWS SDK verifies TLS), run as a non-root user.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    cargo build --release --locked -p appflow-export \
 && cp target/release/appflow-export /appflow-export

FROM debian:bookworm-slim
# ca-certificates is Debian's current one for bookworm: a pinned version would break the
# build when Debian replaces it (security updates).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 appflow \
 && useradd --system --uid 10001 --gid 10001 --no-create-home appflow \
 && install -d -o 10001 -g 10001 -m 0700 /var/tmp/appflow-export
COPY --from=build /appflow-export /usr/local/bin/appflow-export
# The staging files' folder, the one place the job writes to on its own disk: a volume
# owned by the job's user, so that it stays writable under a read-only root file
# system (the task definitions mount a volume here; Fargate's bind mount of a path the
# image declares keeps its owner, aws/containers-roadmap#938).
ENV TMPDIR=/var/tmp/appflow-export
VOLUME ["/var/tmp/appflow-export"]
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/appflow-export"]
CMD ["run"]
