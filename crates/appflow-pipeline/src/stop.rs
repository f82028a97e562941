//! Asking a run to stop early and cleanly (the CLI does on SIGTERM or SIGINT): it
//! starts no new flow, gives the flows in flight `Plan::stop_timeout` to end, commits
//! what ended and records that it was interrupted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// A request to stop, shared by whoever asks (clones share it) and the run.
#[derive(Clone, Debug, Default)]
pub struct Stop {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Why the run was asked to stop (say, `SIGTERM`); `None` until it is.
    reason: Mutex<Option<String>>,
    asked: Notify,
}

impl Stop {
    /// Asks the run to stop; the first reason given is the one recorded.
    pub fn request(&self, reason: impl Into<String>) {
        let mut slot = self.inner.reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(reason.into());
        }
        drop(slot);
        self.inner.asked.notify_waiters();
    }

    /// Why the run was asked to stop, once it was.
    pub fn requested(&self) -> Option<String> {
        self.inner
            .reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Resolves once a stop was asked for.
    pub async fn asked(&self) {
        loop {
            // Registered before the check, so a request in between is not missed.
            let notified = self.inner.asked.notified();
            if self.requested().is_some() {
                return;
            }
            notified.await;
        }
    }

    /// Resolves `grace` after a stop was asked for: when the flows in flight are
    /// given up.
    pub(crate) async fn grace_over(&self, grace: Duration) {
        self.asked().await;
        tokio::time::sleep(grace).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_wakes_whoever_waits_and_the_first_reason_stays() {
        let stop = Stop::default();
        assert_eq!(stop.requested(), None);
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move { stop.asked().await }
        });
        tokio::task::yield_now().await;
        stop.request("SIGTERM");
        stop.request("SIGINT");
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter is woken")
            .expect("the waiter ends");
        assert_eq!(stop.requested().as_deref(), Some("SIGTERM"));
        // Asked already: resolves at once.
        tokio::time::timeout(Duration::from_secs(5), stop.asked())
            .await
            .expect("resolves at once");
    }
}
