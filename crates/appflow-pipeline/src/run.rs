//! One run, start to end: prepare, rounds of reading and committing, the flows
//! table, then the run's manifest and its summary line.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use appflow_extract::Resume;
use appflow_load::{CommitReport, FlowRun, layout};
use appflow_model::{FlowDetails, FlowInfo};

use crate::Pipeline;
use crate::error::{Error, Result};
use crate::observer::Observer;
use crate::plan::Plan;
use crate::report::RunReport;
use crate::round::{Queue, chain, flow_run};

/// How a run ended, for its exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Every flow was exported.
    Exported,
    /// Some flows failed; the others were exported and their state advanced.
    FlowsFailed,
    /// The run stopped early (see [`Error::kind`]).
    Failed(crate::ErrorKind),
    /// The run was asked to stop ([`crate::Stop`]) and did: what it read to the end is
    /// committed, the next run reads the rest.
    Interrupted,
}

impl Pipeline {
    /// One run of `plan`: checks that the destination can be written, reads and
    /// commits every owned flow, merges the listing into the flows table, and
    /// fills `report` as it goes (also when it fails part-way).
    pub async fn execute(
        &self,
        plan: &Plan,
        report: &mut RunReport,
        observer: &dyn Observer,
    ) -> Result<()> {
        let now = report.started_ms;
        // The region asked for, until the listing names the flows' (also when it fails).
        report.region = self.extractor.region().to_string();
        report.account.clone_from(&plan.target.account);
        self.loader.store().check().await?;
        let prepared = self.prepare(plan, now).await?;
        report.list_pages = prepared.listing.pages;
        // The account and region the flows' ARNs name (the state's key), else the
        // region asked for.
        let first = prepared.listing.details.first().map(|d| &d.flow);
        if let Some(first) = first {
            report.region.clone_from(&first.region);
        }
        if let Some(first) = first {
            report.account = Some(first.account_id.clone());
        }
        report.current_to = prepared.current_to;
        report.flows_listed = prepared.listing.details.len();
        report.flows_selected = prepared.listing.flows.len();
        report.flows_already_backfilled = prepared.already_backfilled.len();
        for problem in &prepared.listing.problems {
            tracing::error!(error = %problem, "flow skipped");
            report.failures.push(problem.to_string());
        }
        if let Some(backfill) = &plan.backfill {
            if !prepared.already_backfilled.is_empty() {
                tracing::info!(
                    flows = prepared.already_backfilled.len(),
                    "flows completed by an earlier run of this backfill are not read again (--restart reads them)"
                );
            }
            if backfill.restart {
                let regions: BTreeSet<(&str, &str)> = prepared
                    .jobs
                    .iter()
                    .map(|(j, _)| (j.flow.account_id.as_str(), j.flow.region.as_str()))
                    .collect();
                for (account, region) in regions {
                    let conflicts = self
                        .loader
                        .record_backfill(&backfill.id, account, region, &BTreeMap::new(), Some(now))
                        .await?;
                    report.commit.conflicts += u64::from(conflicts);
                }
            }
        }
        report.flows_skipped = prepared.unchanged.len();
        if !prepared.unchanged.is_empty() {
            tracing::info!(
                flows = prepared.unchanged.len(),
                "flows not read: their listing shows the same last run as when they were last read (--skip-unchanged)"
            );
        }
        for (job, _) in &prepared.unchanged {
            report.flows.push(FlowRun {
                skipped: true,
                ..flow_run(job)
            });
        }
        let jobs = prepared.jobs.len();
        observer.reading(jobs);
        let resumes: HashMap<FlowInfo, Resume> = prepared
            .jobs
            .iter()
            .map(|(job, resume)| (job.flow.clone(), resume.clone()))
            .collect();
        let queue: Queue = Arc::new(Mutex::new(
            prepared
                .jobs
                .into_iter()
                .map(|(job, _)| job)
                .collect::<VecDeque<_>>(),
        ));
        loop {
            let reading = Instant::now();
            let mut round = self
                .read_round(plan, &queue, &resumes, report, observer)
                .await?;
            tracing::info!(
                seconds = reading.elapsed().as_secs_f64(),
                flows = round.flows.len(),
                records = report.records,
                "flows read and staged"
            );
            let more = queue.lock().is_ok_and(|q| !q.is_empty());
            let stopping = self.stop.requested();
            if !more || stopping.is_some() {
                observer.reading_done();
            }
            self.commit_round(plan, &mut round, report, observer)
                .await?;
            let read = report.flows.iter().filter(|f| !f.skipped && !f.interrupted);
            let not_read = jobs.saturating_sub(read.count());
            // A stop that came while the last flows were read, which all ended within
            // the stop timeout, gave up nothing: the run goes on to its flows table and
            // is complete (logged below), so a scheduler does not run it again.
            if let Some(why) = stopping.filter(|_| more || not_read > 0) {
                // What ended is committed; the flows table waits for the next run.
                report.flows_not_read = not_read;
                tracing::warn!(
                    reason = %why,
                    flows_not_read = report.flows_not_read,
                    "run stopped: the flows read to their end are committed; the next run reads the rest"
                );
                report.interrupted = Some(why);
                observer.finish();
                return Ok(());
            }
            if !more {
                break;
            }
        }
        observer.finish();
        report.flows_table = self
            .commit_flows_table(&prepared.listing.details, now, &mut report.account)
            .await?;
        if let Some(why) = self.stop.requested() {
            // Asked once every flow was read, or while the last ones were and they all
            // ended in time: nothing was left to give up.
            tracing::info!(
                reason = %why,
                "stop asked for, but every flow was read to its end: the run finished its commit and is complete"
            );
        }
        Ok(())
    }

    /// Merges the listing into the flows table: every listed flow, whichever were
    /// selected, so a flow missing from the listing really is gone. An empty listing
    /// carries no ARN to read the account from; STS names it, so the account's last
    /// flows are marked deleted too.
    async fn commit_flows_table(
        &self,
        listed: &[FlowDetails],
        now: i64,
        report_account: &mut Option<String>,
    ) -> Result<CommitReport> {
        let mut snapshots: BTreeMap<(String, String), Vec<FlowDetails>> = BTreeMap::new();
        for details in listed {
            let key = (details.flow.account_id.clone(), details.flow.region.clone());
            snapshots.entry(key).or_default().push(details.clone());
        }
        if snapshots.is_empty() {
            match self.extractor.caller_account().await {
                Ok(account) => {
                    report_account.get_or_insert_with(|| account.clone());
                    let region = self.extractor.region().to_string();
                    snapshots.insert((account, region), Vec::new());
                }
                Err(e) => tracing::warn!(
                    error = %chain(&e),
                    "ListFlows returned no flow and the account is unknown: flows deleted since the last run are not marked deleted"
                ),
            }
        }
        let mut report = CommitReport::default();
        for ((account, region), flows) in snapshots {
            let batch = appflow_transform::flows_batch(&flows, now).map_err(|source| {
                Error::FlowsTable {
                    account: account.clone(),
                    region: region.clone(),
                    source,
                }
            })?;
            report += self
                .loader
                .commit_flows(&account, &region, batch, now)
                .await?;
        }
        Ok(report)
    }

    /// One run of `plan` ([`Pipeline::execute`]), then its manifest under
    /// `_state/runs/` (also when the run failed, as far as the destination can still
    /// be written), keeping the newest `keep_manifests`, then the `run finished` log
    /// line. `exit_code` names the code each outcome exits with, for the manifest.
    pub async fn run_recorded(
        &self,
        plan: &Plan,
        observer: &dyn Observer,
        exit_code: fn(Status) -> u8,
    ) -> (RunReport, Result<()>) {
        let mut report = RunReport::start(plan);
        let started = Instant::now();
        let calls = self.extractor.take_calls();
        let result = self.execute(plan, &mut report, observer).await;
        report.duration = started.elapsed();
        let calls = self.extractor.take_calls() - calls;
        (report.appflow_attempts, report.throttled) = (calls.attempts, calls.throttled);
        report.limit_ceiling = calls.ceiling;
        (report.limit_lowest, report.limit_highest) = (calls.lowest, calls.highest);
        let status = match &result {
            Ok(()) if report.interrupted.is_some() => Status::Interrupted,
            Ok(()) if report.failures.is_empty() => Status::Exported,
            Ok(()) => Status::FlowsFailed,
            Err(e) => {
                report.abandon();
                Status::Failed(e.kind())
            }
        };
        let fatal = result.as_ref().err().map(|e| chain(e));
        report.fatal.clone_from(&fatal);
        let manifest = report.manifest(plan, exit_code(status), fatal);
        let written = self.loader.write_manifest(&manifest).await;
        if written.is_ok() {
            // Old manifests are housekeeping: failing to remove them (say, without
            // s3:DeleteObject) is worth a warning, not a failed run.
            match self.loader.prune_manifests(plan.keep_manifests).await {
                Ok(removed) => tracing::debug!(removed, "old run manifests removed"),
                Err(e) => tracing::warn!(
                    error = %chain(&e),
                    "old run manifests could not be removed (s3:DeleteObject on _state/runs/?)"
                ),
            }
        }
        let result = match (result, written) {
            (Ok(()), Ok(())) => Ok(()),
            (Ok(()), Err(source)) => Err(Error::Manifest {
                key: layout::manifest_file(&manifest.run_id),
                source,
            }),
            (Err(e), Ok(())) => Err(e),
            (Err(e), Err(m)) => {
                tracing::warn!(error = %m, "the failed run's manifest could not be written");
                Err(e)
            }
        };
        if let Err(e) = &result {
            report.fatal.get_or_insert_with(|| chain(e));
        }
        let exit = match &result {
            Ok(()) => manifest.exit_code,
            Err(e) => exit_code(Status::Failed(e.kind())),
        };
        // The last log line of every run, in text or JSON: the summary, key by key.
        tracing::info!(
            run_id = %manifest.run_id,
            exit_code = exit,
            flows_exported = report.flows_exported,
            flows_failed = report.failures.len(),
            flows_skipped = report.flows_skipped,
            interrupted = report.interrupted.as_deref(),
            retention_gaps = report.retention_gaps,
            list_flows_calls = report.list_pages,
            describe_calls = report.describe_pages,
            throttled = report.throttled,
            concurrency_limit_lowest = report.limit_lowest,
            records = report.records,
            files_written = report.commit.files_written,
            files_unchanged = report.commit.files_unchanged,
            conflicts = manifest.conflicts,
            flows_listed = report.flows_listed,
            seconds = report.duration.as_secs_f64(),
            "run finished"
        );
        (report, result)
    }
}
