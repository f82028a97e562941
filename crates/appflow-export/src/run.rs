//! `appflow-export run`: list flows, read what is new, stage, commit, record state.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use appflow_extract::{
    ExtractJob, Extractor, FlowDetails, FlowEvent, FlowInfo, FlowListing, FlowSelection,
    FlowSummary, IncrementalPolicy, Resume, Shard, cutoff,
};
use appflow_load::{
    AddId, BackfillId, BackfillProgress, BackfilledFlow, CommitReport, Destination, FlowRun,
    FlowUpdate, Loader, RunManifest, S3Options, Stage, StateFile, run_id,
};
use aws_config::SdkConfig;
use futures::StreamExt;

use crate::cli::{BackfillArgs, RunArgs, S3Args};
use crate::progress::Progress;
use crate::{EXIT_DESTINATION, EXIT_FLOWS_FAILED, EXIT_USAGE, Failure, aws};

/// A validated `run`: everything checked before any API call.
#[derive(Clone, Debug)]
pub struct Plan {
    pub dest: Destination,
    pub dest_text: String,
    pub selection: FlowSelection,
    pub policy: IncrementalPolicy,
    pub concurrency: usize,
    pub appflow_endpoint: Option<String>,
    pub s3: S3Options,
    pub shard: Shard,
    pub dry_run: bool,
    /// Run manifests kept under `_state/runs/`.
    pub keep_manifests: usize,
    /// The account (role) and region this run exports, for its manifest.
    pub target: Target,
    /// `backfill`: read each flow's whole history and keep the runs started in its
    /// window; `None` for an incremental `run`.
    pub backfill: Option<Backfill>,
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

/// The role and region one run uses (`None`: the environment's).
#[derive(Clone, Debug, Default)]
pub struct Target {
    pub region: Option<String>,
    pub role_arn: Option<String>,
}

/// The S3 addressing of `--s3-endpoint`, `--s3-path-style` and the environment.
pub fn s3_options(args: &S3Args) -> S3Options {
    let env_endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .ok()
        .filter(|s| !s.is_empty());
    S3Options::resolve(args.s3_endpoint.clone(), env_endpoint, args.s3_path_style)
}

/// `--shard i/N`, or `auto` from AWS Batch's array job variables.
fn parse_shard(arg: Option<&str>) -> anyhow::Result<Shard> {
    const INDEX: &str = "AWS_BATCH_JOB_ARRAY_INDEX";
    const SIZE: &str = "AWS_BATCH_JOB_ARRAY_SIZE";
    match arg {
        None => Ok(Shard::default()),
        Some("auto") if std::env::var_os(INDEX).is_none() && std::env::var_os(SIZE).is_none() => {
            // Not an array job (AWS Batch sets both only for its children): one shard.
            tracing::info!("--shard auto outside an AWS Batch array job: exporting every flow");
            Ok(Shard::default())
        }
        Some("auto") => {
            let var = |name: &str| -> anyhow::Result<u32> {
                let value = std::env::var(name).map_err(|_| {
                    anyhow!("--shard auto needs {name} (set by AWS Batch in an array job)")
                })?;
                value
                    .trim()
                    .parse()
                    .map_err(|_| anyhow!("--shard auto: {name}='{value}' is not a whole number"))
            };
            let (index, size) = (var(INDEX)?, var(SIZE)?);
            Ok(Shard::new(
                index,
                size,
                &format!("auto ({INDEX}={index}, {SIZE}={size})"),
            )?)
        }
        Some(text) => Ok(Shard::parse(text)?),
    }
}

impl Plan {
    pub fn from_args(args: &RunArgs) -> Result<Self, Failure> {
        let usage = |e| Failure::new(EXIT_USAGE, e);
        let dest = Destination::parse(&args.dest).map_err(|e| usage(e.into()))?;
        let selection = match (&args.flows, &args.flow_pattern) {
            (names, _) if !names.is_empty() => {
                if let Some(bad) = names.iter().find(|n| n.trim().is_empty()) {
                    return Err(usage(anyhow!("--flows has an empty name ('{bad}')")));
                }
                FlowSelection::Names(names.clone())
            }
            (_, Some(glob)) => FlowSelection::pattern(glob).map_err(|e| usage(e.into()))?,
            _ => FlowSelection::All,
        };
        Ok(Plan {
            dest,
            dest_text: args.dest.clone(),
            selection,
            policy: IncrementalPolicy {
                lookback: args.lookback,
                max_open_age: args.max_open_age,
            },
            concurrency: usize::from(args.concurrency),
            appflow_endpoint: args.appflow_endpoint.clone(),
            s3: s3_options(&args.s3),
            shard: parse_shard(args.shard.as_deref()).map_err(usage)?,
            dry_run: args.dry_run,
            keep_manifests: args.keep_manifests as usize,
            target: Target::default(),
            backfill: None,
        })
    }
}

/// What a run did, printed at its end and recorded in its manifest.
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
        let conflicts = self.commit.conflicts + self.flows_table.conflicts;
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

    /// The manifest of this run: `arguments` as given, the exit code, and the error
    /// that ended the run early, if one did.
    pub fn manifest(
        &self,
        arguments: Vec<String>,
        exit_code: u8,
        fatal: Option<&Failure>,
    ) -> RunManifest {
        let mut errors = self.failures.clone();
        errors.extend(fatal.map(|f| format!("{:#}", f.error)));
        RunManifest {
            run_id: self.run_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            arguments,
            dest: self.dest.clone(),
            shard: self.shard.to_string(),
            region: self.target.region.clone(),
            role_arn: self.target.role_arn.clone(),
            started_at: iso(self.started_ms),
            finished_at: iso(self.started_ms + self.duration.as_millis() as i64),
            duration_seconds: self.duration.as_secs_f64(),
            exit_code,
            list_flows_calls: self.list_pages,
            describe_calls: self.describe_pages,
            records: self.records,
            files_written: self.commit.files_written,
            files_unchanged: self.commit.files_unchanged,
            conflicts: self.commit.conflicts + self.flows_table.conflicts,
            flows_listed: self.flows_listed as u64,
            flows_table_written: self.flows_table.files_written,
            flows_already_backfilled: self.flows_already_backfilled as u64,
            flows: self.flows.clone(),
            errors,
        }
    }

    /// The run ended early: flows read but not yet committed are not exported (the
    /// next run reads them again, their watermarks did not move).
    fn abandon(&mut self) {
        let uncommitted = self.flows.iter_mut().skip(self.flows_committed);
        for flow in uncommitted.filter(|f| f.error.is_none()) {
            flow.error =
                Some("read, but the run ended before its rows and state were committed".into());
            self.flows_exported -= 1;
        }
    }

    /// Ok, or the failed flows as one error (exit code 1).
    pub fn into_result(self) -> Result<(), Failure> {
        if self.failures.is_empty() {
            return Ok(());
        }
        let n = self.failures.len();
        let list = self.failures.join("\n  ");
        Err(Failure::new(
            EXIT_FLOWS_FAILED,
            anyhow!("{n} flow(s) not exported:\n  {list}"),
        ))
    }
}

/// Flags and the config file win over the AWS environment; where both are set and
/// differ, say so instead of ignoring the environment silently.
fn warn_overridden_env(args: &RunArgs) {
    let chosen = [
        (
            "AWS_REGION",
            args.region.first().map(String::as_str),
            "--region",
        ),
        (
            "AWS_DEFAULT_REGION",
            args.region.first().map(String::as_str),
            "--region",
        ),
        (
            "AWS_ENDPOINT_URL_APPFLOW",
            args.appflow_endpoint.as_deref(),
            "--appflow-endpoint",
        ),
        (
            "AWS_ENDPOINT_URL_S3",
            args.s3.s3_endpoint.as_deref(),
            "--s3-endpoint",
        ),
        (
            "AWS_ENDPOINT_URL",
            args.appflow_endpoint.as_deref(),
            "--appflow-endpoint",
        ),
        (
            "AWS_ENDPOINT_URL",
            args.s3.s3_endpoint.as_deref(),
            "--s3-endpoint",
        ),
    ];
    if let Ok(env) = std::env::var("AWS_MAX_ATTEMPTS") {
        tracing::warn!(
            variable = "AWS_MAX_ATTEMPTS",
            ignored = %env,
            used = args.max_attempts,
            "AWS_MAX_ATTEMPTS is ignored: --max-attempts (default 20) sets the attempts per call, here {}",
            args.max_attempts
        );
    }
    for (var, value, flag) in chosen {
        if let (Ok(env), Some(value)) = (std::env::var(var), value)
            && env != value
        {
            tracing::warn!(
                variable = var,
                ignored = %env,
                used = value,
                "{var} is ignored: {flag} (or its key in --config) sets {value}"
            );
        }
    }
}

/// Each (role, region) pair to export: every `--region` of every `--role-arn`.
fn targets(args: &RunArgs) -> Vec<(Option<&str>, Option<&str>)> {
    let roles: Vec<Option<&str>> = if args.role_arn.is_empty() {
        vec![None]
    } else {
        args.role_arn.iter().map(|r| Some(r.as_str())).collect()
    };
    let regions: Vec<Option<&str>> = if args.region.is_empty() {
        vec![None]
    } else {
        args.region.iter().map(|r| Some(r.as_str())).collect()
    };
    roles
        .iter()
        .flat_map(|role| regions.iter().map(move |region| (*role, *region)))
        .collect()
}

pub async fn command(args: RunArgs) -> Result<(), Failure> {
    let plan = Plan::from_args(&args)?;
    run_targets(&args, plan).await
}

/// `appflow-export backfill`: the runs of `--since..=--until`, from every flow's whole
/// retained history.
pub async fn backfill(args: BackfillArgs) -> Result<(), Failure> {
    let start = |day: chrono::NaiveDate| {
        day.and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_millis()
    };
    let since_ms = start(args.since);
    let until_ms = match args.until {
        Some(until) if until < args.since => {
            return Err(Failure::new(
                EXIT_USAGE,
                anyhow!("--until {until} is before --since {}", args.since),
            ));
        }
        Some(until) => until.succ_opt().map_or(i64::MAX, start),
        None => i64::MAX,
    };
    let mut plan = Plan::from_args(&args.run)?;
    plan.backfill = Some(Backfill {
        since_ms,
        until_ms,
        id: BackfillId {
            since: args.since.to_string(),
            until: args.until.map(|d| d.to_string()),
        },
        checkpoint_every: args.checkpoint_every,
        restart: args.restart,
    });
    run_targets(&args.run, plan).await
}

/// One run of `plan` per (role, region) pair of `args`.
async fn run_targets(args: &RunArgs, plan: Plan) -> Result<(), Failure> {
    warn_overridden_env(args);
    if let Some(bad) = args.role_arn.iter().find(|r| !r.starts_with("arn:")) {
        return Err(Failure::new(
            EXIT_USAGE,
            anyhow!("--role-arn '{bad}' is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
        ));
    }
    let targets = targets(args);
    let arguments: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // The worst outcome wins: a destination failure stops the rest (they would fail
    // alike); a failed account or region does not.
    let mut worst: Option<Failure> = None;
    for (role, region) in targets.iter().copied() {
        let sdk = aws::for_target(args.max_attempts, region, role).await;
        let Some(region) = sdk.region().map(|r| r.to_string()) else {
            return Err(Failure::new(
                EXIT_USAGE,
                anyhow!("no AWS region: pass --region or set AWS_REGION"),
            ));
        };
        if targets.len() > 1 {
            println!(
                "== {}, {region}",
                role.unwrap_or("the environment's account")
            );
        }
        let mut plan = plan.clone();
        plan.target = Target {
            region: Some(region),
            role_arn: role.map(str::to_string),
        };
        let outcome = if plan.dry_run {
            prepare(&plan, &sdk, now_ms(), false)
                .await
                .and_then(|prepared| {
                    print!("{}", DryRun(&plan, &prepared));
                    // A real run would fail these flows: so does the dry run.
                    let problems = &prepared.listing.problems;
                    if problems.is_empty() {
                        return Ok(());
                    }
                    let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
                    Err(Failure::new(
                        EXIT_FLOWS_FAILED,
                        anyhow!(
                            "{} flow(s) would not be exported:\n  {}",
                            list.len(),
                            list.join("\n  ")
                        ),
                    ))
                })
        } else {
            match run_recorded(&plan, &sdk, arguments.clone()).await {
                Ok(report) => {
                    print!("{report}");
                    report.into_result()
                }
                Err(f) => Err(f),
            }
        };
        if let Err(f) = outcome {
            let stop = f.code == EXIT_DESTINATION;
            if targets.len() > 1 {
                crate::print_error(&f);
            }
            if worst.as_ref().is_none_or(|w| f.code > w.code) {
                worst = Some(f);
            }
            if stop {
                break;
            }
        }
    }
    match worst {
        None => Ok(()),
        Some(f) if targets.len() > 1 => Err(Failure::new(
            f.code,
            anyhow!("some accounts or regions were not fully exported (see above)"),
        )),
        Some(f) => Err(f),
    }
}

/// One run, then its manifest under `_state/runs/` (also when the run failed, as far
/// as the destination can still be written), keeping the newest `keep_manifests`.
pub async fn run_recorded(
    plan: &Plan,
    sdk: &SdkConfig,
    arguments: Vec<String>,
) -> Result<RunReport, Failure> {
    let mut report = RunReport::start(plan);
    let started = Instant::now();
    let result = execute(plan, sdk, &mut report).await;
    report.duration = started.elapsed();
    let exit_code = match &result {
        Ok(()) if report.failures.is_empty() => 0,
        Ok(()) => EXIT_FLOWS_FAILED,
        Err(f) => {
            report.abandon();
            f.code
        }
    };
    let manifest = report.manifest(arguments, exit_code, result.as_ref().err());
    let loader = Loader::new(plan.dest.store(sdk, &plan.s3));
    let written = loader.write_manifest(&manifest).await;
    if written.is_ok() {
        // Old manifests are housekeeping: failing to remove them (say, without
        // s3:DeleteObject) is worth a warning, not a failed run.
        match loader.prune_manifests(plan.keep_manifests).await {
            Ok(removed) => tracing::debug!(removed, "old run manifests removed"),
            Err(e) => tracing::warn!(
                error = format!("{:#}", anyhow::Error::new(e)),
                "old run manifests could not be removed (s3:DeleteObject on _state/runs/?)"
            ),
        }
    }
    // The last log line of every run, in text or JSON: the summary, key by key.
    let summary = |exit_code: u8| {
        tracing::info!(
            run_id = %manifest.run_id,
            exit_code,
            flows_exported = report.flows_exported,
            flows_failed = report.failures.len(),
            list_flows_calls = report.list_pages,
            describe_calls = report.describe_pages,
            records = report.records,
            files_written = report.commit.files_written,
            files_unchanged = report.commit.files_unchanged,
            conflicts = manifest.conflicts,
            flows_listed = report.flows_listed,
            seconds = report.duration.as_secs_f64(),
            "run finished"
        )
    };
    let outcome = match (result, written) {
        (Ok(()), Ok(())) => Ok(()),
        (Ok(()), Err(e)) => Err(Failure::new(
            EXIT_DESTINATION,
            anyhow::Error::new(e).context(format!(
                "the run's data and state were written, but its manifest {} was not",
                manifest.key()
            )),
        )),
        (Err(f), Ok(_)) => Err(f),
        (Err(f), Err(e)) => {
            tracing::warn!(error = %e, "the failed run's manifest could not be written");
            Err(f)
        }
    };
    match outcome {
        Ok(()) => {
            summary(exit_code);
            Ok(report)
        }
        Err(f) => {
            summary(f.code);
            Err(f)
        }
    }
}

/// Epoch milliseconds as RFC 3339 UTC with milliseconds, as manifests and `status` show times.
pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || format!("{ms} ms"),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

/// What a run will do, worked out before it reads any run history: the flows this
/// shard owns, each with the state it resumes from and its cutoff.
pub struct Prepared {
    loader: Loader,
    extractor: Extractor,
    listing: FlowListing,
    jobs: Vec<(ExtractJob, Resume)>,
    /// Owned flows an earlier run of this backfill completed: not read again.
    already_backfilled: Vec<(ExtractJob, Resume)>,
}

/// Opens the destination (`check`: that it can be written), lists the flows, reads
/// the state of the owned flows' accounts and regions and derives each cutoff; a
/// backfill also leaves out the flows an earlier run of it completed.
async fn prepare(plan: &Plan, sdk: &SdkConfig, now: i64, check: bool) -> Result<Prepared, Failure> {
    let dest_failure = |e: appflow_load::Error| Failure::new(EXIT_DESTINATION, e);
    let store = if check {
        plan.dest.open(sdk, &plan.s3).await.map_err(dest_failure)?
    } else {
        plan.dest.store(sdk, &plan.s3)
    };
    let loader = Loader::new(store);
    let region = sdk
        .region()
        .map_or_else(|| "the configured region".to_string(), |r| r.to_string());
    let extractor = Extractor::new(
        aws::appflow_client(sdk, plan.appflow_endpoint.as_deref()),
        region,
    );
    let listing = extractor
        .list_flows(&plan.selection)
        .await
        .map_err(|e| Failure::new(EXIT_FLOWS_FAILED, e))?;
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
        let state = loader
            .read_state(&key.0, &key.1)
            .await
            .map_err(dest_failure)?;
        states.insert(key.clone(), state);
        if let Some(backfill) = plan.backfill.as_ref().filter(|b| !b.restart) {
            let progress = loader
                .read_backfill(&backfill.id, &key.0, &key.1)
                .await
                .map_err(dest_failure)?;
            backfilled.insert(key, progress);
        }
    }
    let (already_backfilled, jobs): (Vec<_>, Vec<_>) = owned
        .into_iter()
        .map(|flow| {
            let state = states
                .get(&(flow.account_id.clone(), flow.region.clone()))
                .and_then(|s| s.flows.get(&flow.name));
            let resume = Resume {
                watermark: state.and_then(|s| s.watermark_ms),
                oldest_open: state.and_then(|s| s.oldest_open_ms),
            };
            let job = match &plan.backfill {
                // A backfill pages to the end: no early stop at any watermark.
                Some(b) => ExtractJob {
                    flow: flow.clone(),
                    cutoff: Some(b.since_ms),
                    until: (b.until_ms < i64::MAX).then_some(b.until_ms),
                    full_scan: true,
                },
                None => ExtractJob {
                    flow: flow.clone(),
                    cutoff: cutoff(resume, plan.policy, now),
                    until: None,
                    full_scan: state.is_some_and(|s| !s.pages_sorted),
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
    Ok(Prepared {
        loader,
        extractor,
        listing,
        jobs,
        already_backfilled,
    })
}

/// `run --dry-run`'s listing: one line per flow the run would export.
struct DryRun<'a>(&'a Plan, &'a Prepared);

impl fmt::Display for DryRun<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (plan, prepared) = (self.0, self.1);
        write!(
            f,
            "dry run: would export {} flows to {}",
            prepared.jobs.len(),
            plan.dest_text
        )?;
        if plan.shard.is_split() {
            write!(
                f,
                " (shard {} of {} selected flows)",
                plan.shard,
                prepared.listing.flows.len()
            )?;
        }
        writeln!(f, "; nothing is written")?;
        writeln!(f, "  FLOW  WATERMARK  READS BACK TO")?;
        for (job, resume) in &prepared.jobs {
            let watermark = resume.watermark.map_or_else(|| "-".to_string(), iso);
            let reads_to = match (job.cutoff, job.full_scan) {
                _ if plan.backfill.is_some() => "(whole history: backfill)".to_string(),
                (None, _) => "(whole history: never exported)".to_string(),
                (Some(c), false) => iso(c),
                (Some(c), true) => format!(
                    "{} (whole history: its pages were not newest-first last time)",
                    iso(c)
                ),
            };
            writeln!(f, "  {}  {watermark}  {reads_to}", job.flow.name)?;
        }
        for (job, resume) in &prepared.already_backfilled {
            let watermark = resume.watermark.map_or_else(|| "-".to_string(), iso);
            writeln!(
                f,
                "  {}  {watermark}  (none: an earlier run of this backfill completed it; --restart reads it again)",
                job.flow.name
            )?;
        }
        for problem in &prepared.listing.problems {
            writeln!(f, "  not exported: {problem}")?;
        }
        Ok(())
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Runs one export with the given AWS configuration: rounds of reading and
/// committing until every job is done. An incremental run is one round; a backfill
/// ends a round (stops starting flows, lets those in flight finish) every
/// `--checkpoint-every`, so an interruption costs at most that much reading.
pub async fn execute(plan: &Plan, sdk: &SdkConfig, report: &mut RunReport) -> Result<(), Failure> {
    let now = report.started_ms;
    let dest_failure = |e: appflow_load::Error| Failure::new(EXIT_DESTINATION, e);
    let Prepared {
        loader,
        extractor,
        listing,
        jobs,
        already_backfilled,
    } = prepare(plan, sdk, now, true).await?;
    report.list_pages = listing.pages;
    report.flows_listed = listing.details.len();
    report.flows_selected = listing.flows.len();
    report.flows_already_backfilled = already_backfilled.len();
    for problem in &listing.problems {
        tracing::error!(error = %problem, "flow skipped");
        report.failures.push(problem.to_string());
    }
    if let Some(backfill) = &plan.backfill {
        if !already_backfilled.is_empty() {
            tracing::info!(
                flows = already_backfilled.len(),
                "flows completed by an earlier run of this backfill are not read again (--restart reads them)"
            );
        }
        if backfill.restart {
            let regions: BTreeSet<(&str, &str)> = jobs
                .iter()
                .map(|(j, _)| (j.flow.account_id.as_str(), j.flow.region.as_str()))
                .collect();
            for (account, region) in regions {
                loader
                    .record_backfill(&backfill.id, account, region, &BTreeMap::new(), Some(now))
                    .await
                    .map_err(dest_failure)?;
            }
        }
    }
    let progress = Progress::new(jobs.len());
    let queue: Arc<Mutex<VecDeque<ExtractJob>>> =
        Arc::new(Mutex::new(jobs.into_iter().map(|(job, _)| job).collect()));
    loop {
        let reading = Instant::now();
        let mut round = read_round(plan, &extractor, &queue, now, report, &progress).await?;
        tracing::info!(
            seconds = reading.elapsed().as_secs_f64(),
            flows = round.flows.len(),
            records = report.records,
            "flows read and staged"
        );
        let more = queue.lock().is_ok_and(|q| !q.is_empty());
        if !more {
            progress.reading_done();
        }
        commit_round(plan, &loader, &mut round, report, &progress).await?;
        if !more {
            break;
        }
    }
    progress.finish();
    report.flows_table = commit_flows_table(&loader, sdk, &listing.details, now).await?;
    Ok(())
}

/// The flows one round read to their end, and their staged rows.
struct Round {
    stage: Stage,
    /// `(flow, summary)` of each flow read whole, in the order they ended.
    flows: Vec<(FlowInfo, FlowSummary)>,
}

/// Reads flows from `queue` until it is empty or, in a backfill, the round has
/// lasted `--checkpoint-every` (then no flow is started and those in flight end).
/// A flow's pages are staged as they come; a flow that fails half-way has its
/// pages discarded, so nothing of it is committed.
async fn read_round(
    plan: &Plan,
    extractor: &Extractor,
    queue: &Arc<Mutex<VecDeque<ExtractJob>>>,
    now: i64,
    report: &mut RunReport,
    progress: &Progress,
) -> Result<Round, Failure> {
    let started = Instant::now();
    // The round takes jobs until the queue is empty or, in a backfill, it has lasted
    // --checkpoint-every (it always takes one). It also takes none once this function
    // returns, early or not: no flow is started that nobody reads.
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_return = StopOnDrop(stop.clone());
    let checkpoint = plan.backfill.as_ref().map(|b| b.checkpoint_every);
    let jobs = futures::stream::poll_fn({
        let (queue, stop) = (queue.clone(), stop.clone());
        let mut taken = 0_usize;
        move |_| {
            let due = taken > 0 && checkpoint.is_some_and(|every| started.elapsed() >= every);
            if due || stop.load(Ordering::Relaxed) {
                return Poll::Ready(None);
            }
            let job = queue.lock().ok().and_then(|mut q| q.pop_front());
            taken += usize::from(job.is_some());
            Poll::Ready(job)
        }
    });
    let mut events = extractor.extract(jobs, plan.concurrency);
    let mut round = Round {
        stage: Stage::new().map_err(|e| Failure::new(EXIT_FLOWS_FAILED, e))?,
        flows: Vec::new(),
    };
    // The adds of each flow being read; a flow whose page could not be converted
    // is failed at once and its later events ignored.
    let mut reading: HashMap<FlowInfo, Vec<AddId>> = HashMap::new();
    let mut failed: HashSet<FlowInfo> = HashSet::new();
    while let Some((job, event)) = events.next().await {
        let flow = &job.flow;
        let fail = match event {
            _ if failed.contains(flow) => None,
            FlowEvent::Page(records) => {
                progress.page(records.len() as u64);
                match appflow_transform::to_batches(flow, &records, now) {
                    Ok(batches) => {
                        // A staging failure (the local temporary disk) leaves the
                        // stage unusable: stop before any data or state is written.
                        // (Extract already refused start times no day can hold.)
                        let id = round
                            .stage
                            .add(&batches)
                            .with_context(|| {
                                format!(
                                    "staging the rows of flow '{}' in a temporary folder",
                                    flow.name
                                )
                            })
                            .map_err(|e| Failure::new(EXIT_FLOWS_FAILED, e))?;
                        reading.entry(flow.clone()).or_default().push(id);
                        None
                    }
                    Err(e) => Some(anyhow::Error::new(e).context(format!("flow '{}'", flow.name))),
                }
            }
            FlowEvent::Done(summary) => {
                reading.remove(flow);
                report.flows_exported += 1;
                report.describe_pages += summary.pages;
                report.records += summary.records;
                report.flows.push(FlowRun {
                    describe_calls: summary.pages,
                    records: summary.records,
                    ..flow_run(&job)
                });
                round.flows.push((flow.clone(), summary));
                progress.flow_done();
                None
            }
            FlowEvent::Failed(e) => Some(anyhow::Error::from(e)),
        };
        if let Some(e) = fail {
            // Its later pages would be dropped: stop paging it (a no-op once it ended).
            job.cancel();
            round
                .stage
                .discard(reading.remove(flow).unwrap_or_default());
            let message = format!("{e:#}");
            tracing::error!(flow = %flow.name, error = %message, "flow not exported");
            report.failures.push(message.clone());
            report.flows.push(FlowRun {
                error: Some(message),
                ..flow_run(&job)
            });
            failed.insert(flow.clone());
            progress.flow_done();
        }
    }
    Ok(round)
}

/// Sets its flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A flow's line in the run manifest, before it is read.
fn flow_run(job: &ExtractJob) -> FlowRun {
    FlowRun {
        account_id: job.flow.account_id.clone(),
        region: job.flow.region.clone(),
        flow_name: job.flow.name.clone(),
        cutoff: job.cutoff.map(iso),
        ..Default::default()
    }
}

/// Commits a round: its day files first, then its flows' watermarks, then (in a
/// backfill) that those flows are done. A crash in between only means redoing work.
async fn commit_round(
    plan: &Plan,
    loader: &Loader,
    round: &mut Round,
    report: &mut RunReport,
    progress: &Progress,
) -> Result<(), Failure> {
    let now = report.started_ms;
    let dest_failure = |e: appflow_load::Error| Failure::new(EXIT_DESTINATION, e);
    let committing = Instant::now();
    progress.merging();
    let files = loader
        .commit_with(&mut round.stage, &|key, total| progress.day(key, total))
        .await
        .map_err(dest_failure)?;
    tracing::info!(
        seconds = committing.elapsed().as_secs_f64(),
        files_written = files.files_written,
        "day files committed"
    );
    report.commit += files;
    let mut updates: BTreeMap<(String, String), BTreeMap<String, FlowUpdate>> = BTreeMap::new();
    for (flow, summary) in &round.flows {
        updates
            .entry((flow.account_id.clone(), flow.region.clone()))
            .or_default()
            .insert(
                flow.name.clone(),
                update_of(flow, summary, now, plan.backfill.is_some()),
            );
    }
    for ((account, region), flows) in &updates {
        report.commit.conflicts += u64::from(
            loader
                .update_state(account, region, flows, now)
                .await
                .map_err(dest_failure)?,
        );
    }
    if let Some(backfill) = &plan.backfill {
        let completed_ms = now_ms();
        for ((account, region), flows) in &updates {
            let done = flows
                .iter()
                .map(|(name, u)| {
                    let flow = BackfilledFlow {
                        completed_ms,
                        records: u.records_read,
                        run_id: report.run_id.clone(),
                    };
                    (name.clone(), flow)
                })
                .collect();
            report.commit.conflicts += u64::from(
                loader
                    .record_backfill(&backfill.id, account, region, &done, None)
                    .await
                    .map_err(dest_failure)?,
            );
        }
    }
    report.flows_committed = report.flows.len();
    Ok(())
}

/// Merges the listing into the flows table: every listed flow, whichever were
/// selected, so a flow missing from the listing really is gone. An empty listing
/// carries no ARN to read the account from; STS names it, so the account's last
/// flows are marked deleted too.
async fn commit_flows_table(
    loader: &Loader,
    sdk: &SdkConfig,
    listed: &[FlowDetails],
    now: i64,
) -> Result<CommitReport, Failure> {
    let mut snapshots: BTreeMap<(String, String), Vec<FlowDetails>> = BTreeMap::new();
    for details in listed {
        let key = (details.flow.account_id.clone(), details.flow.region.clone());
        snapshots.entry(key).or_default().push(details.clone());
    }
    if snapshots.is_empty()
        && let Some(region) = sdk.region()
    {
        match aws::caller_account(sdk).await {
            Ok(account) => {
                snapshots.insert((account, region.to_string()), Vec::new());
            }
            Err(e) => tracing::warn!(
                error = %e,
                "ListFlows returned no flow and the account is unknown: flows deleted since the last run are not marked deleted"
            ),
        }
    }
    let mut report = CommitReport::default();
    for ((account, region), flows) in snapshots {
        let batch = appflow_transform::flows_batch(&flows, now)
            .with_context(|| format!("the flows table of {account} {region}"))
            .map_err(|e| Failure::new(EXIT_DESTINATION, e))?;
        report += loader
            .commit_flows(&account, &region, batch, now)
            .await
            .map_err(|e| Failure::new(EXIT_DESTINATION, e))?;
    }
    Ok(report)
}

/// What this run learned of a flow; `now` is when the run started, before it read.
/// A backfill (whose window may end in the past) moves the watermark only forwards,
/// as any run does, and leaves the open-run and page-order state to the incremental
/// runs: its `read_started_ms` is older than any run's.
fn update_of(flow: &FlowInfo, summary: &FlowSummary, now: i64, backfill: bool) -> FlowUpdate {
    FlowUpdate {
        read_started_ms: if backfill { i64::MIN } else { now },
        flow_arn: flow.arn.clone(),
        newest_started_ms: summary.newest_started,
        oldest_open_ms: summary.oldest_open,
        pages_sorted: summary.pages_sorted,
        records_read: summary.records,
    }
}
