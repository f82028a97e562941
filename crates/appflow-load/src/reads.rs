//! Whose reads of a flow decide its open-run state (the oldest open run, page order,
//! the listing read at, the last read's start): decided by what was read, never by
//! comparing clocks.
//!
//! A flow's state keeps the reads no later read has replaced ([`FlowState::views`]),
//! each numbered by the flow's read count when it was applied ([`FlowState::reads`]).
//! A run remembers the count it saw when it read the state: every read applied by
//! then was applied before the run read the flow, and the run's cutoff went back to
//! the oldest run they held open, so its view replaces theirs. Reads applied after
//! the run read the state overlapped it: neither is known to be the later, so both
//! are kept and the state holds what either saw open. When runs overlap steadily
//! (each longer than the schedule's interval), a read is replaced by the first run
//! that read the state after it was applied (two commits on when each run overlaps
//! only the one before), so an ended run is let go.

use std::collections::BTreeMap;

use appflow_model::LastRun;
use serde::{Deserialize, Serialize};

use crate::state::FlowState;

/// How many reads a flow's state keeps: runs that overlap more than this merge
/// their oldest reads into one (what either saw open is kept).
pub(crate) const VIEWS_KEPT: usize = 8;

/// What a run read of a flow, besides its rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRead {
    /// The flow's [`FlowState::reads`] in the state an incremental run started from
    /// (0 when it had none): the reads it replaces. `None` for a backfill, which
    /// replaces none (its window may end before runs still open) but is kept beside
    /// them, so that a run it read open is read again when it ends.
    pub reads_before: Option<u64>,
    /// When an incremental run started, before it read anything, by its host's
    /// clock (`None` for a backfill, which dates no read: it may end in the past).
    pub started_ms: Option<i64>,
    /// The oldest open run among those read, left out those open longer than
    /// `--max-open-age`.
    pub oldest_open_ms: Option<i64>,
    pub pages_sorted: bool,
    /// What the run's listing showed of the flow's last run (time, status); `None`
    /// for a backfill (it may not have read that run).
    pub listed_run: Option<LastRun>,
}

/// One run's read of a flow, kept until a run that read after it replaces it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReadView {
    /// The flow's read count once this read was applied.
    pub seq: u64,
    pub started_ms: Option<i64>,
    pub oldest_open_ms: Option<i64>,
    pub pages_sorted: bool,
    pub listed_run_at_ms: Option<i64>,
    pub listed_run_status: Option<String>,
    /// Fields this release does not know, kept (see [`FlowState::unknown`]).
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl ReadView {
    /// What `a` and `b` say together: every run either saw open (the older of their
    /// oldest), pages out of order in either, the later start, the listing that shows
    /// the later run (`b`'s on a tie).
    fn combined(a: &ReadView, b: &ReadView) -> ReadView {
        let later_listing = if a.listed_run_at_ms > b.listed_run_at_ms {
            a
        } else {
            b
        };
        ReadView {
            seq: a.seq.max(b.seq),
            started_ms: a.started_ms.max(b.started_ms),
            oldest_open_ms: match (a.oldest_open_ms, b.oldest_open_ms) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            },
            pages_sorted: a.pages_sorted && b.pages_sorted,
            listed_run_at_ms: later_listing.listed_run_at_ms,
            listed_run_status: later_listing.listed_run_status.clone(),
            unknown: BTreeMap::new(),
        }
    }

    /// What `views` say together; the view of a flow never read when there is none.
    fn all(views: &[ReadView]) -> ReadView {
        views
            .iter()
            .skip(1)
            .fold(views.first().cloned().unwrap_or_default(), |acc, v| {
                ReadView::combined(&acc, v)
            })
    }

    /// Whether both say the same of the flow (their numbers and unknown fields aside).
    fn says_the_same(&self, other: &ReadView) -> bool {
        (
            self.started_ms,
            self.oldest_open_ms,
            self.pages_sorted,
            self.listed_run_at_ms,
            &self.listed_run_status,
        ) == (
            other.started_ms,
            other.oldest_open_ms,
            other.pages_sorted,
            other.listed_run_at_ms,
            &other.listed_run_status,
        )
    }
}

impl FlowState {
    /// Takes in a run's read of the flow (see the module's notes) and sets the
    /// flow's open-run fields to what the reads kept say together.
    pub(crate) fn apply_read(&mut self, read: &FlowRead) {
        self.adopt_foreign_view();
        // A count above the stored one: a release that does not keep it rewrote the
        // state; nothing is known to be replaced.
        if let Some(before) = read.reads_before.filter(|b| *b <= self.reads) {
            self.views.retain(|v| v.seq > before);
        }
        self.reads += 1;
        let listed = read.listed_run.clone().unwrap_or_default();
        self.views.push(ReadView {
            seq: self.reads,
            started_ms: read.started_ms,
            oldest_open_ms: read.oldest_open_ms,
            pages_sorted: read.pages_sorted,
            listed_run_at_ms: listed.at_ms,
            listed_run_status: listed.status,
            unknown: BTreeMap::new(),
        });
        if self.views.len() > VIEWS_KEPT {
            let second = self.views.remove(1);
            self.views[0] = ReadView::combined(&self.views[0], &second);
        }
        let all = ReadView::all(&self.views);
        self.set_view(&all);
    }

    /// The open-run fields as stored.
    fn stored_view(&self) -> ReadView {
        ReadView {
            seq: self.reads,
            started_ms: self.read_ms(),
            oldest_open_ms: self.oldest_open_ms,
            pages_sorted: self.pages_sorted,
            listed_run_at_ms: self.listed_run_at_ms,
            listed_run_status: self.listed_run_status.clone(),
            unknown: BTreeMap::new(),
        }
    }

    fn set_view(&mut self, view: &ReadView) {
        self.read_started_ms = view.started_ms.unwrap_or(0);
        self.oldest_open_ms = view.oldest_open_ms;
        self.pages_sorted = view.pages_sorted;
        self.listed_run_at_ms = view.listed_run_at_ms;
        self.listed_run_status.clone_from(&view.listed_run_status);
    }

    /// Open-run fields that are not what the reads kept say: a release that does not
    /// keep them (a state from before they were kept, or an older release running
    /// beside this one) wrote its read there. It is kept as one more read, so what it
    /// saw open is not forgotten.
    fn adopt_foreign_view(&mut self) {
        let stored = self.stored_view();
        if !stored.says_the_same(&ReadView::all(&self.views)) {
            self.reads += 1;
            self.views.push(ReadView {
                seq: self.reads,
                ..stored
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An incremental read that started from a state of `reads_before` reads, at
    /// `started` by its host's clock, and saw `open` as its oldest open run.
    fn read(reads_before: u64, started: i64, open: Option<i64>) -> FlowRead {
        FlowRead {
            reads_before: Some(reads_before),
            started_ms: Some(started),
            oldest_open_ms: open,
            pages_sorted: true,
            listed_run: None,
        }
    }

    /// A backfill's read that saw `open` as its oldest open run.
    fn backfill(open: Option<i64>) -> FlowRead {
        FlowRead {
            reads_before: None,
            started_ms: None,
            ..read(0, 0, open)
        }
    }

    fn listed(at: i64) -> Option<LastRun> {
        Some(LastRun {
            at_ms: Some(at),
            status: Some("Successful".into()),
        })
    }

    /// A flow's state after `reads`, applied in order.
    fn after(reads: &[FlowRead]) -> FlowState {
        let mut f = FlowState::default();
        for r in reads {
            f.apply_read(r);
        }
        f
    }

    #[test]
    fn overlapping_runs_keep_every_run_either_saw_open_whatever_their_clocks() {
        // Runs A and B both read the state after the first read: A saw nothing open, B
        // saw a run open. Whichever commits last, whichever clock is ahead, it is kept.
        for (a_started, b_started) in [(10, 20), (20, 10)] {
            let (a, b) = (read(1, a_started, None), read(1, b_started, Some(90)));
            for order in [[&a, &b], [&b, &a]] {
                let f = after(&[read(0, 1, None), order[0].clone(), order[1].clone()]);
                assert_eq!(f.oldest_open_ms, Some(90), "{order:?}");
                assert_eq!(f.read_ms(), Some(20), "the lag counts from the later start");
                assert_eq!(f.reads, 3);
            }
        }
        // Both saw runs open: the older is kept.
        let f = after(&[read(0, 10, Some(80)), read(0, 20, Some(90))]);
        assert_eq!(f.oldest_open_ms, Some(80));
    }

    #[test]
    fn a_run_that_read_after_every_applied_read_replaces_them_whatever_its_clock() {
        // A host whose clock is a day ahead saw a run open; the next run, on a host with
        // the right clock, read after it: the run ended.
        let mut f = after(&[read(0, 86_400_000, Some(90)), read(1, 1_000, None)]);
        assert_eq!(f.oldest_open_ms, None);
        assert_eq!(f.read_ms(), Some(1_000));
        // And so are its page order and the listing it read at.
        f.apply_read(&FlowRead {
            pages_sorted: false,
            listed_run: listed(95),
            ..read(2, 500, Some(95))
        });
        assert_eq!(
            (f.oldest_open_ms, f.pages_sorted, f.listed_run()),
            (Some(95), false, listed(95))
        );
        assert_eq!(f.views.len(), 1);
    }

    #[test]
    fn runs_that_overlap_steadily_let_an_ended_run_go() {
        // Every run is longer than the schedule: run n reads the state before run n-1
        // commits (run 1 and 2 read none, run 3 read run 1's, ...). Runs 2 and 3 saw a
        // run open; it ended before run 4 read.
        let mut f = after(&[
            read(0, 10, None),
            read(0, 20, Some(90)),
            read(1, 30, Some(90)),
            read(2, 40, None),
        ]);
        assert_eq!(
            f.oldest_open_ms,
            Some(90),
            "run 3's read overlapped run 4's"
        );
        f.apply_read(&read(3, 50, None));
        assert_eq!(
            f.oldest_open_ms, None,
            "two commits after the last read that saw it"
        );
        assert_eq!(f.views.len(), 2, "{:?}", f.views);
    }

    #[test]
    fn many_overlapping_reads_are_kept_bounded_and_keep_what_any_saw_open() {
        let mut reads = vec![read(0, 1, Some(50))];
        reads.extend((0..20).map(|n| read(0, n, None)));
        let f = after(&reads);
        assert_eq!(f.views.len(), VIEWS_KEPT);
        assert_eq!(f.oldest_open_ms, Some(50));
        // A read after all of them replaces them.
        let f = after(&[reads, vec![read(21, 99, None)]].concat());
        assert_eq!((f.views.len(), f.oldest_open_ms), (1, None));
    }

    #[test]
    fn a_backfill_s_open_runs_are_kept_beside_the_reads_until_a_later_read() {
        let mut f = after(&[FlowRead {
            listed_run: listed(200),
            ..read(0, 20, Some(90))
        }]);
        f.apply_read(&backfill(Some(60)));
        assert_eq!(
            f.oldest_open_ms,
            Some(60),
            "the backfill's open run is held"
        );
        assert_eq!((f.read_ms(), f.listed_run()), (Some(20), listed(200)));
        // A backfill replaces no read, even one that started before it.
        f.apply_read(&backfill(None));
        assert_eq!(f.oldest_open_ms, Some(60));
        // The next incremental run read after both (its cutoff went back to the open
        // run): its view replaces theirs.
        f.apply_read(&read(3, 30, None));
        assert_eq!((f.oldest_open_ms, f.views.len()), (None, 1));
        // A flow only a backfill read has no read to date its lag.
        let only = after(&[backfill(Some(5))]);
        assert_eq!((only.read_ms(), only.oldest_open_ms), (None, Some(5)));
    }

    #[test]
    fn overlapping_runs_keep_the_listing_that_shows_the_later_run_and_unsorted_pages() {
        let with = |reads_before, at, sorted| FlowRead {
            listed_run: listed(at),
            pages_sorted: sorted,
            ..read(reads_before, 10, None)
        };
        let f = after(&[with(0, 200, false), with(0, 190, true)]);
        assert_eq!(f.listed_run(), listed(200));
        assert!(!f.pages_sorted);
        let f = after(&[with(0, 200, false), with(0, 190, true), with(2, 180, true)]);
        assert_eq!(f.listed_run(), listed(180));
        assert!(f.pages_sorted);
    }

    #[test]
    fn a_view_written_by_a_release_that_does_not_keep_the_reads_is_not_forgotten() {
        // A state from before the reads were kept, or an older release's write on top
        // of ours: its open run is kept beside the next read, as an overlapping one.
        let mut f = FlowState {
            oldest_open_ms: Some(70),
            pages_sorted: true,
            read_started_ms: 5,
            ..FlowState::default()
        };
        f.apply_read(&read(0, 10, None));
        assert_eq!(f.oldest_open_ms, Some(70));
        f.apply_read(&read(2, 20, None));
        assert_eq!(f.oldest_open_ms, None);
        // An older release rewrote the fields, keeping `views` and `reads` as it found
        // them (fields it does not know), or dropping them (a count gone back).
        f.oldest_open_ms = Some(75);
        f.apply_read(&read(3, 30, None));
        assert_eq!(f.oldest_open_ms, Some(75));
        let mut dropped = FlowState {
            oldest_open_ms: Some(80),
            ..FlowState::default()
        };
        dropped.apply_read(&read(9, 40, None));
        assert_eq!(dropped.oldest_open_ms, Some(80));
        // Our own writes are not taken for another release's.
        let ours = after(&[read(0, 10, Some(1)), read(1, 20, None)]);
        assert_eq!((ours.oldest_open_ms, ours.views.len()), (None, 1));
    }
}
