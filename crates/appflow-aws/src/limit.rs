//! How many AppFlow calls of one account and region may be in flight at once: a limit
//! that follows what AWS answers. Pure arithmetic on answers and the time they came,
//! so tests drive it with a clock of their own; [`crate::CallGate`] applies it.
//!
//! The rules (README "AWS's rate limits" says them for operators):
//! - The limit is judged by windows of [`WINDOW`] answers to calls started under it.
//!   A window is *throttled* when at least [`SUSTAINED`] of its answers were
//!   throttling: a single throttle, or throttling that does not follow our rate (AWS
//!   throttling some calls at random, whatever we send), never lowers the limit.
//! - A throttled window lowers the limit to the concurrency its successful answers
//!   would have needed (`limit x (1 - throttled fraction)`, at least one less, at
//!   least 1): an account at its quota is met in one step, not by halving again and
//!   again, each step costing a window of throttled calls.
//! - A clean window raises the limit by one, up to the ceiling (`--concurrency`),
//!   when calls were waiting for a slot (the limit was what held them back) and the
//!   window's latency is not more than [`LATENCY_GROWTH`] times its running mean (a
//!   slowing service is not given more calls).
//! - A raised limit is on probation for [`PROBATION`] windows, and so is the first
//!   limit of a run: meanwhile (and in the first window of a lowered limit)
//!   [`EARLY_THROTTLES`] throttled answers at the [`SUSTAINED`] fraction end the window
//!   early, so that a probe past the account's quota, or a step down that was not
//!   enough, costs a few throttled calls, not a window of them. A limit lowered while
//!   on probation (a failed probe: the account's quota is near) is not raised again
//!   for a hold that doubles with each failed probe ([`HOLD_FIRST`] to
//!   [`HOLD_MAX`]), and while a hold is set a raised limit must pass its probation
//!   before the next raise. A limit that passes its probation clears the hold: after
//!   throttling that was not ours (a storm of it, throttling even one call at a time)
//!   the limit climbs back one window at a time.

use std::time::{Duration, Instant};

/// Answers that make a window's verdict.
pub const WINDOW: u32 = 20;
/// The fraction of a window's answers that, throttled, make it a throttled window.
pub const SUSTAINED: f64 = 0.35;
/// While on probation, this many throttled answers at the [`SUSTAINED`] fraction end
/// a window early.
pub const EARLY_THROTTLES: u32 = 5;
/// Clean windows a raised limit must pass before it is trusted.
pub const PROBATION: u32 = 3;
/// The hold after the first failed probe; each further one doubles it.
pub const HOLD_FIRST: Duration = Duration::from_secs(2);
/// The longest hold: how long an account held at its quota waits before it tries
/// one more call in flight.
pub const HOLD_MAX: Duration = Duration::from_secs(30);
/// A window whose mean latency is more than this times the running mean does not
/// raise the limit.
pub const LATENCY_GROWTH: f64 = 2.0;
/// The weight of a new window in the running mean of latency.
const LATENCY_WEIGHT: f64 = 0.2;

/// What AWS answered one call.
#[derive(Clone, Copy, Debug)]
pub struct Answer {
    /// AWS throttled the call (HTTP 429, or an error type naming throttling).
    pub throttled: bool,
    /// From sending the request to its answer.
    pub latency: Duration,
}

/// A change of the limit, as [`AdaptiveLimit::answer`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub from: usize,
    pub to: usize,
}

/// The limit of calls in flight, and the window being judged.
#[derive(Clone, Debug)]
pub struct AdaptiveLimit {
    ceiling: usize,
    limit: usize,
    /// Bumped at every change: answers to calls started under an older limit are not
    /// evidence about this one.
    epoch: u64,
    window: Window,
    /// Clean windows passed since the last raise (or the start); `None` once trusted.
    probation: Option<u32>,
    /// Lowered, and no window of the new limit judged yet: it may end early too.
    lowered: bool,
    /// Raised and on probation: a probe, judged from its first throttle on.
    probing: bool,
    hold: Duration,
    lowered_at: Option<Instant>,
    /// Running mean of the windows' mean latency, seconds.
    latency_mean: Option<f64>,
}

#[derive(Clone, Debug, Default)]
struct Window {
    answers: u32,
    throttled: u32,
    /// Answers since the first throttled one, itself included.
    since_throttle: u32,
    /// A call was waiting for a slot when an answer came.
    saturated: bool,
    /// Latency of the answers that were not throttled.
    latency: Duration,
}

impl AdaptiveLimit {
    /// A limit starting at `ceiling` (at least 1), on probation.
    pub fn new(ceiling: usize) -> Self {
        let ceiling = ceiling.max(1);
        AdaptiveLimit {
            ceiling,
            limit: ceiling,
            epoch: 0,
            window: Window::default(),
            probation: Some(0),
            lowered: false,
            probing: false,
            hold: Duration::ZERO,
            lowered_at: None,
            latency_mean: None,
        }
    }

    /// Calls that may be in flight now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The highest the limit may go (`--concurrency`).
    pub fn ceiling(&self) -> usize {
        self.ceiling
    }

    /// Names the current limit: a call records it when it starts and hands it back
    /// with its answer.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Takes the answer to a call started under `epoch`; `saturated`: another call
    /// was waiting for a slot. Returns the change of the limit, if this answer ended a
    /// window that moved it.
    pub fn answer(
        &mut self,
        epoch: u64,
        answer: Answer,
        saturated: bool,
        now: Instant,
    ) -> Option<Change> {
        if epoch != self.epoch {
            return None;
        }
        let w = &mut self.window;
        w.answers += 1;
        if answer.throttled {
            w.throttled += 1;
        } else {
            w.latency += answer.latency;
        }
        if answer.throttled || w.since_throttle > 0 {
            w.since_throttle += 1;
        }
        w.saturated |= saturated;
        let fraction = f64::from(w.throttled) / f64::from(w.answers);
        let throttled = fraction >= SUSTAINED;
        // A probe past a quota answers cleanly until the quota's burst is spent: its
        // throttling is judged from the first throttle on.
        let recent = f64::from(w.throttled) / f64::from(w.since_throttle.max(1));
        let early = w.throttled >= EARLY_THROTTLES
            && ((throttled && (self.probation.is_some() || self.lowered))
                || (self.probing && recent >= SUSTAINED));
        let fraction = if early && !throttled {
            recent
        } else {
            fraction
        };
        let throttled = throttled || early;
        if w.answers < WINDOW && !early {
            return None;
        }
        let window = std::mem::take(&mut self.window);
        self.lowered = false;
        let from = self.limit;
        if throttled {
            self.lower(fraction, now);
        } else {
            self.consider_raising(&window, now);
        }
        (self.limit != from).then(|| {
            self.epoch += 1;
            Change {
                from,
                to: self.limit,
            }
        })
    }

    fn lower(&mut self, fraction: f64, now: Instant) {
        self.probing = false;
        if self.probation.take().is_some() {
            self.hold = (self.hold * 2).clamp(HOLD_FIRST, HOLD_MAX);
        }
        let fit = (self.limit as f64 * (1.0 - fraction)).floor() as usize;
        let lowered = fit.min(self.limit - 1).max(1);
        if lowered < self.limit {
            self.limit = lowered;
            self.lowered_at = Some(now);
            self.lowered = true;
        }
    }

    fn consider_raising(&mut self, window: &Window, now: Instant) {
        let ok = window.answers - window.throttled;
        let latency = (ok > 0).then(|| window.latency.as_secs_f64() / f64::from(ok));
        let calm = match (latency, self.latency_mean) {
            (Some(now), Some(mean)) => now <= mean * LATENCY_GROWTH,
            _ => true,
        };
        if let Some(latency) = latency {
            self.latency_mean = Some(match self.latency_mean {
                Some(mean) => mean + LATENCY_WEIGHT * (latency - mean),
                None => latency,
            });
        }
        if let Some(passed) = &mut self.probation {
            *passed += 1;
            if *passed >= PROBATION {
                self.probation = None;
                self.probing = false;
                self.hold = Duration::ZERO;
            }
        }
        let held = self
            .lowered_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.hold);
        // Near a quota (a hold is set), one step at a time, each proven first.
        let proven = self.hold.is_zero() || self.probation.is_none();
        if window.saturated && calm && !held && proven && self.limit < self.ceiling {
            self.limit += 1;
            self.probation = Some(0);
            self.probing = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Drives a limit with a clock of its own: each answer comes `step` after the last.
    struct Drive {
        limit: AdaptiveLimit,
        now: Instant,
        step: Duration,
        changes: Vec<Change>,
    }

    impl Drive {
        fn new(ceiling: usize) -> Self {
            Drive {
                limit: AdaptiveLimit::new(ceiling),
                now: Instant::now(),
                step: 10 * MS,
                changes: Vec::new(),
            }
        }

        /// A limit of 8 past its first probation.
        fn trusted() -> Self {
            let mut d = Drive::new(8);
            d.answers(WINDOW as usize * PROBATION as usize, |_| false);
            d
        }

        /// A limit of 8 past its first probation, then lowered to 1 by a window of
        /// throttles that was not a failed probe (no hold).
        fn lowered_to_one() -> Self {
            let mut d = Drive::trusted();
            d.answers(WINDOW as usize, |_| true);
            assert_eq!(d.limit.limit(), 1);
            d
        }

        /// One answer, `step` after the last, to a call of the current limit.
        fn answer(
            &mut self,
            throttled: bool,
            latency: Duration,
            saturated: bool,
        ) -> Option<Change> {
            self.now += self.step;
            let epoch = self.limit.epoch();
            let answer = Answer { throttled, latency };
            let change = self.limit.answer(epoch, answer, saturated, self.now);
            self.changes.extend(change);
            change
        }

        /// `n` answers of 50 ms, throttled where `throttled(i)`, with calls waiting
        /// for a slot.
        fn answers(&mut self, n: usize, throttled: impl Fn(usize) -> bool) -> &mut Self {
            for i in 0..n {
                self.answer(throttled(i), 50 * MS, true);
            }
            self
        }

        fn wait(&mut self, d: Duration) -> &mut Self {
            self.now += d;
            self
        }
    }

    #[test]
    fn a_steady_tenth_of_calls_throttled_never_lowers_the_limit() {
        // Every 10th call throttled, or 2 in a row now and then: 10% and bursts of it.
        let mut d = Drive::new(8);
        d.answers(10_000, |i| i % 10 == 0);
        d.answers(10_000, |i| i % 20 < 2);
        assert_eq!(d.changes, []);
        assert_eq!(d.limit.limit(), 8);
    }

    #[test]
    fn a_tenth_of_calls_throttled_at_random_costs_little_of_the_limit() {
        // A window may happen to hold 7 throttles of 20 (about 1 in 400): then the
        // limit steps down and climbs back. Seeded, so the test says the same each time.
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % 1000
        };
        let mut d = Drive::new(8);
        let (n, mut sum) = (50_000, 0);
        for _ in 0..n {
            d.answer(random() < 100, 50 * MS, true);
            sum += d.limit.limit();
        }
        let mean = sum as f64 / f64::from(n);
        assert!(
            mean > 7.8,
            "a mean limit of {mean:.2} of 8 ({:?})",
            d.changes
        );
    }

    #[test]
    fn a_throttled_window_lowers_the_limit_to_what_its_successes_needed() {
        let mut d = Drive::new(8);
        d.answers(WINDOW as usize * 3, |_| false); // past its probation
        // Half of a window throttled: 8 x 0.5.
        d.answers(WINDOW as usize, |i| i % 2 == 0);
        assert_eq!(d.changes, [Change { from: 8, to: 4 }]);
        // All of it: the floor.
        d.answers(WINDOW as usize, |_| true);
        assert_eq!(d.changes[1], Change { from: 4, to: 1 });
        d.answers(WINDOW as usize * 5, |_| true);
        assert_eq!(d.limit.limit(), 1, "never below one call");
        assert_eq!(d.changes.len(), 2);
    }

    #[test]
    fn a_window_just_under_the_threshold_is_clean_and_one_at_it_is_throttled() {
        let at = (SUSTAINED * f64::from(WINDOW)).ceil() as usize; // 7 of 20
        let mut d = Drive::trusted();
        d.answers(WINDOW as usize, |i| i < at - 1);
        assert_eq!(d.changes, [], "{} of {WINDOW}", at - 1);
        d.answers(WINDOW as usize, |i| i < at);
        assert_eq!(d.changes, [Change { from: 8, to: 5 }], "{at} of {WINDOW}");
    }

    #[test]
    fn after_throttling_stops_the_limit_climbs_back_one_window_at_a_time() {
        let mut d = Drive::trusted();
        d.answers(WINDOW as usize * 10, |_| true); // a storm
        assert_eq!(d.limit.limit(), 1);
        // The storm was not caused by our rate (it throttled even one call at a
        // time): nothing holds the climb, one step per clean window (the first window
        // after the storm may still hold some of it).
        let storm = d.changes.len();
        d.answers(WINDOW as usize * 8, |_| false);
        assert_eq!(d.limit.limit(), 8);
        let climb = &d.changes[storm..];
        assert!(climb.iter().all(|c| c.to == c.from + 1), "{climb:?}");
        d.answers(WINDOW as usize * 3, |_| false);
        assert_eq!(d.limit.limit(), 8, "never above the ceiling");
    }

    #[test]
    fn a_limit_that_is_not_what_holds_calls_back_is_not_raised() {
        let mut d = Drive::lowered_to_one();
        for _ in 0..WINDOW * 5 {
            assert_eq!(d.answer(false, 50 * MS, false), None);
        }
    }

    #[test]
    fn a_slowing_service_is_not_given_more_calls() {
        let mut d = Drive::lowered_to_one();
        let mut at = |latency: Duration, n: u32| -> Vec<Change> {
            (0..n)
                .filter_map(|_| d.answer(false, latency, true))
                .collect()
        };
        // Latency five times its running mean: no raise.
        assert_eq!(at(250 * MS, WINDOW), []);
        // Settled there (the mean follows): raised again.
        assert_ne!(at(250 * MS, WINDOW * 10), []);
    }

    #[test]
    fn probes_past_a_quota_cost_a_few_throttles_and_back_off() {
        let mut d = Drive::lowered_to_one();
        // One clean window: raised to 2 (on probation).
        d.answers(WINDOW as usize, |_| false);
        assert_eq!(d.limit.limit(), 2);
        // Half of its calls throttled: lowered after EARLY_THROTTLES, not a window's worth.
        let before = d.changes.len();
        d.answers(2 * EARLY_THROTTLES as usize, |i| i % 2 == 1);
        assert_eq!(d.changes[before..], [Change { from: 2, to: 1 }]);
        // Held for HOLD_FIRST: clean windows within it raise nothing...
        let step = d.step;
        d.answers(
            (HOLD_FIRST.as_millis() / step.as_millis()) as usize - 1,
            |_| false,
        );
        assert_eq!(d.limit.limit(), 1);
        // ...then the next one does; a second failed probe doubles the hold.
        d.answers(WINDOW as usize, |_| false);
        assert_eq!(d.limit.limit(), 2);
        d.answers(2 * EARLY_THROTTLES as usize, |i| i % 2 == 1);
        assert_eq!(d.limit.limit(), 1);
        d.wait(HOLD_FIRST * 2 - 10 * MS).answers(1, |_| false);
        d.answers(WINDOW as usize - 2, |_| false);
        assert_eq!(d.limit.limit(), 1, "held for twice as long");
        d.wait(20 * MS).answers(WINDOW as usize, |_| false);
        assert_eq!(d.limit.limit(), 2);
        // Near the quota, the next step waits until this one has passed its probation.
        d.answers(WINDOW as usize * (PROBATION as usize - 1), |_| false);
        assert_eq!(d.limit.limit(), 2);
        d.answers(WINDOW as usize, |_| false);
        assert_eq!(d.limit.limit(), 3);
    }

    #[test]
    fn a_probe_is_judged_from_its_first_throttle_on() {
        let mut d = Drive::lowered_to_one();
        d.answers(WINDOW as usize, |_| false);
        assert_eq!(d.limit.limit(), 2, "raised: a probe");
        // The quota's burst lets 8 calls through, then every other call is throttled:
        // lowered at the 5th throttle, though the window as a whole is under 35%.
        let before = d.changes.len();
        let burst = 8;
        d.answers(burst + 2 * EARLY_THROTTLES as usize - 1, |i| {
            i >= burst && (i - burst) % 2 == 0
        });
        assert_eq!(d.changes[before..], [Change { from: 2, to: 1 }]);
    }

    #[test]
    fn answers_to_calls_started_under_an_older_limit_are_not_judged() {
        let mut d = Drive::trusted();
        let old = d.limit.epoch();
        d.answers(WINDOW as usize, |_| true);
        assert_eq!(d.limit.limit(), 1);
        let throttled = Answer {
            throttled: true,
            latency: 50 * MS,
        };
        for _ in 0..WINDOW * 3 {
            assert_eq!(d.limit.answer(old, throttled, true, d.now), None);
        }
        // The window of the new limit was not filled by them.
        d.answers(WINDOW as usize, |_| false);
        assert_eq!(d.limit.limit(), 2);
    }

    /// A token bucket (an account's quota) served serially by a simulated client of
    /// `slots` calls in flight, each `latency` long: throttled answers and calls.
    fn against_quota(
        rate: f64,
        burst: f64,
        latency: Duration,
        calls: usize,
    ) -> (usize, usize, Duration) {
        let start = Instant::now();
        let mut limit = AdaptiveLimit::new(8);
        let (mut tokens, mut refilled) = (burst, start);
        // Each slot: when its call answers, and the epoch it started under.
        let mut in_flight: Vec<(Instant, u64)> = (0..limit.limit())
            .map(|i| (start + latency + MS * i as u32, limit.epoch()))
            .collect();
        let (mut done, mut throttled, mut attempts) = (0, 0, 0);
        let mut now = start;
        while done < calls {
            in_flight.sort();
            let (at, epoch) = in_flight.remove(0);
            now = at;
            tokens = (tokens + (now - refilled).as_secs_f64() * rate).min(burst);
            refilled = now;
            let ok = tokens >= 1.0;
            if ok {
                tokens -= 1.0;
                done += 1;
            } else {
                throttled += 1;
            }
            attempts += 1;
            let answer = Answer {
                throttled: !ok,
                latency,
            };
            limit.answer(epoch, answer, true, now);
            while in_flight.len() < limit.limit() {
                in_flight.push((now + latency, limit.epoch()));
            }
        }
        (attempts, throttled, now - start)
    }

    #[test]
    fn at_an_accounts_quota_few_calls_are_throttled_and_the_quota_is_used() {
        // 20 requests a second, a burst of 20, 50 ms a call: one call in flight is
        // just under the quota. 1,000 calls take 50 s at the quota.
        let (attempts, throttled, took) = against_quota(20.0, 20.0, 50 * MS, 1_000);
        let share = throttled as f64 / attempts as f64;
        assert!(share < 0.05, "{throttled} of {attempts} throttled");
        let floor = Duration::from_secs(50);
        assert!(took < floor.mul_f64(1.1), "{took:?} against {floor:?}");
    }
}
