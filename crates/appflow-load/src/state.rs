//! Per-flow watermarks, one JSON object per (account, region) under `_state/flows/`,
//! updated with the same conditional writes as the data (after it).

use std::collections::BTreeMap;

use appflow_model::LastRun;
use serde::{Deserialize, Serialize};

use crate::reads::{FlowRead, ReadView};

/// What the exports so far know of one flow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowState {
    pub flow_arn: String,
    /// The newest `started_at` exported, epoch ms. Never moves backwards.
    pub watermark_ms: Option<i64>,
    /// The `started_at` of the oldest run still open in the reads kept (`views`),
    /// epoch ms.
    pub oldest_open_ms: Option<i64>,
    /// Whether the flow's pages came newest-first in every read kept. When not, the
    /// next run reads the whole history instead of stopping at the cutoff.
    pub pages_sorted: bool,
    /// When the flow was last exported, epoch ms.
    pub last_export_ms: i64,
    /// When the latest incremental run of the reads kept started reading, epoch ms,
    /// by its host's clock (0: none): the flow's lag and `--skip-unchanged`'s
    /// recheck count from it, nothing else does.
    #[serde(default)]
    pub read_started_ms: i64,
    /// How many runs' reads of the flow were applied, over all runs.
    #[serde(default)]
    pub reads: u64,
    /// The reads no later read replaced: the open-run fields above are what they say
    /// together (`reads.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub views: Vec<ReadView>,
    /// Execution records read from AppFlow for this flow, over all runs.
    pub records_read: u64,
    /// What `ListFlows` showed of the flow's last run (`lastRunExecutionDetails`)
    /// when the flow was read (the latest run of the reads kept): `--skip-unchanged`
    /// compares the next listings with it.
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
    /// What the run read of the flow's open runs and page order.
    pub read: FlowRead,
}

impl FlowUpdate {
    /// Up to when the flow's export is known complete once this update is committed,
    /// as far as this run tells ([`current_to`]).
    pub fn current_to_ms(&self) -> Option<i64> {
        current_to(self.newest_started_ms, self.read.started_ms)
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
            s.apply_read(&u.read);
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

    /// One flow's update: `newest` read, one record, read by an incremental run that
    /// started from a state of `reads_before` reads.
    fn update(newest: Option<i64>, reads_before: u64) -> BTreeMap<String, FlowUpdate> {
        BTreeMap::from([(
            "f".to_string(),
            FlowUpdate {
                flow_arn: "arn".into(),
                newest_started_ms: newest,
                records_read: 1,
                retention_gap: None,
                read: FlowRead {
                    reads_before: Some(reads_before),
                    started_ms: Some(10),
                    oldest_open_ms: None,
                    pages_sorted: true,
                    listed_run: None,
                },
            },
        )])
    }

    #[test]
    fn fields_this_release_does_not_know_are_kept_at_every_level() {
        let stored = r#"{"version": 1, "later": 1, "flows": {"f": {"flow_arn": "arn",
            "watermark_ms": 5, "oldest_open_ms": null, "pages_sorted": true,
            "last_export_ms": 5, "records_read": 1, "also": [2],
            "views": [{"seq": 1, "pages_sorted": true, "seen": "x"}],
            "last_retention_gap": {"after_ms": 1, "before_ms": 2, "found_ms": 3, "why": "x"}}}}"#;
        let mut st: StateFile = serde_json::from_str(stored).unwrap();
        st.apply("u", &BTreeMap::new(), 10);
        let written: serde_json::Value = serde_json::to_value(&st).unwrap();
        assert_eq!(written["later"], 1);
        assert_eq!(written["flows"]["f"]["also"], serde_json::json!([2]));
        assert_eq!(written["flows"]["f"]["last_retention_gap"]["why"], "x");
        assert_eq!(written["flows"]["f"]["views"][0]["seen"], "x");
    }

    #[test]
    fn an_update_applied_again_counts_once() {
        let mut gapped = update(Some(100), 0);
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
    fn watermark_never_moves_backwards_and_gaps_are_counted() {
        let mut st = StateFile::default();
        st.apply("u4", &update(Some(100), 0), 1);
        let mut gapped = update(Some(80), 1);
        if let Some(u) = gapped.get_mut("f") {
            u.retention_gap = Some((90, 95));
        }
        st.apply("u5", &gapped, 2);
        let f = &st.flows["f"];
        assert_eq!(
            (f.watermark_ms, f.last_export_ms, f.records_read),
            (Some(100), 2, 2)
        );
        st.apply("u6", &update(None, 2), 3);
        let f = &st.flows["f"];
        assert_eq!(f.watermark_ms, Some(100));
        let newest = f
            .last_retention_gap
            .clone()
            .map(|g| (g.after_ms, g.found_ms));
        assert_eq!((f.retention_gaps, newest), (1, Some((90, 2))));
    }
}
