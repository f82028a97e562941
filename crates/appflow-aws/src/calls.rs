//! Counting what a client sends: every attempt (a retried call counts once per
//! attempt, as AWS meters it) and the attempts AWS answered with throttling. An SDK
//! interceptor, so retries made inside the SDK are counted too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Attempts and throttled attempts of the clients it is added to (clones share them).
#[derive(Clone, Debug, Default)]
pub struct CallCounter {
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    attempts: AtomicU64,
    throttled: AtomicU64,
}

/// What a [`CallCounter`] has seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    /// Requests sent (each retry is one more).
    pub attempts: u64,
    /// Of those, answered with throttling (HTTP 429, or an error type naming
    /// throttling): each is retried by the SDK after a backoff.
    pub throttled: u64,
}

impl std::ops::Sub for Calls {
    type Output = Calls;

    fn sub(self, earlier: Calls) -> Calls {
        Calls {
            attempts: self.attempts.saturating_sub(earlier.attempts),
            throttled: self.throttled.saturating_sub(earlier.throttled),
        }
    }
}

impl CallCounter {
    pub fn calls(&self) -> Calls {
        Calls {
            attempts: self.counts.attempts.load(Ordering::Relaxed),
            throttled: self.counts.throttled.load(Ordering::Relaxed),
        }
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "appflow_aws::CallCounter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.counts.attempts.fetch_add(1, Ordering::Relaxed);
        if let Some(response) = context.response() {
            let kind = response.headers().get("x-amzn-errortype").unwrap_or("");
            if response.status().as_u16() == 429 || kind.starts_with("Throttling") {
                self.counts.throttled.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}
