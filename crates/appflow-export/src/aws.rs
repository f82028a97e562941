//! The AWS SDK configuration shared by the AppFlow and S3 clients.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_appflow::config::SharedCredentialsProvider;
use aws_sdk_appflow::config::retry::{ClientRateLimiter, RetryPartition, TokenBucket};

/// Retry and timeout policy handed to the SDK: standard retries (throttling and
/// 5xx, exponential backoff with jitter), and timeouts so that an unreachable or
/// silent endpoint ends in an error after the retries, never a hang.
pub fn loader(max_attempts: u32) -> aws_config::ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(max_attempts))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .read_timeout(Duration::from_secs(60))
                .operation_attempt_timeout(Duration::from_secs(90))
                .build(),
        )
}

/// The standard AWS configuration (credential chain, `AWS_REGION`, profiles,
/// `AWS_ENDPOINT_URL_*`), with `--region` on top.
pub async fn from_env(max_attempts: u32, region: Option<String>) -> SdkConfig {
    let mut loader = loader(max_attempts);
    if let Some(region) = region {
        loader = loader.region(Region::new(region));
    }
    loader.load().await
}

/// `base` for another region (same credentials).
pub fn in_region(base: &SdkConfig, region: &str) -> SdkConfig {
    base.to_builder()
        .region(Region::new(region.to_string()))
        .build()
}

/// `base` with the credentials of `role_arn`, assumed with `base`'s own through STS in
/// `region` (aws-config's `AssumeRoleProvider`, which refreshes them before they
/// expire; nothing is called until the first request), sending `external_id`.
pub async fn assume(
    base: &SdkConfig,
    role_arn: &str,
    region: &str,
    external_id: Option<&str>,
) -> SdkConfig {
    let region = Region::new(region.to_string());
    let mut provider = aws_config::sts::AssumeRoleProvider::builder(role_arn)
        .session_name("appflow-export")
        .configure(base)
        .region(region.clone());
    if let Some(id) = external_id {
        provider = provider.external_id(id);
    }
    let provider = provider.build().await;
    base.to_builder()
        .credentials_provider(SharedCredentialsProvider::new(provider))
        .region(region)
        .build()
}

/// An AppFlow client; `endpoint` overrides `AWS_ENDPOINT_URL_APPFLOW`; `calls` counts
/// its attempts and throttled attempts.
pub fn appflow_client(
    sdk: &SdkConfig,
    endpoint: Option<&str>,
    calls: &appflow_extract::CallCounter,
) -> aws_sdk_appflow::Client {
    // Adaptive retries: on top of the standard policy, a client-side rate limiter
    // that slows the client down when AWS throttles it and speeds up again after,
    // so a backfill runs at the rate the account allows instead of bursting into
    // its limit (BENCHMARKS.md).
    let attempts = sdk.retry_config().map_or(3, RetryConfig::max_attempts);
    let mut config = aws_sdk_appflow::config::Builder::from(sdk)
        .retry_config(RetryConfig::adaptive().with_max_attempts(attempts))
        .retry_partition(own_partition())
        .interceptor(calls.clone());
    if let Some(url) = endpoint {
        config = config.endpoint_url(url);
    }
    aws_sdk_appflow::Client::from_conf(config.build())
}

/// A retry partition of the client's own. The SDK's default one (`appflow-<region>`)
/// is shared by every AppFlow client of the process: one account's throttling would
/// slow the next account's export (`--role-arn` with several roles) down to its rate,
/// and one's retries would spend the other's retry quota. Each account and region has
/// its own limits at AWS, so each client gets its own rate limiter and token bucket.
fn own_partition() -> RetryPartition {
    // The limiter starts as the SDK's own does: at the lowest rate, enabled only once
    // AWS first throttles the client.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    RetryPartition::custom("appflow-export")
        .client_rate_limiter(ClientRateLimiter::new(now))
        .token_bucket(TokenBucket::default())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_appflow_client_retries_adaptively_in_a_custom_partition() {
        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-2"))
            .build();
        let calls = appflow_extract::CallCounter::default();
        let client = appflow_client(&sdk, Some("http://127.0.0.1:1"), &calls);
        let partition = client.config().retry_partition();
        // A custom partition owns its limiter and token bucket (the SDK shares those of
        // default partitions by name, and never those of custom ones); a partition
        // compares by kind and name.
        assert_eq!(
            partition,
            Some(&RetryPartition::custom("appflow-export").build())
        );
        assert_ne!(partition, Some(&RetryPartition::new("appflow-eu-west-2")));
        let mode = client.config().retry_config().map(|r| r.mode());
        assert_eq!(mode, Some(aws_config::retry::RetryMode::Adaptive));
    }
}
