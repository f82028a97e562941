//! `appflow-export run` and `backfill`: flags into a [`Plan`], one pipeline per
//! (role, region), the summary printed, outcomes into exit codes. What a run does is
//! `appflow-pipeline`'s.

use anyhow::anyhow;
use appflow_extract::{Extractor, FlowSelection, IncrementalPolicy, Shard};
use std::sync::Arc;

use appflow_load::{BackfillId, Destination, Loader, ObjectStore, S3Options, Sse};
use appflow_pipeline::{
    Backfill, ErrorKind, Pipeline, Plan, RunReport, Status, Stop, Target, now_ms,
};
use aws_config::SdkConfig;
use futures::StreamExt;

use crate::cli::{BackfillArgs, RunArgs, S3Args, SseArg};
use crate::dry_run::DryRun;
use crate::outcome::{Outcome, TargetTable, describe, print_outcome};
use crate::progress::Progress;
use crate::{
    EXIT_BUG, EXIT_DESTINATION, EXIT_FLOWS_FAILED, EXIT_STAGING, EXIT_USAGE, Failure, aws, targets,
};

/// A validated `run` or `backfill`: everything checked before any API call.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub plan: Plan,
    pub dest: Destination,
    pub appflow_endpoint: Option<String>,
    /// AppFlow calls in flight at most for each target (`--concurrency`): the ceiling
    /// of each target's adaptive limit.
    pub concurrency: usize,
    pub s3: S3Options,
    pub dry_run: bool,
    /// Asks the runs to stop early (the first SIGTERM or SIGINT).
    pub stop: Stop,
}

/// The S3 options of `--s3-endpoint`, `--s3-path-style`, `--sse`,
/// `--sse-kms-key-id`, `--expected-bucket-owner` and the environment.
pub fn s3_options(args: &S3Args) -> Result<S3Options, Failure> {
    let env_endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .ok()
        .filter(|s| !s.is_empty());
    let sse = match (args.sse, &args.sse_kms_key_id) {
        (None, None) => None,
        (Some(SseArg::Aes256), None) => Some(Sse::Aes256),
        (Some(SseArg::Kms), key) => Some(Sse::Kms {
            key_id: key.clone(),
        }),
        (_, Some(_)) => {
            return Err(Failure::new(
                EXIT_USAGE,
                anyhow!("--sse-kms-key-id goes with --sse aws:kms"),
            ));
        }
    };
    Ok(S3Options {
        sse,
        expected_bucket_owner: args.expected_bucket_owner.clone(),
        region: args.dest_region.clone(),
        ..S3Options::resolve(args.s3_endpoint.clone(), env_endpoint, args.s3_path_style)
    })
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

impl Invocation {
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
        let plan = Plan {
            selection,
            policy: IncrementalPolicy {
                lookback: args.lookback,
                max_open_age: args.max_open_age,
            },
            skip_unchanged: args.skip_unchanged.then_some(args.recheck_every),
            shard: parse_shard(args.shard.as_deref()).map_err(usage)?,
            keep_manifests: args.keep_manifests as usize,
            stop_timeout: args.stop_timeout,
            arguments: crate::arguments(),
            ..Plan::new(args.dest.clone(), env!("CARGO_PKG_VERSION"))
        };
        Ok(Invocation {
            plan,
            dest,
            appflow_endpoint: args.appflow_endpoint.clone(),
            concurrency: usize::from(args.concurrency),
            s3: s3_options(&args.s3)?,
            dry_run: args.dry_run,
            stop: Stop::default(),
        })
    }

    /// The pipeline of one account and region: AppFlow and STS through `sdk` (the
    /// target's credentials), the destination through `store` (the job's).
    pub fn pipeline(&self, sdk: &SdkConfig, region: &str, store: Arc<dyn ObjectStore>) -> Pipeline {
        let extractor = Extractor::new(
            aws::appflow_client(sdk, self.appflow_endpoint.as_deref()),
            region,
        )
        .with_concurrency(self.concurrency)
        .with_sts(aws_sdk_sts::Client::new(sdk));
        Pipeline::new(extractor, Loader::new(store)).with_stop(self.stop.clone())
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
        // A region among those asked for is not ignored: it is exported too.
        let listed = |env: &str| flag == "--region" && args.region.iter().any(|r| r == env);
        if let (Ok(env), Some(value)) = (std::env::var(var), value)
            && env != value
            && !listed(&env)
        {
            tracing::warn!(
                variable = var,
                ignored = %env,
                used = value,
                "{var} is ignored: {flag} (or {}, or its key in --config) sets {value}",
                crate::config::env_var(flag.trim_start_matches("--"))
            );
        }
    }
}

/// `appflow-export run`; `stop` asks it to stop early.
pub async fn command(args: RunArgs, stop: Stop) -> Result<(), Failure> {
    let invocation = Invocation {
        stop,
        ..Invocation::from_args(&args)?
    };
    run_targets(&args, invocation).await
}

/// `appflow-export backfill`: the runs of `--since..=--until`, from every flow's whole
/// retained history; `stop` asks it to stop early.
pub async fn backfill(args: BackfillArgs, stop: Stop) -> Result<(), Failure> {
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
    let mut invocation = Invocation {
        stop,
        ..Invocation::from_args(&args.run)?
    };
    invocation.plan.backfill = Some(Backfill {
        since_ms,
        until_ms,
        id: BackfillId {
            since: args.since.to_string(),
            until: args.until.map(|d| d.to_string()),
        },
        checkpoint_every: args.checkpoint_every,
        restart: args.restart,
    });
    run_targets(&args.run, invocation).await
}

/// The run's region: the first `--region`, else the environment's, checked.
fn run_region(job: &SdkConfig) -> Result<String, Failure> {
    let Some(region) = job.region().map(|r| r.to_string()) else {
        return Err(Failure::new(
            EXIT_USAGE,
            anyhow!("no AWS region: pass --region, or set APPFLOW_EXPORT_REGION or AWS_REGION"),
        ));
    };
    if !crate::cli::is_region(&region) {
        return Err(Failure::new(
            EXIT_USAGE,
            anyhow!(
                "the region '{region}' (from AWS_REGION, AWS_DEFAULT_REGION or the profile) is not an AWS region name like eu-west-1: set it, or pass --region"
            ),
        ));
    }
    Ok(region)
}

/// Every target of `args`, `--target-concurrency` at a time: AppFlow read through each
/// target's credentials, the destination written with the job's own (or
/// `--dest-role-arn`'s), signed for the bucket's region. A target that fails does not
/// stop the others; the destination failing does.
async fn run_targets(args: &RunArgs, invocation: Invocation) -> Result<(), Failure> {
    warn_overridden_env(args);
    targets::validate(args)?;
    let job = aws::from_env(args.max_attempts, args.region.first().cloned()).await;
    let region = run_region(&job)?;
    let regions = if args.region.is_empty() {
        vec![region.clone()]
    } else {
        args.region.clone()
    };
    let dest_sdk = match &args.dest_role_arn {
        Some(role) => aws::assume(&job, role, &region, args.external_id.as_deref()).await,
        None => job.clone(),
    };
    let store = invocation.dest.connect(&dest_sdk, &invocation.s3).await;
    if !invocation.dry_run {
        // With the job's own identity: a destination that cannot be written stops
        // every target before any is read.
        store
            .check()
            .await
            .map_err(|e| Failure::new(EXIT_DESTINATION, e))?;
    }
    if args.external_id.is_some()
        && args.role_arn.is_empty()
        && !args.organization
        && args.dest_role_arn.is_none()
    {
        tracing::warn!(
            "--external-id is not sent: no role is assumed (--role-arn, --organization, --dest-role-arn)"
        );
    }
    let targets::Planned { targets, problems } = targets::plan(args, &job, &regions).await?;
    let shard = invocation.plan.shard;
    let target_shard = (targets.len() > 1 && shard.is_split()).then_some(shard);
    // Each account the organization lacks is reported by one shard only.
    let problems: Vec<targets::Problem> = problems
        .into_iter()
        .filter(|p| shard.owns_target(p.target.account.as_deref().unwrap_or_default(), ""))
        .collect();
    let all = targets.len() + problems.len();
    let (targets, flow_shard) = targets::shard(targets, shard, &job).await?;
    let several = all > 1;
    if several {
        let shard = if invocation.plan.shard.is_split() {
            format!(", shard {} of the targets", invocation.plan.shard)
        } else {
            String::new()
        };
        println!(
            "{} targets ({} at a time{shard})",
            targets.len(),
            args.target_concurrency
        );
    }
    if invocation.dry_run && (several || args.organization || !args.role_arn.is_empty()) {
        for target in &targets {
            println!("  {}", describe(target));
        }
    }
    let split = invocation.plan.shard;
    let emf = args.metrics.map(|format| {
        crate::metrics::Emf::new(
            args.job_name.clone(),
            split.is_split().then(|| split.to_string()),
            format == crate::cli::MetricsFormat::Emf,
        )
    });
    let started = std::time::Instant::now();
    let concurrency = usize::from(args.target_concurrency);
    // Bars only when one target runs at a time: several would draw over each other.
    let bars = targets.len() == 1 || concurrency == 1;
    // The exit code of the failure that stops every target not yet started (0: none).
    let stopped = std::sync::atomic::AtomicU8::new(0);
    let emf_ref = emf.as_ref();
    let one = |target: Target| {
        let (job, store, invocation, stopped) = (&job, store.clone(), &invocation, &stopped);
        async move {
            let not_started = |result| Outcome {
                target: target.clone(),
                report: None,
                result: Err(result),
                stops_all: false,
                started: false,
            };
            if let Some(why) = invocation.stop.requested() {
                return not_started(interrupted(&why));
            }
            match stopped.load(std::sync::atomic::Ordering::Relaxed) {
                0 => {}
                EXIT_STAGING => {
                    return not_started(Failure::new(
                        EXIT_STAGING,
                        anyhow!("not started: the local staging folder failed on another target"),
                    ));
                }
                code => {
                    return not_started(Failure::new(
                        code,
                        anyhow!("not started: the destination failed on another target"),
                    ));
                }
            }
            let region = target.region.clone().unwrap_or_default();
            let sdk = match &target.role_arn {
                Some(role) => aws::assume(job, role, &region, args.external_id.as_deref()).await,
                None => aws::in_region(job, &region),
            };
            let pipeline = invocation.pipeline(&sdk, &region, store);
            let mut plan = invocation.plan.clone();
            plan.shard = flow_shard;
            plan.target_shard = target_shard;
            plan.target = target.clone();
            let outcome = if invocation.dry_run {
                let result = dry_run(&pipeline, &plan).await;
                Outcome {
                    target,
                    report: None,
                    stops_all: false,
                    started: true,
                    result,
                }
            } else {
                let observer: Box<dyn appflow_pipeline::Observer> = if bars {
                    Box::new(Progress::new())
                } else {
                    Box::new(appflow_pipeline::Quiet)
                };
                let (report, result) = pipeline
                    .run_recorded(&plan, observer.as_ref(), exit_code)
                    .await;
                let stops_all = result
                    .as_ref()
                    .err()
                    .is_some_and(|e| e.is_destination_unusable() || e.kind() == ErrorKind::Staging);
                let result = match result {
                    Ok(()) => match &report.interrupted {
                        Some(why) => Err(interrupted(why)),
                        None => flows_failed(&report),
                    },
                    Err(e) => Err(failure(e)),
                };
                Outcome {
                    target,
                    report: Some(report),
                    stops_all,
                    started: true,
                    result,
                }
            };
            if outcome.stops_all
                && let Err(f) = &outcome.result
            {
                stopped.store(f.code, std::sync::atomic::Ordering::Relaxed);
            }
            print_outcome(&outcome, several, emf_ref);
            outcome
        }
    };
    let mut outcomes: Vec<Outcome> = futures::stream::iter(targets.iter().cloned().map(one))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    // Accounts asked for by name that the organization does not have: not exported.
    for problem in problems {
        let f = Failure::new(EXIT_FLOWS_FAILED, anyhow!("{}", problem.why));
        if several {
            crate::print_error(&f);
        }
        outcomes.push(Outcome {
            target: problem.target,
            report: None,
            result: Err(f),
            stops_all: false,
            started: false,
        });
    }
    let reports: Vec<&RunReport> = outcomes.iter().filter_map(|o| o.report.as_ref()).collect();
    if let Some(emf) = emf.as_ref().filter(|_| !invocation.dry_run) {
        let every = outcomes.iter().all(|o| o.result.is_ok());
        println!(
            "{}",
            emf.run_line(&reports, every, started.elapsed().as_secs_f64())
        );
    }
    let mut worst: Option<Failure> = None;
    for outcome in &outcomes {
        if let Err(f) = &outcome.result
            && worst.as_ref().is_none_or(|w| f.code > w.code)
        {
            worst = Some(Failure::new(f.code, anyhow!("{:#}", f.error)));
        }
    }
    if several && !invocation.dry_run {
        print!("{}", TargetTable(&outcomes));
    }
    match worst {
        None => Ok(()),
        Some(f) if several => {
            let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
            let not_started = outcomes.iter().filter(|o| !o.started).count();
            let would = if invocation.dry_run {
                "would not be"
            } else {
                "not"
            };
            Err(Failure::new(
                f.code,
                anyhow!(
                    "{failed} of {} targets {would} fully exported{} (see above)",
                    outcomes.len(),
                    if not_started > 0 {
                        format!(", {not_started} of them not started")
                    } else {
                        String::new()
                    }
                ),
            ))
        }
        Some(f) => Err(f),
    }
}

/// `--dry-run`: the flows and where each read would stop; reads state, writes nothing.
async fn dry_run(pipeline: &Pipeline, plan: &Plan) -> Result<(), Failure> {
    let prepared = pipeline.prepare(plan, now_ms()).await.map_err(failure)?;
    print!("{}", DryRun(plan, &prepared));
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
}

/// The exit code of each way a run ends (README.md documents them).
pub fn exit_code(status: Status) -> u8 {
    match status {
        Status::Exported => 0,
        Status::FlowsFailed | Status::Failed(ErrorKind::Listing) => EXIT_FLOWS_FAILED,
        Status::Failed(ErrorKind::Destination) => EXIT_DESTINATION,
        Status::Failed(ErrorKind::Staging) => EXIT_STAGING,
        Status::Failed(ErrorKind::Bug) => EXIT_BUG,
        Status::Interrupted => crate::signals::interrupted_exit_code(),
    }
}

/// A run stopped by `why` (a signal): exits with 128 + the signal.
fn interrupted(why: &str) -> Failure {
    Failure::new(
        crate::signals::interrupted_exit_code(),
        anyhow!(
            "stopped by {why}: what was read to its end is committed; the next run reads the rest"
        ),
    )
}

/// A run that ended early, with its exit code.
pub fn failure(e: appflow_pipeline::Error) -> Failure {
    Failure::new(exit_code(Status::Failed(e.kind())), e)
}

/// Ok, or the failed flows as one error (exit code 1).
pub fn flows_failed(report: &RunReport) -> Result<(), Failure> {
    if report.failures.is_empty() {
        return Ok(());
    }
    let n = report.failures.len();
    let list = report.failures.join("\n  ");
    Err(Failure::new(
        EXIT_FLOWS_FAILED,
        anyhow!("{n} flow(s) not exported:\n  {list}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_exits_with_the_code_readme_documents() {
        let cases = [
            (Status::Exported, 0),
            (Status::FlowsFailed, 1),
            (Status::Failed(ErrorKind::Listing), 1),
            (Status::Failed(ErrorKind::Destination), 3),
            (Status::Failed(ErrorKind::Staging), 4),
            (Status::Failed(ErrorKind::Bug), 5),
        ];
        for (status, code) in cases {
            assert_eq!(exit_code(status), code, "{status:?}");
        }
    }
}
