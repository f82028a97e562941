//! Run manifests: what each run did, at `_state/runs/<run-id>.json`, for operators to
//! audit and for `appflow-export status`. Run ids start with the run's start time, so
//! their order is the runs' order; only the newest `keep` are kept.

use serde::{Deserialize, Serialize};

/// One run, as its manifest records it. Times are RFC 3339 UTC.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunManifest {
    /// `20261125T113232.123Z-3f9a0c1d`: start time, then random hex.
    pub run_id: String,
    /// The appflow-export version that ran.
    pub version: String,
    /// The command line, program name left out.
    pub arguments: Vec<String>,
    pub dest: String,
    /// `i/N` (`0/1` when not sharded): the shard of the target's flows.
    pub shard: String,
    /// `i/N` when the shards of a run over several targets split the targets (each
    /// whole to one shard, `shard` then `0/1`); `None` otherwise.
    pub target_shard: Option<String>,
    /// The account the run exported (`None`: it could not be told: no flow listed
    /// and STS not reachable).
    pub account_id: Option<String>,
    /// The region the run exported.
    pub region: Option<String>,
    /// The role it assumed to do so (`None`: the environment's credentials).
    pub role_arn: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    pub duration_seconds: f64,
    /// The process's exit code (see README).
    pub exit_code: u8,
    pub list_flows_calls: u64,
    pub describe_calls: u64,
    /// AppFlow requests sent, every retry counted, and of those the ones AWS
    /// answered with throttling.
    pub appflow_requests: u64,
    pub throttled_calls: u64,
    /// AppFlow calls allowed in flight at most (`--concurrency`), and the lowest and
    /// highest the adaptive limit of calls in flight was during the run (it falls
    /// when AWS keeps throttling, and climbs back when it stops).
    pub concurrency: u64,
    pub concurrency_limit_lowest: u64,
    pub concurrency_limit_highest: u64,
    pub records: u64,
    /// Data files written, and those the run touched whose rows did not change.
    pub files_written: u64,
    pub files_unchanged: u64,
    /// Conditional writes that lost a race and were re-merged.
    pub conflicts: u64,
    pub flows_listed: u64,
    pub flows_table_written: u64,
    /// A backfill's flows that an earlier run of it completed, not read again.
    pub flows_already_backfilled: u64,
    /// Flows `--skip-unchanged` did not read (their listing showed nothing new).
    pub flows_skipped: u64,
    /// Flows whose read found a retention gap (see `FlowRun::retention_gap`).
    pub retention_gaps: u64,
    /// Every flow the run tried, in the order they finished.
    pub flows: Vec<FlowRun>,
    /// What went wrong: failed flows, and the error that ended the run, if any.
    pub errors: Vec<String>,
    /// Why the run stopped before every flow was read (`SIGTERM`, `SIGINT`): what it
    /// committed is whole, the next run reads the rest.
    pub interrupted: Option<String>,
}

/// One flow in one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FlowRun {
    pub account_id: String,
    pub region: String,
    pub flow_name: String,
    /// Where the read stopped (inclusive `startedAt`); `None`: the whole history.
    pub cutoff: Option<String>,
    pub describe_calls: u64,
    pub records: u64,
    pub error: Option<String>,
    /// Not read: `--skip-unchanged` found its listing as it was at its last read.
    pub skipped: bool,
    /// Being read when the run was stopped and not done within the stop timeout:
    /// nothing of it was committed, the next run reads it.
    pub interrupted: bool,
    /// Runs AWS no longer returns that no export read: started after `after` and
    /// before `before` (RFC 3339), they may be lost.
    pub retention_gap: Option<GapWindow>,
}

/// A retention gap's window, RFC 3339 UTC.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapWindow {
    pub after: String,
    pub before: String,
}

/// A run id for a run started at `started_ms`: sortable by time, unique across
/// processes (random suffix from the standard library's per-process random keys).
pub fn run_id(started_ms: i64) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_i64(started_ms);
    hasher.write_u32(std::process::id());
    let time = chrono::DateTime::from_timestamp_millis(started_ms).map_or_else(
        || started_ms.to_string(),
        |t| t.format("%Y%m%dT%H%M%S%.3fZ").to_string(),
    );
    format!("{time}-{:08x}", hasher.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_by_time_and_differ() {
        let (a, b) = (run_id(1_790_000_000_000), run_id(1_790_000_000_001));
        assert!(a < b, "{a} {b}");
        assert!(a.starts_with("20260921T"), "{a}");
        assert_ne!(run_id(5), run_id(5));
    }
}
