//! What a run did: printed at its end (`Display`) and recorded in its manifest.

use std::fmt;
use std::time::Duration;

use appflow_extract::Shard;
use appflow_load::{CommitReport, FlowRun, RunManifest, run_id};

use crate::plan::{Plan, Target};
use crate::time::{iso, now_ms};

/// What a run did.
#[derive(Debug, Default)]
pub struct RunReport {
    pub run_id: String,
    /// When the run started, epoch ms.
    pub started_ms: i64,
    pub dest: String,
    /// Every flow the run tried.
    pub flows: Vec<FlowRun>,
    pub flows_exported: usize,
    /// Of `flows`, those whose rows and state are committed (the first ones).
    pub flows_committed: usize,
    /// Flows an earlier run of this backfill completed, not read again.
    pub flows_already_backfilled: usize,
    /// Flows `--skip-unchanged` did not read (in `flows` too, marked skipped).
    pub flows_skipped: usize,
    /// Flows whose read found a retention gap (in `flows`, with the window).
    pub retention_gaps: usize,
    /// The error that ended the run before it was done, if one did.
    pub fatal: Option<String>,
    /// Why the run was stopped early ([`crate::Stop`]), if it was.
    pub interrupted: Option<String>,
    /// Flows not read because the run was stopped (never started, or given up).
    pub flows_not_read: usize,
    /// The account and region exported (a run's listing is of one account); the
    /// account is `None` when it could not be told (no flow listed, STS unreachable).
    pub account: Option<String>,
    pub region: String,
    /// AppFlow requests sent (every retry counts), and of those the throttled ones.
    pub appflow_attempts: u64,
    pub throttled: u64,
    /// The AppFlow calls allowed in flight (`--concurrency`), and the lowest and
    /// highest the adaptive limit under it was during the run.
    pub limit_ceiling: usize,
    pub limit_lowest: usize,
    pub limit_highest: usize,
    /// Up to when each owned flow's export is known complete after the run's commits
    /// (epoch ms, by name; flows never exported nor read left out): its watermark, or
    /// the start of the last run that read it to its end, if later
    /// (`appflow_load::current_to`; a flow `--skip-unchanged` left unread counts from
    /// its last read). Now minus the oldest is the lag operators alarm on.
    pub current_to: std::collections::BTreeMap<String, i64>,
    /// One line per flow not exported (a failed flow, a selected name not listed).
    pub failures: Vec<String>,
    pub list_pages: u64,
    pub describe_pages: u64,
    pub records: u64,
    /// The role and region of this run.
    pub target: Target,
    /// `--shard`, and how many of the selected flows it owns.
    pub shard: Shard,
    pub flows_selected: usize,
    pub commit: CommitReport,
    /// Flows `ListFlows` returned (all of them, selected or not).
    pub flows_listed: usize,
    /// The `flows` table's files.
    pub flows_table: CommitReport,
    pub duration: Duration,
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "exported {} flows ({} failed) to {} in {:.2} s",
            self.flows_exported,
            self.failures.len(),
            self.dest,
            self.duration.as_secs_f64()
        )?;
        writeln!(
            f,
            "  API calls  {} ListFlows, {} DescribeFlowExecutionRecords",
            self.list_pages, self.describe_pages
        )?;
        if self.throttled > 0 {
            writeln!(
                f,
                "  throttled  {} of {} AppFlow requests, retried; calls in flight limited to {} at the lowest, {} at the highest (--concurrency {})",
                self.throttled,
                self.appflow_attempts,
                self.limit_lowest,
                self.limit_highest,
                self.limit_ceiling
            )?;
        }
        if self.shard.is_split() {
            writeln!(
                f,
                "  shard      {}: {} of {} selected flows",
                self.shard,
                self.flows.len(),
                self.flows_selected
            )?;
        }
        if self.flows_already_backfilled > 0 {
            writeln!(
                f,
                "  resumed    {} flows already backfilled by an earlier run of this backfill, not read again (--restart reads them)",
                self.flows_already_backfilled
            )?;
        }
        if self.flows_skipped > 0 {
            writeln!(
                f,
                "  skipped    {} flows unchanged since they were last read (--skip-unchanged)",
                self.flows_skipped
            )?;
        }
        if self.retention_gaps > 0 {
            writeln!(
                f,
                "  gaps       {} flows: AWS no longer returns runs that were never exported (retention gap; see the warnings and the manifest)",
                self.retention_gaps
            )?;
        }
        writeln!(f, "  records    {} read", self.records)?;
        writeln!(
            f,
            "  files      {} written, {} unchanged",
            self.commit.files_written, self.commit.files_unchanged
        )?;
        write!(
            f,
            "  flows      {} listed; flows table: {} written, {} unchanged",
            self.flows_listed, self.flows_table.files_written, self.flows_table.files_unchanged
        )?;
        if let Some(why) = &self.interrupted {
            write!(
                f,
                "\n  INTERRUPTED by {why}: {} flows not read (the next run reads them); what was read to its end is committed",
                self.flows_not_read
            )?;
        }
        let conflicts = self.conflicts();
        if conflicts > 0 {
            write!(f, "\n  {conflicts} concurrent writes re-merged")?;
        }
        writeln!(f)
    }
}

impl RunReport {
    /// A run of `plan` starting now.
    pub fn start(plan: &Plan) -> Self {
        let started_ms = now_ms();
        RunReport {
            run_id: run_id(started_ms),
            started_ms,
            dest: plan.dest_text.clone(),
            shard: plan.shard,
            target: plan.target.clone(),
            ..Default::default()
        }
    }

    /// Now (epoch ms) minus the oldest [`RunReport::current_to`] of the owned flows,
    /// in seconds: how far behind the export is. `None` when no flow was ever exported.
    pub fn max_watermark_lag_seconds(&self, now_ms: i64) -> Option<f64> {
        let oldest = self.current_to.values().min()?;
        Some((now_ms - oldest).max(0) as f64 / 1000.0)
    }

    /// Conditional writes that lost a race and were merged again, of every object.
    pub fn conflicts(&self) -> u64 {
        self.commit.conflicts + self.flows_table.conflicts
    }

    /// The manifest of this run of `plan`, with its exit code and the error that
    /// ended it early, if one did.
    pub fn manifest(&self, plan: &Plan, exit_code: u8, fatal: Option<String>) -> RunManifest {
        let mut errors = self.failures.clone();
        errors.extend(fatal);
        RunManifest {
            run_id: self.run_id.clone(),
            version: plan.release.to_string(),
            arguments: plan.arguments.clone(),
            dest: self.dest.clone(),
            shard: self.shard.to_string(),
            target_shard: plan.target_shard.map(|s| s.to_string()),
            account_id: self.account.clone(),
            region: Some(self.region.clone()).filter(|r| !r.is_empty()),
            role_arn: self.target.role_arn.clone(),
            started_at: iso(self.started_ms),
            finished_at: iso(self.started_ms + self.duration.as_millis() as i64),
            duration_seconds: self.duration.as_secs_f64(),
            exit_code,
            list_flows_calls: self.list_pages,
            describe_calls: self.describe_pages,
            appflow_requests: self.appflow_attempts,
            throttled_calls: self.throttled,
            concurrency: self.limit_ceiling as u64,
            concurrency_limit_lowest: self.limit_lowest as u64,
            concurrency_limit_highest: self.limit_highest as u64,
            records: self.records,
            files_written: self.commit.files_written,
            files_unchanged: self.commit.files_unchanged,
            conflicts: self.conflicts(),
            flows_listed: self.flows_listed as u64,
            flows_table_written: self.flows_table.files_written,
            flows_already_backfilled: self.flows_already_backfilled as u64,
            flows_skipped: self.flows_skipped as u64,
            retention_gaps: self.retention_gaps as u64,
            flows: self.flows.clone(),
            errors,
            interrupted: self.interrupted.clone(),
        }
    }

    /// The run ended early: flows read but not yet committed are not exported (the
    /// next run reads them again, their watermarks did not move), and are failures.
    pub(crate) fn abandon(&mut self) {
        let uncommitted = self.flows.iter_mut().skip(self.flows_committed);
        let read = |f: &FlowRun| f.error.is_none() && !f.skipped && !f.interrupted;
        for flow in uncommitted.filter(|f| read(f)) {
            let why = "read, but the run ended before its rows and state were committed";
            self.failures
                .push(format!("flow '{}': {why}", flow.flow_name));
            flow.error = Some(why.into());
            self.flows_exported -= 1;
        }
    }
}
