//! `appflow-export run` and `backfill`: flags into a [`Plan`], one pipeline per
//! (role, region), the summary printed, outcomes into exit codes. What a run does is
//! `appflow-pipeline`'s.

use anyhow::anyhow;
use appflow_extract::{Extractor, FlowSelection, IncrementalPolicy, Shard};
use appflow_load::{BackfillId, Destination, Loader, S3Options, Sse};
use appflow_pipeline::{
    Backfill, ErrorKind, Pipeline, Plan, RunReport, Status, Stop, Target, now_ms,
};
use aws_config::SdkConfig;

use crate::cli::{BackfillArgs, RunArgs, S3Args, SseArg};
use crate::dry_run::DryRun;
use crate::progress::Progress;
use crate::{
    EXIT_BUG, EXIT_DESTINATION, EXIT_FLOWS_FAILED, EXIT_STAGING, EXIT_USAGE, Failure, aws,
};

/// A validated `run` or `backfill`: everything checked before any API call.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub plan: Plan,
    pub dest: Destination,
    pub appflow_endpoint: Option<String>,
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
            concurrency: usize::from(args.concurrency),
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
            s3: s3_options(&args.s3)?,
            dry_run: args.dry_run,
            stop: Stop::default(),
        })
    }

    /// The pipeline of one account and region: AppFlow and STS through `sdk`, the
    /// destination through the same credentials.
    pub fn pipeline(&self, sdk: &SdkConfig, region: &str) -> Pipeline {
        let calls = appflow_extract::CallCounter::default();
        let extractor = Extractor::new(
            aws::appflow_client(sdk, self.appflow_endpoint.as_deref(), &calls),
            region,
        )
        .with_sts(aws_sdk_sts::Client::new(sdk))
        .with_call_counter(calls);
        Pipeline::new(extractor, Loader::new(self.dest.store(sdk, &self.s3)))
            .with_stop(self.stop.clone())
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

/// One run per (role, region) pair of `args`.
async fn run_targets(args: &RunArgs, invocation: Invocation) -> Result<(), Failure> {
    warn_overridden_env(args);
    if let Some(bad) = args.role_arn.iter().find(|r| !r.starts_with("arn:")) {
        return Err(Failure::new(
            EXIT_USAGE,
            anyhow!("--role-arn '{bad}' is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
        ));
    }
    let targets = targets(args);
    let emf = args
        .metrics
        .is_some()
        .then(|| crate::metrics::Emf::new(args.job_name.clone()));
    let started = std::time::Instant::now();
    let mut reports: Vec<RunReport> = Vec::new();
    // The worst outcome wins: a destination failure stops the rest (they would fail
    // alike); a failed account or region does not.
    let mut worst: Option<Failure> = None;
    for (role, region) in targets.iter().copied() {
        if let Some(why) = invocation.stop.requested() {
            worst = Some(interrupted(&why));
            break;
        }
        let sdk = aws::for_target(args.max_attempts, region, role).await;
        let Some(region) = sdk.region().map(|r| r.to_string()) else {
            return Err(Failure::new(
                EXIT_USAGE,
                anyhow!("no AWS region: pass --region or set AWS_REGION"),
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
        if targets.len() > 1 {
            println!(
                "== {}, {region}",
                role.unwrap_or("the environment's account")
            );
        }
        let pipeline = invocation.pipeline(&sdk, &region);
        let mut plan = invocation.plan.clone();
        plan.target = Target {
            region: Some(region),
            role_arn: role.map(str::to_string),
        };
        let outcome = if invocation.dry_run {
            dry_run(&pipeline, &plan).await
        } else {
            let (report, result) = pipeline
                .run_recorded(&plan, &Progress::new(), exit_code)
                .await;
            let outcome = match result {
                Ok(()) => {
                    print!("{report}");
                    match &report.interrupted {
                        Some(why) => Err(interrupted(why)),
                        None => flows_failed(&report),
                    }
                }
                Err(e) => Err(failure(e)),
            };
            if let Some(emf) = &emf {
                println!("{}", emf.target_line(&report));
            }
            reports.push(report);
            outcome
        };
        if let Err(f) = outcome {
            // The destination, the staging disk or a bug: the next target would fail alike.
            let stop = f.code >= EXIT_DESTINATION;
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
    if let Some(emf) = emf.as_ref().filter(|_| !invocation.dry_run) {
        println!(
            "{}",
            emf.run_line(&reports, started.elapsed().as_secs_f64())
        );
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
