//! Where an incremental read of a flow may stop, whether it is read at all, and what
//! its end says of runs AWS no longer holds (the design's "Incremental semantics").

use std::time::Duration;

use appflow_model::LastRun;

/// What the previous runs left for a flow, and what this run's listing shows of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    /// The newest `startedAt` exported (epoch ms); `None` for a flow never exported.
    pub watermark: Option<i64>,
    /// The `startedAt` of the oldest run still open when last exported (epoch ms).
    pub oldest_open: Option<i64>,
    /// Whether the flow's pages came newest-first when it was last read.
    pub pages_sorted: bool,
    /// When the last incremental run that read the flow started (epoch ms); `None`:
    /// no incremental run read it (a backfill does not count: it may end in the past).
    pub read_ms: Option<i64>,
    /// What the listing showed of the flow's last run when that run read it.
    pub last_run_read: Option<LastRun>,
    /// How many incremental runs' reads of the flow the state held (it decides
    /// whose view of open runs is kept when runs overlap; 0 when none).
    pub reads: u64,
    /// What this run's listing shows of it.
    pub last_run_listed: Option<LastRun>,
    /// When the flow this run's listing shows was created (epoch ms). A flow deleted
    /// and created again keeps its name (and ARN, which is made of the name), so its
    /// state is that of the flow before it; a creation after the watermark tells them
    /// apart.
    pub created_ms: Option<i64>,
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
/// `min(watermark, oldest_open) - lookback`. An open run older than `max_open_age`
/// ([`open_since`]) is stuck: reading back to it would not find it changed, so it holds
/// the read back only to `open_since`, once: the state keeps only the oldest open run,
/// and a newer one may be older than the watermark's lookback. That read finds it (the
/// reader leaves stuck runs out of the oldest open run it records), and the stuck run
/// holds nothing back after it. `None`: read the whole history.
pub fn cutoff(resume: &Resume, policy: IncrementalPolicy, now_ms: i64) -> Option<i64> {
    let watermark = resume.watermark?;
    let held = match resume.oldest_open {
        Some(open) => watermark.min(open.max(open_since(policy, now_ms))),
        None => watermark,
    };
    Some(held.saturating_sub(millis(policy.lookback)))
}

/// The start before which an open run is stuck: `now - max_open_age`.
pub fn open_since(policy: IncrementalPolicy, now_ms: i64) -> i64 {
    now_ms.saturating_sub(millis(policy.max_open_age))
}

/// Whether `--skip-unchanged` leaves the flow unread in this run: its listing shows
/// the same last run (time and status) as when it was last read, it had no open run
/// then, its pages came newest-first, and it was read less than `recheck_every` ago.
/// A listing that shows no last run, or no time for it (two runs with the same
/// status would look the same), or a flow never read, is always read, and so is a
/// flow whose last read is after `now_ms`: a host whose clock is ahead wrote it, and
/// counting the recheck from it would put the recheck off by that much.
pub fn unchanged(resume: &Resume, recheck_every: Duration, now_ms: i64) -> bool {
    let (Some(read_ms), Some(listed)) = (resume.read_ms, &resume.last_run_listed) else {
        return false;
    };
    if listed.at_ms.is_none() {
        return false;
    }
    resume.watermark.is_some()
        && resume.oldest_open.is_none()
        && resume.pages_sorted
        && resume.last_run_read.as_ref() == Some(listed)
        && (0..millis(recheck_every)).contains(&now_ms.saturating_sub(read_ms))
}

/// When the flow was created, if that was after its watermark: a flow deleted and
/// created again under its name (the same ARN) since its last export, whose state is
/// its predecessor's.
pub fn created_again(resume: &Resume) -> Option<i64> {
    let watermark = resume.watermark?;
    resume.created_ms.filter(|created| *created > watermark)
}

/// Run starts AWS no longer returns that the export may never have read: runs
/// started after `after_ms` and before `before_ms` (epoch ms) may be lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionGap {
    pub after_ms: i64,
    pub before_ms: i64,
}

/// What a read to the end of a flow's history says of runs AWS dropped. The newest
/// run exported (the watermark) is no longer returned when every run returned
/// (`oldest_returned`, of all runs on the pages, kept or not) started after it: runs
/// started in between, if there were any, were dropped before any export read them.
/// When AWS returns no run at all, a listing that shows another last run than at the
/// flow's last read is the only evidence of runs since: the window ends at its time.
/// A read that stopped at its cutoff saw a run at or before the watermark, so this is
/// `Some` only for a read to the end.
///
/// A flow created after its watermark was deleted and created again under its name:
/// the exported runs are its predecessor's, so their absence says nothing. Only a
/// listing that shows a run of its own while AWS returns none tells of a loss, from
/// its creation to that run.
pub fn retention_gap(resume: &Resume, oldest_returned: Option<i64>) -> Option<RetentionGap> {
    let watermark = resume.watermark?;
    let created_again = created_again(resume);
    let (after_ms, before_ms) = match oldest_returned {
        Some(oldest) if created_again.is_none() => (watermark, oldest),
        Some(_) => return None,
        None => {
            let (listed, read) = (
                resume.last_run_listed.as_ref()?,
                resume.last_run_read.as_ref(),
            );
            // A listing that shows the run it showed at the last read tells of nothing
            // new (and a gap found then is not found again). Without a record of the
            // listing at the last read (state written before it was kept, a flow only
            // backfilled) there is no evidence of a run since, unless the flow is new.
            if read == Some(listed) || (read.is_none() && created_again.is_none()) {
                return None;
            }
            // From the run the listing showed at the last read if that is later: a gap
            // found then covered what came before it.
            let floor = created_again.unwrap_or(watermark);
            let after = read.and_then(|r| r.at_ms).map_or(floor, |at| at.max(floor));
            (after, listed.at_ms?)
        }
    };
    (before_ms > after_ms).then_some(RetentionGap {
        after_ms,
        before_ms,
    })
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
            &Resume {
                watermark,
                oldest_open,
                ..Resume::default()
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
    fn an_open_run_older_than_max_open_age_holds_the_read_back_only_to_the_cap() {
        // Open for 30 days, now is day 60: the read goes back to the cap (day 53), which
        // finds a newer open run older than the watermark's lookback.
        check(Some(59 * DAY), Some(30 * DAY), 60 * DAY, Some(53 * DAY - H));
        // Exactly max_open_age (7 days) old, it holds; a millisecond older, the cap does.
        check(Some(59 * DAY), Some(53 * DAY), 60 * DAY, Some(53 * DAY - H));
        check(
            Some(59 * DAY),
            Some(53 * DAY - 1),
            60 * DAY,
            Some(53 * DAY - H),
        );
        check(Some(59 * DAY), Some(55 * DAY), 60 * DAY, Some(55 * DAY - H));
        // A watermark older than the cap is where the read stops.
        check(Some(40 * DAY), Some(30 * DAY), 60 * DAY, Some(40 * DAY - H));
    }

    fn listed(at: i64, status: &str) -> Option<LastRun> {
        Some(LastRun {
            at_ms: Some(at),
            status: Some(status.to_string()),
        })
    }

    /// A flow read at day 50 (its watermark 49), its listing unchanged since.
    fn quiet() -> Resume {
        Resume {
            watermark: Some(49 * DAY),
            oldest_open: None,
            pages_sorted: true,
            read_ms: Some(50 * DAY),
            last_run_read: listed(49 * DAY, "Successful"),
            last_run_listed: listed(49 * DAY, "Successful"),
            reads: 3,
            created_ms: Some(DAY),
        }
    }

    #[test]
    fn a_flow_is_skipped_only_while_everything_says_nothing_happened() {
        let every = Duration::from_secs(3600);
        let now = 50 * DAY + H - 1;
        assert!(unchanged(&quiet(), every, now));
        // Due for its recheck.
        assert!(!unchanged(&quiet(), every, 50 * DAY + H));
        let read_unless = |change: fn(&mut Resume)| {
            let mut r = quiet();
            change(&mut r);
            assert!(!unchanged(&r, every, now), "{r:?}");
        };
        read_unless(|r| r.last_run_listed = listed(49 * DAY + 1, "Successful"));
        read_unless(|r| r.last_run_listed = listed(49 * DAY, "Error"));
        read_unless(|r| r.last_run_listed = None);
        // A status without a time: another run with the same status looks the same.
        read_unless(|r| {
            let status_only = listed(49 * DAY, "Successful").map(|l| LastRun { at_ms: None, ..l });
            r.last_run_listed.clone_from(&status_only);
            r.last_run_read = status_only;
        });
        read_unless(|r| r.last_run_read = None);
        read_unless(|r| r.oldest_open = Some(49 * DAY));
        read_unless(|r| r.pages_sorted = false);
        read_unless(|r| r.read_ms = None);
        // Read by a host whose clock is ahead of this one's.
        read_unless(|r| r.read_ms = Some(50 * DAY + H));
        read_unless(|r| r.watermark = None);
    }

    #[test]
    fn a_read_that_still_returns_the_watermark_has_no_gap() {
        assert_eq!(retention_gap(&quiet(), Some(49 * DAY)), None);
        assert_eq!(retention_gap(&quiet(), Some(10 * DAY)), None);
        // Never exported: nothing to have lost.
        assert_eq!(retention_gap(&Resume::default(), Some(60 * DAY)), None);
    }

    #[test]
    fn a_read_that_returns_only_runs_after_the_watermark_names_the_window() {
        let gap = RetentionGap {
            after_ms: 49 * DAY,
            before_ms: 70 * DAY,
        };
        assert_eq!(retention_gap(&quiet(), Some(70 * DAY)), Some(gap));
        assert_eq!(
            retention_gap(&quiet(), Some(49 * DAY + 1)).map(|g| g.before_ms),
            Some(49 * DAY + 1)
        );
    }

    #[test]
    fn an_empty_history_is_a_gap_only_when_the_listing_shows_a_run_since_the_last_read() {
        // Everything dropped, no run since: the listing shows what it showed then.
        assert_eq!(retention_gap(&quiet(), None), None);
        let ran = Resume {
            last_run_listed: listed(55 * DAY, "Successful"),
            ..quiet()
        };
        assert_eq!(
            retention_gap(&ran, None),
            Some(RetentionGap {
                after_ms: 49 * DAY,
                before_ms: 55 * DAY
            })
        );
        let silent = Resume {
            last_run_listed: None,
            ..quiet()
        };
        assert_eq!(retention_gap(&silent, None), None);
        // Found, and a later run dropped too: the window starts at the one found.
        let again = Resume {
            last_run_read: listed(55 * DAY, "Successful"),
            last_run_listed: listed(57 * DAY, "Error"),
            ..quiet()
        };
        assert_eq!(
            retention_gap(&again, None),
            Some(RetentionGap {
                after_ms: 55 * DAY,
                before_ms: 57 * DAY
            })
        );
        // No record of the listing at the last read (an older state file): no evidence.
        let unrecorded = Resume {
            last_run_read: None,
            ..ran
        };
        assert_eq!(retention_gap(&unrecorded, None), None);
    }

    #[test]
    fn a_flow_created_again_after_its_watermark_loses_only_runs_of_its_own() {
        // Deleted at day 52 and created again under its name at day 60.
        let again = Resume {
            created_ms: Some(60 * DAY),
            last_run_listed: listed(61 * DAY, "Successful"),
            ..quiet()
        };
        // The runs exported (up to day 49) are its predecessor's: that AWS returns
        // none of them, only runs after its creation, says nothing of a loss.
        assert_eq!(retention_gap(&again, Some(60 * DAY + H)), None);
        assert_eq!(retention_gap(&again, Some(80 * DAY)), None);
        // AWS returns nothing, yet its listing shows a run of its own: lost since its
        // creation.
        assert_eq!(
            retention_gap(&again, None),
            Some(RetentionGap {
                after_ms: 60 * DAY,
                before_ms: 61 * DAY
            })
        );
        let not_run = Resume {
            last_run_listed: None,
            ..again.clone()
        };
        assert_eq!(retention_gap(&not_run, None), None);
        // The next read, whose listing shows what it showed then: found once.
        let found = Resume {
            last_run_read: again.last_run_listed.clone(),
            ..again.clone()
        };
        assert_eq!(retention_gap(&found, None), None);
        // A later run dropped too: the window starts at the one found then.
        let later = Resume {
            last_run_listed: listed(62 * DAY, "Successful"),
            ..found
        };
        assert_eq!(
            retention_gap(&later, None),
            Some(RetentionGap {
                after_ms: 61 * DAY,
                before_ms: 62 * DAY
            })
        );
        let before_creation = Resume {
            last_run_listed: listed(55 * DAY, "Successful"),
            ..again
        };
        assert_eq!(retention_gap(&before_creation, None), None);
        // Created before the watermark (the same flow): the window starts there.
        let same = Resume {
            created_ms: Some(49 * DAY - 1),
            ..quiet()
        };
        assert_eq!(
            retention_gap(&same, Some(70 * DAY)).map(|g| g.after_ms),
            Some(49 * DAY)
        );
    }
}
