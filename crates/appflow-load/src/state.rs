//! Per-flow watermarks, one JSON object per (account, region) under `_state/flows/`,
//! updated with the same conditional writes as the data (after it).

use std::collections::BTreeMap;

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
}

/// The state object of one account and region.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    pub version: u32,
    pub flows: BTreeMap<String, FlowState>,
}

pub(crate) const STATE_VERSION: u32 = 1;

impl StateFile {
    /// Applies a run's updates on top of what is stored (which may be newer than
    /// what the run started from, if another writer ran meanwhile).
    pub(crate) fn apply(&mut self, updates: &BTreeMap<String, FlowUpdate>, now_ms: i64) {
        self.version = STATE_VERSION;
        for (name, u) in updates {
            let s = self.flows.entry(name.clone()).or_default();
            s.flow_arn = u.flow_arn.clone();
            s.watermark_ms = s.watermark_ms.max(u.newest_started_ms);
            if u.read_started_ms >= s.read_started_ms {
                s.oldest_open_ms = u.oldest_open_ms;
                s.pages_sorted = u.pages_sorted;
                s.read_started_ms = u.read_started_ms;
            }
            s.last_export_ms = s.last_export_ms.max(now_ms);
            s.records_read += u.records_read;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                },
            )])
        };
        // Run B (started at 20) saw an open run; run A (started at 10) finishes later.
        st.apply(&update(20, Some(90)), 30);
        st.apply(&update(10, None), 31);
        assert_eq!(st.flows["f"].oldest_open_ms, Some(90));
        assert_eq!(st.flows["f"].last_export_ms, 31);
        // A run that started later does replace it.
        st.apply(&update(40, None), 50);
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
                },
            )])
        };
        st.apply(&update(Some(100), Some(50)), 1);
        st.apply(&update(Some(80), None), 2);
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
        st.apply(&update(None, None), 3);
        assert_eq!(st.flows["f"].watermark_ms, Some(100));
    }
}
