//! Where an incremental read of a flow may stop (the design's "Incremental semantics").

use std::time::Duration;

/// What the previous runs left for a flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    /// The newest `startedAt` exported (epoch ms); `None` for a flow never exported.
    pub watermark: Option<i64>,
    /// The `startedAt` of the oldest run still open when last exported (epoch ms).
    pub oldest_open: Option<i64>,
}

/// How far back an incremental read goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IncrementalPolicy {
    /// Re-read this much before the watermark, for runs that appear late.
    pub lookback: Duration,
    /// An open run older than this is stuck: it holds the cutoff back no more (a
    /// backfill still updates it).
    pub max_open_age: Duration,
}

impl Default for IncrementalPolicy {
    fn default() -> Self {
        IncrementalPolicy {
            lookback: Duration::from_secs(3600),
            max_open_age: Duration::from_secs(7 * 86_400),
        }
    }
}

/// The oldest `startedAt` (epoch ms, inclusive) an incremental read must return:
/// `min(watermark, oldest_open) - lookback`, where an open run older than
/// `max_open_age` ([`open_since`]) holds nothing back at all: reading back to it, or to
/// any cap, would not find it changed. (The reader leaves such runs out of the oldest
/// open run it records, so a stuck run never hides a newer open one.) `None`: read the
/// whole history.
pub fn cutoff(resume: Resume, policy: IncrementalPolicy, now_ms: i64) -> Option<i64> {
    let watermark = resume.watermark?;
    let held = match resume.oldest_open {
        Some(open) if open >= open_since(policy, now_ms) => watermark.min(open),
        _ => watermark,
    };
    Some(held.saturating_sub(millis(policy.lookback)))
}

/// The start before which an open run is stuck: `now - max_open_age`.
pub fn open_since(policy: IncrementalPolicy, now_ms: i64) -> i64 {
    now_ms.saturating_sub(millis(policy.max_open_age))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const DAY: i64 = 24 * H;

    fn check(watermark: Option<i64>, oldest_open: Option<i64>, now: i64, expected: Option<i64>) {
        let got = cutoff(
            Resume {
                watermark,
                oldest_open,
            },
            IncrementalPolicy::default(),
            now,
        );
        assert_eq!(
            got, expected,
            "watermark {watermark:?}, oldest_open {oldest_open:?}"
        );
    }

    #[test]
    fn never_exported_reads_everything() {
        check(None, None, 100 * DAY, None);
    }

    #[test]
    fn lookback_before_watermark() {
        check(Some(50 * DAY), None, 51 * DAY, Some(50 * DAY - H));
    }

    #[test]
    fn open_run_holds_cutoff_back() {
        check(Some(50 * DAY), Some(48 * DAY), 51 * DAY, Some(48 * DAY - H));
    }

    #[test]
    fn open_run_newer_than_watermark_does_not_move_it() {
        check(
            Some(50 * DAY),
            Some(50 * DAY + H),
            51 * DAY,
            Some(50 * DAY - H),
        );
    }

    #[test]
    fn an_open_run_older_than_max_open_age_holds_nothing_back() {
        // Open for 30 days, now is day 60: the read stops at the watermark's lookback.
        check(Some(59 * DAY), Some(30 * DAY), 60 * DAY, Some(59 * DAY - H));
        // Exactly max_open_age (7 days) old, it still holds; a millisecond older, not.
        check(Some(59 * DAY), Some(53 * DAY), 60 * DAY, Some(53 * DAY - H));
        check(
            Some(59 * DAY),
            Some(53 * DAY - 1),
            60 * DAY,
            Some(59 * DAY - H),
        );
    }
}
