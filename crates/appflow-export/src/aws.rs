//! The AWS SDK configuration shared by the AppFlow and S3 clients.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_appflow::config::SharedCredentialsProvider;
use aws_sdk_appflow::config::retry::{RetryPartition, TokenBucket};

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

/// An AppFlow client; `endpoint` overrides `AWS_ENDPOINT_URL_APPFLOW`. The extractor
/// sends its requests through its own `CallGate` (an adaptive limit of calls in
/// flight per account and region); the SDK retries.
pub fn appflow_client(sdk: &SdkConfig, endpoint: Option<&str>) -> aws_sdk_appflow::Client {
    let attempts = sdk.retry_config().map_or(3, RetryConfig::max_attempts);
    let mut config = aws_sdk_appflow::config::Builder::from(sdk)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(attempts)
                .with_initial_backoff(THROTTLED_BACKOFF),
        )
        .retry_partition(own_partition());
    if let Some(url) = endpoint {
        config = config.endpoint_url(url);
    }
    aws_sdk_appflow::Client::from_conf(config.build())
}

/// The first retry of an AppFlow call waits up to this long (then twice as long each
/// time, with full jitter, up to 20 s: the SDK's standard backoff, from a lower base
/// than its 1 s). What keeps an account's calls under its quota is the gate's limit of
/// calls in flight, not each call's wait: a throttled call's wait only holds up its
/// own flow, and with 1 s a flow throttled near the end of a backfill held up the
/// whole run (BENCHMARKS.md, issue 20).
const THROTTLED_BACKOFF: Duration = Duration::from_millis(100);

/// A retry partition of the client's own. The SDK's default one (`appflow-<region>`)
/// is shared by every AppFlow client of the process: one account's retries would spend
/// another's retry quota. Throttled attempts cost no quota (the gate answers
/// throttling by lowering the limit, and each call has its `--max-attempts`): a storm
/// of throttling does not use up the quota that 5xx errors and timeouts draw on.
fn own_partition() -> RetryPartition {
    let quota = TokenBucket::builder().throttling_retry_cost(0).build();
    RetryPartition::custom("appflow-export")
        .token_bucket(quota)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_appflow_client_retries_in_a_custom_partition_in_standard_mode() {
        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-2"))
            .build();
        let client = appflow_client(&sdk, Some("http://127.0.0.1:1"));
        let partition = client.config().retry_partition();
        // A custom partition owns its token bucket (retry quota) (the SDK shares those of
        // default partitions by name, and never those of custom ones); a partition
        // compares by kind and name.
        assert_eq!(
            partition,
            Some(&RetryPartition::custom("appflow-export").build())
        );
        assert_ne!(partition, Some(&RetryPartition::new("appflow-eu-west-2")));
        let retry = client.config().retry_config();
        assert_eq!(
            retry.map(|r| (r.mode(), r.initial_backoff())),
            Some((aws_config::retry::RetryMode::Standard, THROTTLED_BACKOFF))
        );
    }
}
