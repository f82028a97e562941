//! An AWS SDK configuration that talks to a running emulator (feature `client`):
//! the one way the crates' tests build their clients.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::generate::DEFAULT_REGION;
use crate::server::RunningEmulator;

/// Fixed test credentials, the emulator's region, every service's endpoint at the
/// emulator (it answers AppFlow and STS `GetCallerIdentity`), and quick retries.
pub async fn sdk_config(emulator: &RunningEmulator) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(DEFAULT_REGION))
        .test_credentials()
        .endpoint_url(emulator.endpoint())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(8)
                .with_initial_backoff(Duration::from_millis(5)),
        )
        .load()
        .await
}
