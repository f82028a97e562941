# appflow-export as a container image (ECS, AWS Batch, Kubernetes):
#   docker build -t appflow-export .
#   docker run --rm appflow-export run --dest s3://my-data-lake/appflow-runs
# Stage 1 builds the release binary; stage 2 is a slim runtime with CA certificates
# (the AWS SDK verifies TLS) that runs it as a non-root user.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN cargo build --release --locked -p appflow-export \
 && cp target/release/appflow-export /appflow-export

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 appflow \
 && useradd --system --uid 10001 --gid 10001 --no-create-home appflow
COPY --from=build /appflow-export /usr/local/bin/appflow-export
# The default config: override it with a mounted file, or with flags.
COPY jobs/config.toml /etc/appflow-export/config.toml
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/appflow-export"]
CMD ["run", "--config", "/etc/appflow-export/config.toml"]
