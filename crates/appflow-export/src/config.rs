//! `--config FILE`: the options of `run` in a TOML file. Its keys are the flags'
//! names in snake_case; a flag given on the command line overrides the file.
//!
//! The file is turned into the flags it stands for, less those the user gave, so a
//! value in the file is parsed and checked by exactly the code that parses the flag.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::cli::{Cli, ConfigArgs, LogFormat, RunArgs};
use crate::{EXIT_USAGE, Failure};

/// The options of `appflow-export run`, as a config file holds them. Every key is
/// optional; a missing key takes the flag's default.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Where to write: `s3://bucket/prefix` or a local folder (`--dest`).
    pub dest: Option<String>,
    /// Only these flows (`--flows`).
    pub flows: Option<Vec<String>>,
    /// Only flows whose name matches this glob (`--flow-pattern`).
    pub flow_pattern: Option<String>,
    /// Re-read this much before each flow's watermark, e.g. "1h" (`--lookback`).
    pub lookback: Option<String>,
    /// Open runs older than this hold no read back, e.g. "7d" (`--max-open-age`).
    pub max_open_age: Option<String>,
    /// Leave unread the flows whose listing shows nothing new (`--skip-unchanged`).
    pub skip_unchanged: Option<bool>,
    /// With `skip_unchanged`, read every flow at least this often, e.g. "1h"
    /// (`--recheck-every`).
    pub recheck_every: Option<String>,
    /// Flows read at the same time (`--concurrency`).
    pub concurrency: Option<u16>,
    /// Attempts per AWS call (`--max-attempts`).
    pub max_attempts: Option<u32>,
    /// AWS regions to export, one or a list (`--region`).
    pub region: Option<OneOrMany>,
    /// IAM roles to assume, one per account to export (`--role-arn`).
    pub role_arn: Option<OneOrMany>,
    /// AppFlow endpoint URL (`--appflow-endpoint`).
    pub appflow_endpoint: Option<String>,
    /// S3 endpoint URL (`--s3-endpoint`).
    pub s3_endpoint: Option<String>,
    /// Path-style S3 addressing (`--s3-path-style`).
    pub s3_path_style: Option<bool>,
    /// Server-side encryption of every object written, "AES256" or "aws:kms" (`--sse`).
    pub sse: Option<String>,
    /// The KMS key of `sse = "aws:kms"` (`--sse-kms-key-id`).
    pub sse_kms_key_id: Option<String>,
    /// The account that must own the bucket (`--expected-bucket-owner`).
    pub expected_bucket_owner: Option<String>,
    /// `i/N` or `auto` (`--shard`).
    pub shard: Option<String>,
    /// How long flows being read may take to end after SIGTERM, e.g. "25s"
    /// (`--stop-timeout`).
    pub stop_timeout: Option<String>,
    /// "emf": CloudWatch Embedded Metric Format lines on stdout (`--metrics`).
    pub metrics: Option<String>,
    /// The JobName dimension of the metrics (`--job-name`).
    pub job_name: Option<String>,
    /// Run manifests kept (`--keep-manifests`).
    pub keep_manifests: Option<u32>,
    /// `text` or `json` (`--log-format`).
    pub log_format: Option<String>,
}

/// A key that takes one value or a list (`region = "eu-west-1"` or `region = ["a", "b"]`).
#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn joined(&self) -> String {
        match self {
            OneOrMany::One(v) => v.clone(),
            OneOrMany::Many(v) => v.join(","),
        }
    }

    fn of(values: &[String]) -> Option<Self> {
        match values {
            [] => None,
            [one] => Some(OneOrMany::One(one.clone())),
            many => Some(OneOrMany::Many(many.to_vec())),
        }
    }
}

impl ConfigFile {
    fn read(path: &Path) -> Result<Self, Failure> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))
            .map_err(|e| Failure::new(EXIT_USAGE, e))?;
        toml::from_str(&text)
            .with_context(|| format!("the config file {} is not valid", path.display()))
            .map_err(|e| Failure::new(EXIT_USAGE, e))
    }

    /// The flags this file stands for, except those `given` on the command line.
    fn to_args(&self, given: &dyn Fn(&str) -> bool) -> Vec<OsString> {
        let mut args: Vec<String> = Vec::new();
        let mut value = |flag: &str, v: Option<String>| {
            if let Some(v) = v.filter(|_| !given(flag)) {
                args.push(format!("--{flag}={v}"));
            }
        };
        value("dest", self.dest.clone());
        value("flows", self.flows.as_ref().map(|f| f.join(",")));
        value("flow-pattern", self.flow_pattern.clone());
        value("lookback", self.lookback.clone());
        value("max-open-age", self.max_open_age.clone());
        value("recheck-every", self.recheck_every.clone());
        value("concurrency", self.concurrency.map(|n| n.to_string()));
        value("max-attempts", self.max_attempts.map(|n| n.to_string()));
        value("region", self.region.as_ref().map(OneOrMany::joined));
        value("role-arn", self.role_arn.as_ref().map(OneOrMany::joined));
        value("appflow-endpoint", self.appflow_endpoint.clone());
        value("s3-endpoint", self.s3_endpoint.clone());
        value("sse", self.sse.clone());
        value("sse-kms-key-id", self.sse_kms_key_id.clone());
        value("expected-bucket-owner", self.expected_bucket_owner.clone());
        value("shard", self.shard.clone());
        value("stop-timeout", self.stop_timeout.clone());
        value("metrics", self.metrics.clone());
        value("job-name", self.job_name.clone());
        value("keep-manifests", self.keep_manifests.map(|n| n.to_string()));
        value("log-format", self.log_format.clone());
        for (flag, on) in [
            ("s3-path-style", self.s3_path_style),
            ("skip-unchanged", self.skip_unchanged),
        ] {
            if on == Some(true) && !given(flag) {
                args.push(format!("--{flag}"));
            }
        }
        args.into_iter().map(OsString::from).collect()
    }

    /// The effective options of a parsed `run`, as a config file would hold them.
    pub fn effective(args: &RunArgs, log_format: LogFormat) -> Self {
        let duration = |d: Duration| humantime::format_duration(d).to_string();
        ConfigFile {
            dest: Some(args.dest.clone()),
            flows: (!args.flows.is_empty()).then(|| args.flows.clone()),
            flow_pattern: args.flow_pattern.clone(),
            lookback: Some(duration(args.lookback)),
            max_open_age: Some(duration(args.max_open_age)),
            skip_unchanged: Some(args.skip_unchanged),
            recheck_every: Some(duration(args.recheck_every)),
            concurrency: Some(args.concurrency),
            max_attempts: Some(args.max_attempts),
            region: OneOrMany::of(&args.region),
            role_arn: OneOrMany::of(&args.role_arn),
            appflow_endpoint: args.appflow_endpoint.clone(),
            s3_endpoint: args.s3.s3_endpoint.clone(),
            s3_path_style: Some(args.s3.s3_path_style),
            sse: args.s3.sse.map(|s| {
                match s {
                    crate::cli::SseArg::Aes256 => "AES256",
                    crate::cli::SseArg::Kms => "aws:kms",
                }
                .to_string()
            }),
            sse_kms_key_id: args.s3.sse_kms_key_id.clone(),
            expected_bucket_owner: args.s3.expected_bucket_owner.clone(),
            shard: args.shard.clone(),
            stop_timeout: Some(duration(args.stop_timeout)),
            metrics: args.metrics.map(|_| "emf".to_string()),
            job_name: args.job_name.clone(),
            keep_manifests: Some(args.keep_manifests),
            log_format: Some(
                match log_format {
                    LogFormat::Text => "text",
                    LogFormat::Json => "json",
                }
                .to_string(),
            ),
        }
    }
}

/// The subcommands that take `--config`.
const WITH_CONFIG: [&str; 3] = ["run", "backfill", "config"];

/// The command line with the config file's flags put in: `prog [..] run <file's
/// flags> <user's flags>`. Unchanged when there is no `--config`.
pub fn expand(argv: Vec<OsString>) -> Result<Vec<OsString>, Failure> {
    let Some(sub) = argv
        .iter()
        .position(|a| a.to_str().is_some_and(|a| WITH_CONFIG.contains(&a)))
    else {
        return Ok(argv);
    };
    let Some(path) = config_path(&argv[sub + 1..]) else {
        return Ok(argv);
    };
    let file = ConfigFile::read(&path)?;
    // Checked alone first (every key), so a bad value is reported as the file's.
    let mut alone: Vec<OsString> = vec!["appflow-export".into(), "run".into()];
    alone.extend(file.to_args(&|_| false));
    if file.dest.is_none() {
        alone.push("--dest=unset".into());
    }
    if let Err(e) = Cli::try_parse_from(&alone) {
        let why = e.render().to_string();
        let why = why.trim().trim_start_matches("error: ");
        let why = why.lines().next().unwrap_or(why);
        return Err(Failure::new(
            EXIT_USAGE,
            anyhow!("the config file {} is not valid: {why}", path.display()),
        ));
    }
    let on_command_line = |flag: &str| {
        argv.iter()
            .filter_map(|a| a.to_str())
            .any(|a| a == format!("--{flag}") || a.starts_with(&format!("--{flag}=")))
    };
    // `--flows` and `--flow-pattern` exclude each other: either one on the command
    // line overrides both keys of the file.
    let given = |flag: &str| match flag {
        "flows" | "flow-pattern" => on_command_line("flows") || on_command_line("flow-pattern"),
        _ => on_command_line(flag),
    };
    let from_file = file.to_args(&given);
    let mut out: Vec<OsString> = argv[..=sub].to_vec();
    out.extend(from_file);
    out.extend(argv[sub + 1..].iter().cloned());
    Ok(out)
}

/// `--config FILE` or `--config=FILE` among a subcommand's arguments.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            return None;
        }
        if arg == "--config" {
            return iter.next().map(PathBuf::from);
        }
        // `--config=FILE`: a path that is not UTF-8 is read lossily, then not found,
        // which is an error naming it (never silently ignored).
        let text = arg.to_string_lossy();
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    None
}

/// `appflow-export config --print`: the effective options as TOML.
pub fn print(cli_log_format: LogFormat, args: &ConfigArgs) -> Result<(), Failure> {
    let effective = ConfigFile::effective(&args.run, cli_log_format);
    let text = toml::to_string(&effective).map_err(|e| Failure::new(EXIT_USAGE, e))?;
    print!("# the effective options of `appflow-export run`\n{text}");
    Ok(())
}
