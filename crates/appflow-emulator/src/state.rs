//! The emulator's state: flows and runs, faults, counters, and the mutations tests use.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::generate::{self, GenConfig};
use crate::model::{Flow, Millis};

/// Faults injected into the AppFlow operations (never into the admin endpoints).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Fraction (0..=1) of calls answered with 429 `ThrottlingException`.
    pub throttle_fraction: f64,
    /// Delay added to every call, in milliseconds.
    pub latency_ms: u64,
    /// The next this-many calls fail with 500 `InternalServerException`.
    pub fail_next: u32,
    /// Serve each flow's runs in a shuffled (but stable) order instead of newest-first.
    pub shuffled: bool,
    /// Flows whose `DescribeFlowExecutionRecords` pages are truncated JSON, except a
    /// first page that has a next page: a malformed response after good ones.
    pub malformed_flows: Vec<String>,
    /// The account's request rate limit, requests per second over all AppFlow
    /// operations (a token bucket holding `rate_burst` requests, refilled at this
    /// rate): a request finding the bucket empty is answered 429
    /// `ThrottlingException`, as AWS answers a rate above an account's quota.
    /// `None`: no limit.
    pub rate_limit: Option<f64>,
    /// The bucket's size (requests that may come at once); `None`: one second's worth.
    pub rate_burst: Option<f64>,
    /// Every AppFlow call is answered 403 `AccessDeniedException`, as AWS answers a
    /// role without AppFlow permissions.
    pub access_denied: bool,
    /// Every this-many-th call (counted from when these faults were set) is answered
    /// with 429 `ThrottlingException`: throttling that does not follow the request
    /// rate, by counting (`throttle_fraction` does it at random).
    pub throttle_every: Option<u64>,
    /// Faults that change during a run, by counting: once this many calls were made
    /// since these faults were set, a phase's faults replace them (the rest of the
    /// schedule goes on; a schedule inside a phase is ignored).
    pub schedule: Vec<Phase>,
    /// `ListFlows` shows `lastRunExecutionDetails` without `mostRecentExecutionTime`:
    /// a listing that tells a last run's status only (AWS documents none of its
    /// members as always present).
    pub listing_without_time: bool,
}

/// A phase of [`Faults::schedule`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Phase {
    /// Calls since the faults were set before this phase starts.
    pub after_calls: u64,
    pub faults: Faults,
}

/// One AppFlow call as the emulator saw it (`GET /_emulator/calls`), in the order
/// they arrived: what tests and benchmarks read the client's concurrency from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// When it arrived, epoch milliseconds.
    pub at_ms: i64,
    pub operation: String,
    /// Calls in flight when it arrived, itself included (a call is in flight until
    /// its latency is over and its answer is decided).
    pub in_flight: u64,
    /// Answered with an injected throttle.
    pub throttled: bool,
}

/// The calls log keeps at most this many calls (the oldest are dropped): about 20 MB.
pub const CALLS_KEPT: usize = 200_000;

/// Calls to one operation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpCounter {
    /// Every request received, whatever its answer.
    pub calls: u64,
    /// Answered with an injected throttle.
    pub throttled: u64,
    /// Answered with an injected 500.
    pub failed: u64,
}

/// Call counters, readable by tests through [`Emulator::counters`] or
/// `GET /_emulator/counters`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// By operation name (`ListFlows`, `DescribeFlow`, `DescribeFlowExecutionRecords`).
    pub operations: BTreeMap<String, OpCounter>,
    /// `DescribeFlowExecutionRecords` requests by flow name.
    pub describe_calls_by_flow: BTreeMap<String, u64>,
}

/// New runs to append to flows' histories.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AddRuns {
    /// Runs to add to each flow.
    pub count: usize,
    /// Only these flows (all when empty).
    pub flows: Vec<String>,
    /// Status of the new runs (a random realistic one when absent). Any string is
    /// accepted, so a test can add a status AWS may introduce later.
    pub status: Option<String>,
    /// Start time of the first new run, epoch milliseconds (default: after the
    /// flow's newest run).
    pub start: Option<i64>,
}

pub(crate) struct State {
    /// The account the emulated service belongs to (STS `GetCallerIdentity`).
    pub account: String,
    pub flows: BTreeMap<String, Flow>,
    pub faults: Faults,
    pub counters: Counters,
    pub rng: StdRng,
    pub seed: u64,
    /// The rate limit's bucket: tokens left, and when it was last refilled.
    pub bucket: Option<(f64, std::time::Instant)>,
    /// Calls since the faults were set (for `throttle_every` and `schedule`).
    pub calls_since_faults: u64,
    /// Calls whose latency is not over yet.
    pub in_flight: u64,
    /// Every call, oldest first (at most [`CALLS_KEPT`]).
    pub calls: std::collections::VecDeque<Call>,
    /// Calls ever logged (the newest's number plus one).
    pub calls_logged: u64,
}

impl State {
    /// Counts a call arriving against the faults in force: moves to the schedule's
    /// next phase when its time has come; whether `throttle_every` throttles it.
    pub(crate) fn arrive(&mut self) -> bool {
        self.calls_since_faults += 1;
        let n = self.calls_since_faults;
        while self
            .faults
            .schedule
            .first()
            .is_some_and(|p| n > p.after_calls)
        {
            let mut rest = std::mem::take(&mut self.faults.schedule);
            let phase = rest.remove(0);
            self.faults = Faults {
                schedule: rest,
                ..phase.faults
            };
            self.bucket = None;
        }
        self.faults
            .throttle_every
            .is_some_and(|every| every > 0 && n.is_multiple_of(every))
    }

    /// A call is in flight from now: logged (the oldest call dropped past
    /// [`CALLS_KEPT`]) with the calls in flight; returns its number for
    /// [`State::call_throttled`].
    pub(crate) fn start_call(&mut self, operation: &str) -> u64 {
        self.in_flight += 1;
        if self.calls.len() >= CALLS_KEPT {
            self.calls.pop_front();
        }
        self.calls.push_back(Call {
            at_ms: generate::now_millis(),
            operation: operation.to_string(),
            in_flight: self.in_flight,
            throttled: false,
        });
        self.calls_logged += 1;
        self.calls_logged - 1
    }

    /// Marks call `number` throttled, if the log still holds it (it may have dropped
    /// its oldest calls, or been emptied, meanwhile).
    pub(crate) fn call_throttled(&mut self, number: u64) {
        let first = self.calls_logged - self.calls.len() as u64;
        if let Some(call) = number
            .checked_sub(first)
            .and_then(|i| self.calls.get_mut(i as usize))
        {
            call.throttled = true;
        }
    }

    /// Takes a token from the rate limit's bucket; `false` when the request is over
    /// the limit. Refilled when the faults change (a new limit starts full).
    pub(crate) fn within_rate(&mut self) -> bool {
        let Some(rate) = self.faults.rate_limit.filter(|r| *r > 0.0) else {
            return true;
        };
        let burst = self.faults.rate_burst.unwrap_or(rate).max(1.0);
        let now = std::time::Instant::now();
        let (tokens, last) = self.bucket.get_or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A handle on the emulated service; clones share the same state.
#[derive(Clone)]
pub struct Emulator {
    pub(crate) state: Arc<Mutex<State>>,
}

impl Emulator {
    /// An emulator serving the history generated from `cfg`.
    pub fn generate(cfg: &GenConfig) -> Self {
        Self::from_flows(generate::generate(cfg), cfg.seed, &cfg.account)
    }

    /// An emulator of `account` serving the given flows.
    pub fn from_flows(flows: Vec<Flow>, seed: u64, account: &str) -> Self {
        let flows = flows
            .into_iter()
            .map(|mut f| {
                f.sort_records();
                (f.definition.flow_name.clone(), f)
            })
            .collect();
        Emulator {
            state: Arc::new(Mutex::new(State {
                account: account.to_string(),
                flows,
                faults: Faults::default(),
                counters: Counters::default(),
                rng: StdRng::seed_from_u64(seed ^ 0x5eed_f00d),
                seed,
                bucket: None,
                calls_since_faults: 0,
                in_flight: 0,
                calls: std::collections::VecDeque::new(),
                calls_logged: 0,
            })),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every flow with its runs, newest first: what the API would page through.
    pub fn snapshot(&self) -> Vec<Flow> {
        self.lock().flows.values().cloned().collect()
    }

    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        let mut st = self.lock();
        st.faults = faults;
        st.bucket = None;
        st.calls_since_faults = 0;
    }

    pub fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }

    /// Resets the counters and the calls log.
    pub fn reset_counters(&self) {
        let mut st = self.lock();
        st.counters = Counters::default();
        st.calls.clear();
    }

    /// Every call since the counters were reset, in the order they arrived.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.iter().cloned().collect()
    }

    /// Appends runs to flows; returns `(flow, execution_id)` of each new run.
    pub fn add_runs(&self, req: &AddRuns) -> Vec<(String, String)> {
        let mut st = self.lock();
        let State { flows, rng, .. } = &mut *st;
        let mut added = Vec::new();
        for flow in flows.values_mut() {
            let name = flow.definition.flow_name.clone();
            if !req.flows.is_empty() && !req.flows.contains(&name) {
                continue;
            }
            let newest = flow
                .records
                .first()
                .map_or(generate::now_millis(), |r| r.started_at.0);
            let mut at = req.start.unwrap_or(newest + 60_000);
            let with_catalog = flow
                .records
                .iter()
                .any(|r| r.metadata_catalog_details.is_some());
            for _ in 0..req.count {
                let status = req.status.clone().unwrap_or_else(|| {
                    if rng.random_bool(0.3) {
                        "InProgress"
                    } else {
                        "Successful"
                    }
                    .to_string()
                });
                let rec = generate::make_record(rng, at, 3_600_000, &status, with_catalog, &name);
                added.push((name.clone(), rec.execution_id.clone()));
                flow.records.push(rec);
                at += rng.random_range(60_000..600_000);
            }
            flow.sort_records();
        }
        added
    }

    /// Ends every open run (of `flows`, or all flows when empty) with a final status
    /// and a later `lastUpdatedAt`; returns how many changed.
    pub fn finish_open_runs(&self, flows: &[String]) -> usize {
        let mut st = self.lock();
        let State {
            flows: all, rng, ..
        } = &mut *st;
        let now = generate::now_millis();
        let mut n = 0;
        for flow in all.values_mut() {
            if !flows.is_empty() && !flows.contains(&flow.definition.flow_name) {
                continue;
            }
            let name = flow.definition.flow_name.clone();
            let with_catalog = flow
                .records
                .iter()
                .any(|r| r.metadata_catalog_details.is_some());
            for rec in flow.records.iter_mut().filter(|r| r.is_open()) {
                generate::finish_record(rng, rec, now, with_catalog.then_some(name.as_str()));
                n += 1;
            }
        }
        n
    }

    /// Forgets runs started before `before` (epoch ms), as AWS retention does, of
    /// `flows` (all flows when empty); returns how many were dropped.
    pub fn drop_runs_before(&self, before: i64, flows: &[String]) -> usize {
        let mut st = self.lock();
        let mut n = 0;
        for flow in st.flows.values_mut() {
            if !flows.is_empty() && !flows.contains(&flow.definition.flow_name) {
                continue;
            }
            let len = flow.records.len();
            if let Some(details) = flow.last_run_details() {
                flow.definition.last_run_execution_details = Some(details);
            }
            flow.records.retain(|r| r.started_at >= Millis(before));
            n += len - flow.records.len();
        }
        n
    }

    /// Deletes flows (runs included), as `DeleteFlow` does; returns how many existed.
    pub fn delete_flows(&self, names: &[String]) -> usize {
        let mut st = self.lock();
        names
            .iter()
            .filter(|n| st.flows.remove(n.as_str()).is_some())
            .count()
    }

    /// Deletes flows and creates each again under its name (as `DeleteFlow` then
    /// `CreateFlow` do): the same ARN, made of the name, a new `createdAt`, no runs and
    /// no last-run details; returns how many existed.
    pub fn recreate_flows(&self, names: &[String]) -> usize {
        let mut st = self.lock();
        let now = generate::now_millis();
        let mut n = 0;
        for name in names {
            if let Some(flow) = st.flows.get_mut(name) {
                flow.records.clear();
                let def = &mut flow.definition;
                def.last_run_execution_details = None;
                def.created_at = Millis(now.max(def.created_at.0 + 1));
                def.last_updated_at = def.created_at;
                n += 1;
            }
        }
        n
    }

    /// Sets the status of flows (as activating or suspending them does) and bumps
    /// their `lastUpdatedAt`; returns how many exist.
    pub fn set_flow_status(&self, names: &[String], status: &str) -> usize {
        let mut st = self.lock();
        let now = generate::now_millis();
        let mut n = 0;
        for name in names {
            if let Some(flow) = st.flows.get_mut(name) {
                let def = &mut flow.definition;
                def.flow_status = status.to_string();
                def.last_updated_at = Millis(now.max(def.last_updated_at.0 + 1));
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_lets_a_burst_through_then_its_rate() {
        let emu = Emulator::from_flows(Vec::new(), 1, "123456789012");
        emu.set_faults(Faults {
            rate_limit: Some(50.0),
            rate_burst: Some(5.0),
            ..Faults::default()
        });
        let passed = |n: usize| (0..n).filter(|_| emu.lock().within_rate()).count();
        assert_eq!(
            passed(20),
            5,
            "a full bucket lets its burst through, no more"
        );
        let slept = std::time::Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(100));
        // At 50 a second the bucket refills one token per 20 ms slept (however long
        // the scheduler let the sleep last), up to its 5.
        let refilled = ((slept.elapsed().as_secs_f64() * 50.0) as usize).min(5);
        assert!((refilled..=refilled + 1).contains(&passed(20)));
        emu.set_faults(Faults::default());
        assert_eq!(passed(100), 100, "no limit");
    }

    #[test]
    fn a_schedule_changes_the_faults_after_so_many_calls_and_throttle_every_counts() {
        let emu = Emulator::from_flows(Vec::new(), 1, "123456789012");
        let phase = |after_calls, faults| Phase {
            after_calls,
            faults,
        };
        emu.set_faults(Faults {
            latency_ms: 5,
            schedule: vec![
                phase(
                    3,
                    Faults {
                        throttle_every: Some(2),
                        ..Faults::default()
                    },
                ),
                phase(
                    7,
                    Faults {
                        latency_ms: 9,
                        ..Faults::default()
                    },
                ),
            ],
            ..Faults::default()
        });
        let mut seen = Vec::new();
        for _ in 0..9 {
            let mut st = emu.lock();
            let throttled = st.arrive();
            seen.push((st.faults.latency_ms, throttled));
        }
        // Calls 1-3 under the first faults, 4-7 under the first phase (the 4th and
        // 6th throttled: every 2nd call since the faults were set), then the second.
        assert_eq!(
            seen,
            [
                (5, false),
                (5, false),
                (5, false),
                (0, true),
                (0, false),
                (0, true),
                (0, false),
                (9, false),
                (9, false)
            ]
        );
        assert!(emu.faults().schedule.is_empty());
    }
}
