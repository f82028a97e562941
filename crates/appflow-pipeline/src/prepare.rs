//! What a run will do, worked out before it reads any run history.

use std::collections::{BTreeMap, BTreeSet};

use appflow_extract::{ExtractJob, FlowInfo, FlowListing, Resume, cutoff, open_since, unchanged};
use appflow_load::{BackfillProgress, StateFile};

use crate::Pipeline;
use crate::error::{Error, Result};
use crate::plan::Plan;

/// The flows this shard owns, each with the state it resumes from and its cutoff:
/// all that `run --dry-run` prints.
#[derive(Debug)]
pub struct Prepared {
    pub listing: FlowListing,
    /// The flows to read, in listing order.
    pub jobs: Vec<(ExtractJob, Resume)>,
    /// Owned flows an earlier run of this backfill completed: not read again.
    pub already_backfilled: Vec<(ExtractJob, Resume)>,
    /// Owned flows `--skip-unchanged` leaves unread: their listing shows what it
    /// showed when they were last read ([`unchanged`]).
    pub unchanged: Vec<(ExtractJob, Resume)>,
}

impl Pipeline {
    /// Lists the flows, reads the state of the owned flows' accounts and regions and
    /// derives each cutoff; a backfill also leaves out the flows an earlier run of it
    /// completed, and `--skip-unchanged` the flows whose listing shows nothing new.
    /// Writes nothing.
    pub async fn prepare(&self, plan: &Plan, now: i64) -> Result<Prepared> {
        let listing = self
            .extractor
            .list_flows(&plan.selection)
            .await
            .map_err(Error::List)?;
        let owned: Vec<&FlowInfo> = listing
            .flows
            .iter()
            .filter(|f| plan.shard.owns(f))
            .collect();

        let regions: BTreeSet<(String, String)> = owned
            .iter()
            .map(|f| (f.account_id.clone(), f.region.clone()))
            .collect();
        let mut states: BTreeMap<(String, String), StateFile> = BTreeMap::new();
        // What an earlier run of this backfill completed, by account and region.
        let mut backfilled: BTreeMap<(String, String), BackfillProgress> = BTreeMap::new();
        for key in regions {
            let state = self.loader.read_state(&key.0, &key.1).await?;
            states.insert(key.clone(), state);
            if let Some(backfill) = plan.backfill.as_ref().filter(|b| !b.restart) {
                let progress = self
                    .loader
                    .read_backfill(&backfill.id, &key.0, &key.1)
                    .await?;
                backfilled.insert(key, progress);
            }
        }
        let listed: BTreeMap<&FlowInfo, _> = listing
            .details
            .iter()
            .map(|d| (&d.flow, d.last_run()))
            .collect();
        let (already_backfilled, jobs): (Vec<_>, Vec<_>) = owned
            .into_iter()
            .map(|flow| {
                let state = states
                    .get(&(flow.account_id.clone(), flow.region.clone()))
                    .and_then(|s| s.flows.get(&flow.name));
                let resume = Resume {
                    watermark: state.and_then(|s| s.watermark_ms),
                    oldest_open: state.and_then(|s| s.oldest_open_ms),
                    pages_sorted: state.is_none_or(|s| s.pages_sorted),
                    read_ms: state.and_then(|s| s.read_ms()),
                    last_run_read: state.and_then(|s| s.listed_run()),
                    last_run_listed: listed.get(flow).cloned().flatten(),
                };
                let job = match &plan.backfill {
                    // A backfill pages to the end: no early stop at any watermark.
                    Some(b) => ExtractJob {
                        flow: flow.clone(),
                        cutoff: Some(b.since_ms),
                        until: (b.until_ms < i64::MAX).then_some(b.until_ms),
                        full_scan: true,
                        // A backfill leaves the open-run state to incremental runs.
                        open_since: None,
                    },
                    None => ExtractJob {
                        flow: flow.clone(),
                        cutoff: cutoff(&resume, plan.policy, now),
                        until: None,
                        full_scan: !resume.pages_sorted,
                        open_since: Some(open_since(plan.policy, now)),
                    },
                };
                (job, resume)
            })
            .partition(|(job, _): &(ExtractJob, Resume)| {
                let f = &job.flow;
                backfilled
                    .get(&(f.account_id.clone(), f.region.clone()))
                    .is_some_and(|p| p.completed(&f.name))
            });
        let (unchanged, jobs) = match (plan.skip_unchanged, &plan.backfill) {
            (Some(recheck_every), None) => jobs
                .into_iter()
                .partition(|(_, resume)| unchanged(resume, recheck_every, now)),
            _ => (Vec::new(), jobs),
        };
        Ok(Prepared {
            listing,
            jobs,
            already_backfilled,
            unchanged,
        })
    }
}
