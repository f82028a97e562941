//! What one run is asked to do, validated by the caller before any API call.

use std::time::Duration;

use appflow_extract::{FlowSelection, IncrementalPolicy, Shard};
use appflow_load::BackfillId;

/// One run of the export over one account and region's flows.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The destination as the user gave it (for the report and the manifest).
    pub dest_text: String,
    pub selection: FlowSelection,
    pub policy: IncrementalPolicy,
    /// `--skip-unchanged`: leave unread the flows whose listing shows the same last
    /// run as when they were last read, but read each at least this often
    /// (`--recheck-every`); `None`: read every flow. Incremental runs only.
    pub skip_unchanged: Option<Duration>,
    pub shard: Shard,
    /// Once the run is asked to stop ([`crate::Stop`]), how long the flows in flight
    /// may take to end; those still reading then are given up (nothing of them is
    /// committed).
    pub stop_timeout: Duration,
    /// Run manifests kept under `_state/runs/`.
    pub keep_manifests: usize,
    /// The account (role) and region this run exports, for its manifest.
    pub target: Target,
    /// With several targets split among shards (`--shard i/N`), the shard of the
    /// targets this run's target belongs to, for its manifest (`shard` is then 0/1:
    /// the target's flows are not split).
    pub target_shard: Option<Shard>,
    /// `backfill`: read each flow's whole history and keep the runs started in its
    /// window; `None` for an incremental `run`.
    pub backfill: Option<Backfill>,
    /// The command line, recorded in the manifest.
    pub arguments: Vec<String>,
    /// The release of appflow-export running, recorded in the manifest.
    pub release: &'static str,
}

impl Plan {
    /// An incremental run of every flow into `dest_text` by `release`, with the
    /// defaults of the CLI.
    pub fn new(dest_text: impl Into<String>, release: &'static str) -> Self {
        Plan {
            dest_text: dest_text.into(),
            selection: FlowSelection::All,
            policy: IncrementalPolicy::default(),
            skip_unchanged: None,
            shard: Shard::default(),
            stop_timeout: Duration::from_secs(25),
            keep_manifests: 500,
            target: Target::default(),
            target_shard: None,
            backfill: None,
            arguments: Vec::new(),
            release,
        }
    }
}

/// A backfill: the runs it merges (started in `[since_ms, until_ms)`), and how it
/// keeps its progress.
#[derive(Clone, Debug)]
pub struct Backfill {
    pub since_ms: i64,
    pub until_ms: i64,
    /// The window as given; names the progress files of the flows it completed.
    pub id: BackfillId,
    /// Commit what was read at least this often.
    pub checkpoint_every: Duration,
    /// Read even the flows an earlier run of this backfill completed.
    pub restart: bool,
}

/// The account and region one run exports, and the role it reads them through
/// (`None`: the job's own credentials).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// The account, when known before the listing (a role's, an organization's
    /// member's): the report and the manifest name it even when the listing fails.
    pub account: Option<String>,
    pub region: Option<String>,
    pub role_arn: Option<String>,
}
