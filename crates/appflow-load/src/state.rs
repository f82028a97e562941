//! Per-flow watermarks, one JSON object per (account, region) under `_state/flows/`,
//! updated with the same conditional writes as the data (after it).

use std::collections::BTreeMap;

use appflow_model::LastRun;
use serde::{Deserialize, Serialize};

/// What the exports so far know of one flow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowState {
    pub flow_arn: String,
    /// The newest `started_at` exported, epoch ms. Never moves backwards.
    pub watermark_ms: Option<i64>,
    /// The `started_at` of the oldest run that was still open, epoch ms.
    pub oldest_open_ms: Option<i64>,
    /// Whether the flow's pages came newest-first in the last run. When not, the
    /// next run reads the whole history instead of stopping at the cutoff.
    pub pages_sorted: bool,
    /// When the flow was last exported, epoch ms.
    pub last_export_ms: i64,
    /// When the last incremental run that read the flow started reading, epoch ms, by
    /// its host's clock: the flow's lag and `--skip-unchanged`'s recheck count from it,
    /// nothing else does.
    #[serde(default)]
    pub read_started_ms: i64,
    /// How many incremental runs' reads of the flow were applied, over all runs. A run
    /// that finds it unchanged since it read the state it started from read after every
    /// read applied ([`StateFile::apply`]).
    #[serde(default)]
    pub reads: u64,
    /// Execution records read from AppFlow for this flow, over all runs.
    pub records_read: u64,
    /// What `ListFlows` showed of the flow's last run (`lastRunExecutionDetails`)
    /// when the flow was last read: `--skip-unchanged` compares the next listings
    /// with it.
    #[serde(default)]
    pub listed_run_at_ms: Option<i64>,
    #[serde(default)]
    pub listed_run_status: Option<String>,
    /// Retention gaps found in this flow's history, over all runs.
    #[serde(default)]
    pub retention_gaps: u64,
    /// The newest of them.
    #[serde(default)]
    pub last_retention_gap: Option<GapRecord>,
    /// Fields this release does not know (a newer release's, under the same
    /// version): kept as they are when the state is written again, so that an older
    /// release running beside a newer one does not reset what the newer one keeps.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl FlowState {
    /// What the listing showed of the flow's last run when it was last read.
    pub fn listed_run(&self) -> Option<LastRun> {
        let run = LastRun {
            at_ms: self.listed_run_at_ms,
            status: self.listed_run_status.clone(),
        };
        (run != LastRun::default()).then_some(run)
    }

    /// When the last incremental run that read the flow started (a backfill is not
    /// one); `None` for a flow no incremental run read.
    pub fn read_ms(&self) -> Option<i64> {
        // 0: a state from before it was kept, or a flow only a backfill read.
        (self.read_started_ms > 0).then_some(self.read_started_ms)
    }

    /// Takes in what an incremental run read of the flow's open runs, decided by what
    /// was read, never by comparing clocks:
    /// - No other read applied since the run read its state (`reads` unchanged): the
    ///   run re-read every run that state held open (its cutoff is at or before the
    ///   oldest of them; one open past `--max-open-age` is let go), later than any read
    ///   applied, so its view replaces the stored one.
    /// - Another run's read was applied meanwhile: the two overlapped and neither is
    ///   known to be the later. A run either saw open stays open (the older of the two
    ///   oldest), pages out of order in either are out of order: holding a run that has
    ///   ended costs a longer read, forgetting one that is open would lose its end. The
    ///   next run that reads the flow alone replaces it. The listing kept is the one
    ///   that shows the later run.
    fn apply_read(&mut self, read: &FlowRead) {
        let listed = read.listed_run.clone().unwrap_or_default();
        if read.reads_before == self.reads {
            self.oldest_open_ms = read.oldest_open_ms;
            self.pages_sorted = read.pages_sorted;
            self.read_started_ms = read.started_ms;
            (self.listed_run_at_ms, self.listed_run_status) = (listed.at_ms, listed.status);
        } else {
            self.oldest_open_ms = match (self.oldest_open_ms, read.oldest_open_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            self.pages_sorted &= read.pages_sorted;
            self.read_started_ms = self.read_started_ms.max(read.started_ms);
            if listed.at_ms > self.listed_run_at_ms {
                (self.listed_run_at_ms, self.listed_run_status) = (listed.at_ms, listed.status);
            }
        }
        self.reads += 1;
    }

    /// Up to when the flow's export is known complete ([`current_to`]); `None` for a
    /// flow never exported nor read.
    pub fn current_to_ms(&self) -> Option<i64> {
        current_to(self.watermark_ms, self.read_ms())
    }
}

/// Up to when a flow's export is known complete, epoch ms: the later of its watermark
/// and the start of the last incremental run that read it to its end (`read_ms`; a
/// backfill is not one). Now minus this is the flow's lag: a flow read every five
/// minutes has five minutes of lag however long ago it last ran.
pub fn current_to(watermark_ms: Option<i64>, read_ms: Option<i64>) -> Option<i64> {
    watermark_ms.max(read_ms)
}

/// A window of run starts AWS no longer returned when a run read the flow to the end
/// of its history, and that no export had read: runs started after `after_ms` and
/// before `before_ms` may be lost.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapRecord {
    pub after_ms: i64,
    pub before_ms: i64,
    /// When the run that found it started, epoch ms.
    pub found_ms: i64,
    /// Fields this release does not know, kept (see [`FlowState::unknown`]).
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

/// What one run learned of a flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowUpdate {
    pub flow_arn: String,
    /// The newest `started_at` read in this run.
    pub newest_started_ms: Option<i64>,
    pub records_read: u64,
    /// A retention gap the read found: `(after_ms, before_ms)`.
    pub retention_gap: Option<(i64, i64)>,
    /// What an incremental run read of the flow's open runs and page order; `None`
    /// for a backfill, which leaves them to incremental runs (its window may end in
    /// the past, before runs still open).
    pub read: Option<FlowRead>,
}

/// What an incremental run read of a flow, besides its rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRead {
    /// The flow's [`FlowState::reads`] in the state the run started from (0 when
    /// it had none).
    pub reads_before: u64,
    /// When this run started, before it read anything, by this host's clock.
    pub started_ms: i64,
    /// The oldest open run among those read (all runs at or after the cutoff, left
    /// out those open longer than `--max-open-age`).
    pub oldest_open_ms: Option<i64>,
    pub pages_sorted: bool,
    /// What the run's listing showed of the flow's last run (time, status).
    pub listed_run: Option<LastRun>,
}

impl FlowUpdate {
    /// Up to when the flow's export is known complete once this update is committed,
    /// as far as this run tells ([`current_to`]).
    pub fn current_to_ms(&self) -> Option<i64> {
        current_to(self.newest_started_ms, self.read.as_ref().map(|r| r.started_ms))
    }
}

/// The state object of one account and region.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    pub version: u32,
    pub flows: BTreeMap<String, FlowState>,
    /// The ids of the last updates applied, newest last (at most [`APPLIED_KEPT`]):
    /// an update applied again is applied once. That happens when its put landed,
    /// its answer was lost, and another writer stored on top before it read back: it
    /// cannot tell its own write from the other's and reapplies its change, whose
    /// counters (`records_read`, `retention_gaps`) are increments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied: Vec<String>,
    /// Fields this release does not know, kept as they are (see [`FlowState::unknown`]).
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

pub(crate) const STATE_VERSION: u32 = 1;

/// How many update ids a state keeps: far more than the writers that may store on top
/// of one update between its put and its read back.
pub(crate) const APPLIED_KEPT: usize = 64;

impl StateFile {
    /// Applies a run's updates on top of what is stored (which may be newer than
    /// what the run started from, if another writer ran meanwhile), once per
    /// `update_id`.
    pub(crate) fn apply(
        &mut self,
        update_id: &str,
        updates: &BTreeMap<String, FlowUpdate>,
        now_ms: i64,
    ) {
        if self.applied.iter().any(|id| id == update_id) {
            return;
        }
        self.applied.push(update_id.to_string());
        let over = self.applied.len().saturating_sub(APPLIED_KEPT);
        self.applied.drain(..over);
        self.version = STATE_VERSION;
        for (name, u) in updates {
            let s = self.flows.entry(name.clone()).or_default();
            s.flow_arn = u.flow_arn.clone();
            s.watermark_ms = s.watermark_ms.max(u.newest_started_ms);
            if let Some(read) = &u.read {
                s.apply_read(read);
            }
            s.last_export_ms = s.last_export_ms.max(now_ms);
            s.records_read += u.records_read;
            if let Some((after_ms, before_ms)) = u.retention_gap {
                s.retention_gaps += 1;
                let newer = s
                    .last_retention_gap
                    .as_ref()
                    .is_none_or(|g| now_ms >= g.found_ms);
                if newer {
                    s.last_retention_gap = Some(GapRecord {
                        after_ms,
                        before_ms,
                        found_ms: now_ms,
                        unknown: BTreeMap::new(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One flow's update: `newest` read, one record, and what an incremental run read
    /// (`None`: a backfill).
    fn update(newest: Option<i64>, read: Option<FlowRead>) -> BTreeMap<String, FlowUpdate> {
        BTreeMap::from([(
            "f".to_string(),
            FlowUpdate {
                flow_arn: "arn".into(),
                newest_started_ms: newest,
                records_read: 1,
                retention_gap: None,
                read,
            },
        )])
    }

    /// An incremental read that started from a state holding `reads_before` reads, at
    /// `started` by its host's clock, and saw `open` as its oldest open run.
    fn read(reads_before: u64, started: i64, open: Option<i64>) -> Option<FlowRead> {
        Some(FlowRead {
            reads_before,
            started_ms: started,
            oldest_open_ms: open,
            pages_sorted: true,
            listed_run: None,
        })
    }

    fn listed(at: i64) -> Option<LastRun> {
        Some(LastRun {
            at_ms: Some(at),
            status: Some("Successful".into()),
        })
    }

    #[test]
    fn fields_this_release_does_not_know_are_kept_at_every_level() {
        let stored = r#"{"version": 1, "later": 1, "flows": {"f": {"flow_arn": "arn",
            "watermark_ms": 5, "oldest_open_ms": null, "pages_sorted": true,
            "last_export_ms": 5, "records_read": 1, "also": [2],
            "last_retention_gap": {"after_ms": 1, "before_ms": 2, "found_ms": 3, "why": "x"}}}}"#;
        let mut st: StateFile = serde_json::from_str(stored).unwrap();
        st.apply("u", &BTreeMap::new(), 10);
        let written: serde_json::Value = serde_json::to_value(&st).unwrap();
        assert_eq!(written["later"], 1);
        assert_eq!(written["flows"]["f"]["also"], serde_json::json!([2]));
        assert_eq!(written["flows"]["f"]["last_retention_gap"]["why"], "x");
    }

    #[test]
    fn an_update_applied_again_counts_once() {
        let mut gapped = update(Some(100), read(0, 10, None));
        if let Some(u) = gapped.get_mut("f") {
            u.records_read = 7;
            u.retention_gap = Some((1, 2));
        }
        let mut st = StateFile::default();
        st.apply("ours", &gapped, 20);
        // Another writer's update lands on top, then ours is applied again.
        st.apply("theirs", &gapped, 21);
        st.apply("ours", &gapped, 22);
        assert_eq!(st.flows["f"].records_read, 14);
        assert_eq!(st.flows["f"].retention_gaps, 2);
        assert_eq!(st.flows["f"].reads, 2);
        // The ids kept stay bounded, the newest last.
        for n in 0..100 {
            st.apply(&format!("n{n}"), &BTreeMap::new(), 30);
        }
        assert_eq!(st.applied.len(), APPLIED_KEPT);
        assert_eq!(st.applied.last().map(String::as_str), Some("n99"));
    }

    #[test]
    fn overlapping_runs_keep_every_run_either_saw_open_whatever_their_clocks() {
        // Run A (reads_before 1) saw nothing open, run B (also from 1) saw a run open.
        // Whichever commits last, and whichever clock is ahead, the open run is kept.
        for (a_started, b_started) in [(10, 20), (20, 10)] {
            for b_first in [true, false] {
                let mut st = StateFile::default();
                st.apply("first", &update(Some(50), read(0, 1, None)), 2);
                let a = update(Some(100), read(1, a_started, None));
                let b = update(Some(100), read(1, b_started, Some(90)));
                let order = if b_first { [&b, &a] } else { [&a, &b] };
                st.apply("x", order[0], 30);
                st.apply("y", order[1], 31);
                let f = &st.flows["f"];
                assert_eq!(f.oldest_open_ms, Some(90), "{a_started} {b_started} {b_first}");
                assert_eq!(f.read_ms(), Some(20), "the lag counts from the later start");
                assert_eq!(f.reads, 3);
            }
        }
        // Both saw runs open: the older is kept.
        let mut st = StateFile::default();
        st.apply("a", &update(Some(100), read(0, 10, Some(80))), 30);
        st.apply("b", &update(Some(100), read(0, 20, Some(90))), 31);
        assert_eq!(st.flows["f"].oldest_open_ms, Some(80));
    }

    #[test]
    fn a_run_that_read_after_every_applied_read_replaces_the_view_whatever_its_clock() {
        // A host whose clock is a day ahead saw a run open.
        let mut st = StateFile::default();
        st.apply("ahead", &update(Some(100), read(0, 86_400_000, Some(90))), 1);
        // The next run, on a host with the right clock, read after it: the run ended.
        st.apply("next", &update(Some(100), read(1, 1_000, None)), 2);
        let f = &st.flows["f"];
        assert_eq!(f.oldest_open_ms, None);
        assert_eq!(f.read_ms(), Some(1_000));
        // And so are its page order and the listing it read at.
        let mut unsorted = read(2, 500, Some(95));
        if let Some(r) = unsorted.as_mut() {
            r.pages_sorted = false;
            r.listed_run = listed(95);
        }
        st.apply("unsorted", &update(Some(100), unsorted), 3);
        let f = &st.flows["f"];
        assert_eq!(
            (f.oldest_open_ms, f.pages_sorted, f.listed_run()),
            (Some(95), false, listed(95))
        );
    }

    #[test]
    fn a_backfill_leaves_the_open_runs_page_order_and_listing_to_incremental_runs() {
        let mut st = StateFile::default();
        let mut seen = read(0, 20, Some(90));
        if let Some(r) = seen.as_mut() {
            r.listed_run = listed(200);
        }
        st.apply("run", &update(Some(100), seen), 20);
        st.apply("backfill", &update(Some(300), None), 21);
        let f = &st.flows["f"];
        assert_eq!(
            (f.watermark_ms, f.oldest_open_ms, f.read_ms(), f.reads),
            (Some(300), Some(90), Some(20), 1)
        );
        assert_eq!(f.listed_run(), listed(200));
        // A flow only a backfill read has no incremental read: its lag is its watermark.
        let mut only = StateFile::default();
        only.apply("backfill", &update(Some(300), None), 21);
        assert_eq!(only.flows["f"].read_ms(), None);
        assert_eq!(only.flows["f"].current_to_ms(), Some(300));
    }

    #[test]
    fn overlapping_runs_keep_the_listing_that_shows_the_later_run_and_unsorted_pages() {
        let mut st = StateFile::default();
        let with = |reads_before, at, sorted| {
            let mut r = read(reads_before, 10, None);
            if let Some(r) = r.as_mut() {
                r.listed_run = listed(at);
                r.pages_sorted = sorted;
            }
            update(Some(100), r)
        };
        st.apply("a", &with(0, 200, false), 20);
        // Overlapping (started from the same state): an older listing is not kept, and
        // pages out of order in either stay out of order.
        st.apply("b", &with(0, 190, true), 21);
        assert_eq!(st.flows["f"].listed_run(), listed(200));
        assert!(!st.flows["f"].pages_sorted);
        st.apply("c", &with(1, 210, true), 22);
        assert_eq!(st.flows["f"].listed_run(), listed(210));
    }

    #[test]
    fn watermark_never_moves_backwards_and_gaps_are_counted() {
        let mut st = StateFile::default();
        st.apply("u4", &update(Some(100), read(0, 10, Some(50))), 1);
        let mut gapped = update(Some(80), read(1, 20, None));
        if let Some(u) = gapped.get_mut("f") {
            u.retention_gap = Some((90, 95));
        }
        st.apply("u5", &gapped, 2);
        let f = &st.flows["f"];
        assert_eq!(
            (
                f.watermark_ms,
                f.oldest_open_ms,
                f.last_export_ms,
                f.records_read
            ),
            (Some(100), None, 2, 2)
        );
        st.apply("u6", &update(None, None), 3);
        let f = &st.flows["f"];
        assert_eq!(f.watermark_ms, Some(100));
        let newest = f
            .last_retention_gap
            .clone()
            .map(|g| (g.after_ms, g.found_ms));
        assert_eq!((f.retention_gaps, newest), (1, Some((90, 2))));
    }
}
