//! What a run will do, worked out before it reads any run history.

use std::collections::{BTreeMap, BTreeSet};

use appflow_extract::{
    ExtractJob, FlowInfo, FlowListing, Resume, created_again, cutoff, open_since, unchanged,
};
use appflow_load::{BackfillProgress, StateFile};
use appflow_model::FlowDetails;

use crate::Pipeline;
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::time::iso;

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
    /// Up to when each owned flow's export is known complete (epoch ms, by flow name;
    /// flows never exported nor read left out): what its state says, and for a flow
    /// `--skip-unchanged` leaves unread, the start of this run (its listing shows that
    /// nothing happened since it was read).
    pub current_to: BTreeMap<String, i64>,
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
        let listed: BTreeMap<&FlowInfo, &FlowDetails> =
            listing.details.iter().map(|d| (&d.flow, d)).collect();
        let state_of = |f: &FlowInfo| {
            states
                .get(&(f.account_id.clone(), f.region.clone()))
                .and_then(|s| s.flows.get(&f.name))
        };
        let (already_backfilled, jobs): (Vec<_>, Vec<_>) = owned
            .into_iter()
            .map(|flow| {
                let state = state_of(flow);
                let resume = Resume {
                    watermark: state.and_then(|s| s.watermark_ms),
                    oldest_open: state.and_then(|s| s.oldest_open_ms),
                    pages_sorted: state.is_none_or(|s| s.pages_sorted),
                    read_ms: state.and_then(|s| s.read_ms()),
                    last_run_read: state.and_then(|s| s.listed_run()),
                    reads: state.map_or(0, |s| s.reads),
                    last_run_listed: listed.get(flow).and_then(|d| d.last_run()),
                    created_ms: listed.get(flow).and_then(|d| d.created_at),
                };
                let job = match &plan.backfill {
                    // A backfill pages to the end: no early stop at any watermark.
                    Some(b) => ExtractJob {
                        flow: flow.clone(),
                        cutoff: Some(b.since_ms),
                        until: (b.until_ms < i64::MAX).then_some(b.until_ms),
                        full_scan: true,
                        open_since: Some(open_since(plan.policy, now)),
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
        let (unchanged, jobs): (Vec<_>, Vec<_>) = match (plan.skip_unchanged, &plan.backfill) {
            (Some(recheck_every), None) => jobs
                .into_iter()
                .partition(|(_, resume)| unchanged(resume, recheck_every, now)),
            _ => (Vec::new(), jobs),
        };
        for (job, resume) in &jobs {
            if let (Some(created), Some(watermark)) = (created_again(resume), resume.watermark) {
                // Said once: after the first read of the new flow its state holds what
                // its listing shows, until it runs (and its watermark passes `created`).
                let (flow, created, watermark) = (&job.flow.name, iso(created), iso(watermark));
                let message = "flow created again under its name since its last export: its runs are exported beside the earlier flow's";
                if resume.last_run_read == resume.last_run_listed {
                    tracing::debug!(flow, created, watermark, message);
                } else {
                    tracing::info!(flow, created, watermark, message);
                }
            }
        }
        // A flow left unread as unchanged is known complete only to its last read: a
        // run its listing does not show yet may have come since (the lag says so).
        let mut current_to = BTreeMap::new();
        for (job, _) in jobs.iter().chain(&already_backfilled).chain(&unchanged) {
            if let Some(at) = state_of(&job.flow).and_then(|s| s.current_to_ms()) {
                current_to.insert(job.flow.name.clone(), at);
            }
        }
        Ok(Prepared {
            listing,
            jobs,
            already_backfilled,
            unchanged,
            current_to,
        })
    }
}
