# appflow-export as a container image (ECS, AWS Batch, Kubernetes):
#   docker build -t appflow-export .
#   docker run --rm -e AWS_REGION=eu-west-1 -e APPFLOW_EXPORT_DEST=s3://my-data-lake/appflow-runs appflow-export
# It bakes no configuration: options come from the task's environment
# (APPFLOW_EXPORT_<OPTION>), flags, or a mounted --config file; with none the run
# says which option is missing.
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
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/appflow-export"]
CMD ["run"]
