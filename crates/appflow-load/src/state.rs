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
    /// When the run that set `oldest_open_ms` and `pages_sorted` started reading,
    /// epoch ms. A run that started reading earlier (an overlapping, slower run)
    /// does not overwrite them: its view is older.
    #[serde(default)]
    pub read_started_ms: i64,
    /// Execution records read from AppFlow for this flow, over all runs.
    pub records_read: u64,
    /// What `ListFlows` showed of the flow's last run (`lastRunExecutionDetails`)
    /// when the run of `read_started_ms` read it: `--skip-unchanged` compares the
    /// next listings with it.
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

    /// When the last incremental run that read the flow started (backfills leave
    /// `read_started_ms` as it is).
    pub fn read_ms(&self) -> Option<i64> {
        incremental(self.read_started_ms)
    }

    /// Up to when the flow's export is known complete ([`current_to`]); `None` for a
    /// flow never exported nor read.
    pub fn current_to_ms(&self) -> Option<i64> {
        current_to(self.watermark_ms, self.read_started_ms)
    }
}

/// Up to when a flow's export is known complete, epoch ms: the later of its watermark
/// and the start of the last incremental run that read it to its end (a backfill's
/// `read_started_ms`, `i64::MIN`, counts as none). Now minus this is the flow's lag: a
/// flow read every five minutes has five minutes of lag however long ago it last ran.
pub fn current_to(watermark_ms: Option<i64>, read_started_ms: i64) -> Option<i64> {
    watermark_ms.max(incremental(read_started_ms))
}

/// A `read_started_ms` of an incremental run; a backfill's (and a state's from before
/// it was kept) is not one.
fn incremental(read_started_ms: i64) -> Option<i64> {
    (read_started_ms > 0).then_some(read_started_ms)
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
    /// When this run started, before it read anything.
    pub read_started_ms: i64,
    /// The newest `started_at` read in this run.
    pub newest_started_ms: Option<i64>,
    /// The oldest open run among those read (all runs at or after the cutoff).
    pub oldest_open_ms: Option<i64>,
    pub pages_sorted: bool,
    pub records_read: u64,
    /// What the run's listing showed of the flow's last run (time, status).
    pub listed_run: Option<LastRun>,
    /// A retention gap the read found: `(after_ms, before_ms)`.
    pub retention_gap: Option<(i64, i64)>,
}

impl FlowUpdate {
    /// Up to when the flow's export is known complete once this update is committed,
    /// as far as this run tells ([`current_to`]).
    pub fn current_to_ms(&self) -> Option<i64> {
        current_to(self.newest_started_ms, self.read_started_ms)
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
            if u.read_started_ms >= s.read_started_ms {
                s.oldest_open_ms = u.oldest_open_ms;
                s.pages_sorted = u.pages_sorted;
                s.read_started_ms = u.read_started_ms;
                let listed = u.listed_run.clone().unwrap_or_default();
                (s.listed_run_at_ms, s.listed_run_status) = (listed.at_ms, listed.status);
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
        let update = BTreeMap::from([(
            "f".to_string(),
            FlowUpdate {
                flow_arn: "arn".into(),
                read_started_ms: 10,
                newest_started_ms: Some(100),
                oldest_open_ms: None,
                pages_sorted: true,
                records_read: 7,
                listed_run: None,
                retention_gap: Some((1, 2)),
            },
        )]);
        let mut st = StateFile::default();
        st.apply("ours", &update, 20);
        // Another writer's update lands on top, then ours is applied again.
        st.apply("theirs", &update, 21);
        st.apply("ours", &update, 22);
        assert_eq!(st.flows["f"].records_read, 14);
        assert_eq!(st.flows["f"].retention_gaps, 2);
        // The ids kept stay bounded, the newest last.
        for n in 0..100 {
            st.apply(&format!("n{n}"), &BTreeMap::new(), 30);
        }
        assert_eq!(st.applied.len(), APPLIED_KEPT);
        assert_eq!(st.applied.last().map(String::as_str), Some("n99"));
    }

    #[test]
    fn a_slower_overlapping_run_does_not_forget_a_newer_open_run() {
        let mut st = StateFile::default();
        let update = |read_started: i64, open: Option<i64>| {
            BTreeMap::from([(
                "f".to_string(),
                FlowUpdate {
                    flow_arn: "arn".into(),
                    read_started_ms: read_started,
                    newest_started_ms: Some(100),
                    oldest_open_ms: open,
                    pages_sorted: true,
                    records_read: 1,
                    listed_run: None,
                    retention_gap: None,
                },
            )])
        };
        // Run B (started at 20) saw an open run; run A (started at 10) finishes later.
        st.apply("u1", &update(20, Some(90)), 30);
        st.apply("u2", &update(10, None), 31);
        assert_eq!(st.flows["f"].oldest_open_ms, Some(90));
        assert_eq!(st.flows["f"].last_export_ms, 31);
        // A run that started later does replace it.
        st.apply("u3", &update(40, None), 50);
        assert_eq!(st.flows["f"].oldest_open_ms, None);
    }

    #[test]
    fn watermark_never_moves_backwards() {
        let mut st = StateFile::default();
        let update = |newest: Option<i64>, open: Option<i64>| {
            BTreeMap::from([(
                "f".to_string(),
                FlowUpdate {
                    flow_arn: "arn".into(),
                    read_started_ms: 0,
                    newest_started_ms: newest,
                    oldest_open_ms: open,
                    pages_sorted: true,
                    records_read: 2,
                    listed_run: None,
                    retention_gap: None,
                },
            )])
        };
        st.apply("u4", &update(Some(100), Some(50)), 1);
        st.apply("u5", &update(Some(80), None), 2);
        let f = &st.flows["f"];
        assert_eq!(
            (
                f.watermark_ms,
                f.oldest_open_ms,
                f.last_export_ms,
                f.records_read
            ),
            (Some(100), None, 2, 4)
        );
        st.apply("u6", &update(None, None), 3);
        assert_eq!(st.flows["f"].watermark_ms, Some(100));
    }

    #[test]
    fn the_listing_read_at_follows_the_newest_read_and_gaps_are_counted() {
        let mut st = StateFile::default();
        let update = |read_started: i64, at: i64, gap: Option<(i64, i64)>| {
            BTreeMap::from([(
                "f".to_string(),
                FlowUpdate {
                    flow_arn: "arn".into(),
                    read_started_ms: read_started,
                    newest_started_ms: Some(100),
                    oldest_open_ms: None,
                    pages_sorted: true,
                    records_read: 1,
                    listed_run: Some(LastRun {
                        at_ms: Some(at),
                        status: Some("Successful".into()),
                    }),
                    retention_gap: gap,
                },
            )])
        };
        st.apply("u7", &update(20, 200, Some((100, 150))), 20);
        // A slower run that started reading earlier saw an older listing, and a backfill
        // (read_started_ms i64::MIN) none that counts: neither replaces it.
        st.apply("u8", &update(10, 190, None), 21);
        st.apply("u9", &update(i64::MIN, 180, Some((90, 95))), 22);
        let f = &st.flows["f"];
        assert_eq!(f.listed_run().and_then(|l| l.at_ms), Some(200));
        assert_eq!(f.read_ms(), Some(20));
        assert_eq!(f.retention_gaps, 2);
        let newest = f
            .last_retention_gap
            .clone()
            .map(|g| (g.after_ms, g.found_ms));
        assert_eq!(newest, Some((90, 22)));
    }
}
