//! The AppFlow calls of one account and region go through one [`CallGate`]: at most
//! its [`AdaptiveLimit`] in flight, every attempt counted, every answer fed back to the
//! limit. It sits in the client's HTTP stack ([`CallGate::http_client`]), below the
//! SDK's retries: each attempt takes a slot and gives it back when answered, so a call
//! waiting out its backoff after a throttle holds no slot, and a retry queues for one
//! like any other call.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::shared::IntoShared;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::limit::{AdaptiveLimit, Answer};

/// What a [`CallGate`] has seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    /// Requests sent (each retry is one more).
    pub attempts: u64,
    /// Of those, answered with throttling (HTTP 429, or an error type naming
    /// throttling): each is retried by the SDK after a backoff.
    pub throttled: u64,
    /// Calls allowed in flight at most (`--concurrency`).
    pub ceiling: usize,
    /// The lowest and the highest the limit of calls in flight was (see
    /// [`CallGate::calls`] for since when).
    pub lowest: usize,
    pub highest: usize,
}

impl std::ops::Sub for Calls {
    type Output = Calls;

    /// The attempts and throttled attempts since `earlier`; the limit as `self` says.
    fn sub(self, earlier: Calls) -> Calls {
        Calls {
            attempts: self.attempts.saturating_sub(earlier.attempts),
            throttled: self.throttled.saturating_sub(earlier.throttled),
            ..self
        }
    }
}

/// The calls of one account and region: clones share the limit and the counts.
#[derive(Clone)]
pub struct CallGate {
    inner: Arc<Inner>,
}

struct Inner {
    /// One permit per call that may start now; shrunk lazily (see `owed`).
    slots: Arc<Semaphore>,
    state: Mutex<State>,
}

struct State {
    limit: AdaptiveLimit,
    /// Permits to forget as calls end: the limit fell below the calls in flight.
    owed: usize,
    /// Calls waiting for a slot.
    waiting: usize,
    attempts: u64,
    throttled: u64,
    lowest: usize,
    highest: usize,
}

impl fmt::Debug for CallGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let calls = self.peek();
        f.debug_struct("CallGate").field("calls", &calls).finish()
    }
}

impl CallGate {
    /// A gate letting at most `ceiling` (at least 1) calls be in flight, starting there.
    pub fn new(ceiling: usize) -> Self {
        let limit = AdaptiveLimit::new(ceiling);
        let n = limit.limit();
        CallGate {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(n)),
                state: Mutex::new(State {
                    limit,
                    owed: 0,
                    waiting: 0,
                    attempts: 0,
                    throttled: 0,
                    lowest: n,
                    highest: n,
                }),
            }),
        }
    }

    /// The most calls it lets be in flight.
    pub fn ceiling(&self) -> usize {
        self.state().limit.ceiling()
    }

    /// The calls so far, and the lowest and highest limit since the previous
    /// `take_calls` (or the start), which this one starts afresh: a run takes them at
    /// its start and at its end.
    pub fn take_calls(&self) -> Calls {
        let mut st = self.state();
        let calls = Self::counts(&st);
        let now = st.limit.limit();
        (st.lowest, st.highest) = (now, now);
        calls
    }

    fn peek(&self) -> Calls {
        Self::counts(&self.state())
    }

    fn counts(st: &State) -> Calls {
        Calls {
            attempts: st.attempts,
            throttled: st.throttled,
            ceiling: st.limit.ceiling(),
            lowest: st.lowest,
            highest: st.highest,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Only counters and the limit live here: a panic elsewhere leaves them usable.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a slot under the current limit (first come, first served).
    pub async fn enter(&self) -> Slot {
        let slots = &self.inner.slots;
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                // Only a call that waits makes the limit what holds calls back.
                let _waiting = Waiting::new(self);
                // The semaphore is never closed: `Err` cannot happen, and would let
                // the call through rather than stop the export.
                slots.clone().acquire_owned().await.ok()
            }
        };
        let mut st = self.state();
        st.attempts += 1;
        Slot {
            gate: self.clone(),
            permit,
            epoch: st.limit.epoch(),
            sent: Instant::now(),
        }
    }

    fn leave(&self, slot: &mut Slot, throttled: Option<bool>) {
        let mut st = self.state();
        if let Some(throttled) = throttled {
            st.throttled += u64::from(throttled);
            let answer = Answer {
                throttled,
                latency: slot.sent.elapsed(),
            };
            let saturated = st.waiting > 0;
            if let Some(change) = st
                .limit
                .answer(slot.epoch, answer, saturated, Instant::now())
            {
                if change.to < change.from {
                    let fewer = change.from - change.to;
                    let forgotten = self.inner.slots.forget_permits(fewer);
                    st.owed += fewer - forgotten;
                } else {
                    let more = change.to - change.from;
                    let repaid = st.owed.min(more);
                    st.owed -= repaid;
                    self.inner.slots.add_permits(more - repaid);
                }
                st.lowest = st.lowest.min(change.to);
                st.highest = st.highest.max(change.to);
                tracing::debug!(
                    from = change.from,
                    to = change.to,
                    "AppFlow calls in flight limited to {}",
                    change.to
                );
            }
        }
        if let Some(permit) = slot.permit.take() {
            if st.owed > 0 {
                st.owed -= 1;
                permit.forget();
            } else {
                drop(permit);
            }
        }
    }

    /// `inner` with every request sent through this gate.
    pub fn http_client(&self, inner: SharedHttpClient) -> SharedHttpClient {
        GatedClient {
            inner,
            gate: self.clone(),
        }
        .into_shared()
    }
}

/// Counts a call as waiting while it waits (also when the wait is given up).
struct Waiting<'a>(&'a CallGate);

impl<'a> Waiting<'a> {
    fn new(gate: &'a CallGate) -> Self {
        gate.state().waiting += 1;
        Waiting(gate)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.state().waiting -= 1;
    }
}

/// A call in flight. [`Slot::answered`] gives the slot back with what AWS answered;
/// dropped unanswered (the attempt timed out, the connection failed), it gives the
/// slot back and tells the limit nothing.
pub struct Slot {
    gate: CallGate,
    permit: Option<OwnedSemaphorePermit>,
    epoch: u64,
    sent: Instant,
}

impl Slot {
    pub fn answered(mut self, throttled: bool) {
        let gate = self.gate.clone();
        gate.leave(&mut self, Some(throttled));
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.permit.is_some() {
            let gate = self.gate.clone();
            gate.leave(self, None);
        }
    }
}

/// Whether AWS throttled a call: HTTP 429, or an error type naming throttling
/// (`ThrottlingException`; AWS sends some throttling with other statuses).
pub fn is_throttling(response: &HttpResponse) -> bool {
    let kind = response.headers().get("x-amzn-errortype").unwrap_or("");
    response.status().as_u16() == 429 || kind.starts_with("Throttling")
}

#[derive(Debug)]
struct GatedClient {
    inner: SharedHttpClient,
    gate: CallGate,
}

impl HttpClient for GatedClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(GatedConnector {
            inner: self.inner.http_connector(settings, components),
            gate: self.gate.clone(),
        })
    }

    fn validate_base_client_config(
        &self,
        runtime_components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponentsBuilder,
        cfg: &aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        self.inner
            .validate_base_client_config(runtime_components, cfg)
    }

    fn validate_final_config(
        &self,
        runtime_components: &RuntimeComponents,
        cfg: &aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        self.inner.validate_final_config(runtime_components, cfg)
    }

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

#[derive(Debug)]
struct GatedConnector {
    inner: SharedHttpConnector,
    gate: CallGate,
}

impl HttpConnector for GatedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let (inner, gate) = (self.inner.clone(), self.gate.clone());
        HttpConnectorFuture::new(async move {
            let slot = gate.enter().await;
            let response = inner.call(request).await;
            match &response {
                Ok(answer) => slot.answered(is_throttling(answer)),
                Err(_) => drop(slot),
            }
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::WINDOW;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Calls through `gate`, `tasks` at once, each answered after `latency`
    /// (throttled when `throttled(i)`); returns the most that were in flight at once.
    async fn load(
        gate: &CallGate,
        tasks: usize,
        calls: usize,
        throttled: impl Fn(usize) -> bool + Send + Sync + 'static,
    ) -> usize {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let next = Arc::new(AtomicUsize::new(0));
        let throttled = Arc::new(throttled);
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let (gate, in_flight, peak, next, throttled) = (
                gate.clone(),
                in_flight.clone(),
                peak.clone(),
                next.clone(),
                throttled.clone(),
            );
            handles.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= calls {
                        return;
                    }
                    let slot = gate.enter().await;
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    slot.answered(throttled(i));
                }
            }));
        }
        for h in handles {
            h.await.expect("task");
        }
        peak.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn no_more_calls_are_in_flight_than_the_ceiling_and_each_is_counted() {
        let gate = CallGate::new(3);
        let peak = load(&gate, 12, 200, |_| false).await;
        assert_eq!(peak, 3);
        let calls = gate.take_calls();
        assert_eq!((calls.attempts, calls.throttled), (200, 0));
        assert_eq!((calls.ceiling, calls.lowest, calls.highest), (3, 3, 3));
    }

    #[tokio::test]
    async fn sustained_throttling_leaves_fewer_calls_in_flight_until_it_stops() {
        let gate = CallGate::new(6);
        // Past the first limit's probation (throttling then would hold the climb).
        load(&gate, 12, WINDOW as usize * 4, |_| false).await;
        gate.take_calls();
        let n = WINDOW as usize * 8;
        load(&gate, 12, n, |_| true).await;
        let calls = gate.take_calls();
        assert_eq!((calls.lowest, calls.highest), (1, 6));
        assert_eq!(
            (calls.attempts, calls.throttled),
            ((WINDOW as usize * 4 + n) as u64, n as u64)
        );
        // Under the limit of one: one call at a time.
        let peak = load(&gate, 12, WINDOW as usize - 1, |_| false).await;
        assert_eq!(peak, 1);
        // Then it climbs back to the ceiling, one clean window at a time.
        load(&gate, 12, WINDOW as usize * 8, |_| false).await;
        let calls = gate.take_calls();
        assert_eq!((calls.lowest, calls.highest), (1, 6));
        assert_eq!(load(&gate, 12, 200, |_| false).await, 6);
        let calls = gate.take_calls();
        assert_eq!((calls.lowest, calls.highest), (6, 6));
    }

    #[tokio::test]
    async fn a_call_given_up_while_waiting_or_in_flight_frees_what_it_held() {
        let gate = CallGate::new(1);
        let held = gate.enter().await;
        let waiter = tokio::time::timeout(Duration::from_millis(20), gate.enter()).await;
        assert!(waiter.is_err(), "the one slot is taken");
        drop(held); // unanswered: a timeout, a broken connection
        let again = tokio::time::timeout(Duration::from_secs(5), gate.enter()).await;
        assert!(again.is_ok(), "the slot came back");
        assert_eq!(gate.state().waiting, 0);
        assert_eq!(gate.take_calls().attempts, 2);
    }
}
