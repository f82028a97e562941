//! A backfill's progress, so that rerunning it after an interruption redoes no flow
//! it completed: one JSON object per (window, account, region) at
//! `_state/backfills/<since>_<until>/<account>_<region>.json`, merged with the same
//! conditional writes as the state (shards of one backfill share it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which backfill: its window of UTC days, as given (`YYYY-MM-DD`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackfillId {
    pub since: String,
    /// The last day, inclusive; `None`: no end.
    pub until: Option<String>,
}

/// A flow whose rows and state a backfill committed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfilledFlow {
    /// When it was committed, epoch ms.
    pub completed_ms: i64,
    /// Runs read for it.
    pub records: u64,
    /// The run (see its manifest) that committed it.
    pub run_id: String,
    /// Fields this release does not know, kept while the entry is (a flow completed
    /// again gets this run's entry).
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

/// The flows of one account and region a backfill completed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillProgress {
    pub version: u32,
    pub since: String,
    pub until: Option<String>,
    /// When the backfill was last started again from scratch (`--restart`), epoch
    /// ms: flows completed before that are not done for the restarted backfill.
    #[serde(default)]
    pub restarted_ms: i64,
    pub flows: BTreeMap<String, BackfilledFlow>,
    /// Fields this release does not know, kept as they are.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

pub(crate) const PROGRESS_VERSION: u32 = 1;

impl BackfillProgress {
    /// Whether `flow` was completed by this backfill (since its last restart).
    pub fn completed(&self, flow: &str) -> bool {
        self.flows
            .get(flow)
            .is_some_and(|f| f.completed_ms >= self.restarted_ms)
    }

    /// Adds completed flows (and a restart) to what is stored.
    pub(crate) fn apply(
        &mut self,
        id: &BackfillId,
        done: &BTreeMap<String, BackfilledFlow>,
        restarted_ms: Option<i64>,
    ) {
        self.version = PROGRESS_VERSION;
        self.since.clone_from(&id.since);
        self.until.clone_from(&id.until);
        self.restarted_ms = self.restarted_ms.max(restarted_ms.unwrap_or(i64::MIN));
        for (name, flow) in done {
            let stored = self.flows.entry(name.clone()).or_default();
            if flow.completed_ms >= stored.completed_ms {
                *stored = flow.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(name: &str, at: i64) -> BTreeMap<String, BackfilledFlow> {
        BTreeMap::from([(
            name.to_string(),
            BackfilledFlow {
                completed_ms: at,
                records: 1,
                run_id: format!("run-{at}"),
                ..BackfilledFlow::default()
            },
        )])
    }

    #[test]
    fn fields_this_release_does_not_know_are_kept() {
        let stored = r#"{"version": 1, "since": "2026-01-01", "until": null, "later": true,
            "flows": {"a": {"completed_ms": 1, "records": 2, "run_id": "r", "also": 3}}}"#;
        let mut p: BackfillProgress = serde_json::from_str(stored).unwrap();
        let id = BackfillId {
            since: "2026-01-01".into(),
            until: None,
        };
        p.apply(&id, &done("b", 20), None);
        let written = serde_json::to_value(&p).unwrap();
        assert_eq!(written["later"], true);
        assert_eq!(written["flows"]["a"]["also"], 3);
    }

    #[test]
    fn a_restart_forgets_the_flows_completed_before_it() {
        let id = BackfillId {
            since: "2026-01-01".into(),
            until: None,
        };
        let mut p = BackfillProgress::default();
        p.apply(&id, &done("a", 10), None);
        p.apply(&id, &done("b", 20), None);
        assert!(p.completed("a") && p.completed("b") && !p.completed("c"));
        p.apply(&id, &BTreeMap::new(), Some(15));
        assert!(!p.completed("a"), "completed before the restart");
        assert!(p.completed("b"), "completed by a shard after the restart");
        // A later restart never moves the mark back; a completion is never undone.
        p.apply(&id, &done("a", 30), Some(12));
        assert_eq!(p.restarted_ms, 15);
        assert!(p.completed("a"));
        p.apply(&id, &done("a", 5), None);
        assert_eq!(p.flows["a"].completed_ms, 30);
    }
}
