//! `--config FILE`: the options of `run` in a TOML file. Its keys are the flags'
//! names in snake_case; a flag given on the command line overrides the file.
//!
//! The file is turned into the flags it stands for, less those the user gave, so a
//! value in the file is parsed and checked by exactly the code that parses the flag.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::CommandFactory;
use clap::parser::{ArgMatches, ValueSource};
use serde::{Deserialize, Serialize};

use crate::cli::{Cli, ConfigArgs, LogFormat, MetricsFormat, RunArgs};
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
    /// AppFlow calls in flight at most per account and region (`--concurrency`).
    pub concurrency: Option<u16>,
    /// Attempts per AWS call (`--max-attempts`).
    pub max_attempts: Option<u32>,
    /// AWS regions to export, one or a list (`--region`).
    pub region: Option<OneOrMany>,
    /// IAM roles AppFlow is read through, one per account to export (`--role-arn`).
    pub role_arn: Option<OneOrMany>,
    /// Export every ACTIVE account of the organization (`--organization`).
    pub organization: Option<bool>,
    /// The read-only role's name in each member account (`--role-name`).
    pub role_name: Option<String>,
    /// With `organization`: only these accounts (`--accounts`).
    pub accounts: Option<OneOrMany>,
    /// With `organization`: not these accounts (`--exclude-accounts`).
    pub exclude_accounts: Option<OneOrMany>,
    /// Sent with every AssumeRole (`--external-id`).
    pub external_id: Option<String>,
    /// The role the destination is written through (`--dest-role-arn`); default:
    /// the job's own credentials.
    pub dest_role_arn: Option<String>,
    /// The bucket's region (`--dest-region`); default: asked of S3.
    pub dest_region: Option<String>,
    /// Targets (account, region) exported at the same time (`--target-concurrency`).
    pub target_concurrency: Option<u16>,
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
        value("role-name", self.role_name.clone());
        value("accounts", self.accounts.as_ref().map(OneOrMany::joined));
        value(
            "exclude-accounts",
            self.exclude_accounts.as_ref().map(OneOrMany::joined),
        );
        value("external-id", self.external_id.clone());
        value("dest-role-arn", self.dest_role_arn.clone());
        value("dest-region", self.dest_region.clone());
        value(
            "target-concurrency",
            self.target_concurrency.map(|n| n.to_string()),
        );
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
            ("organization", self.organization),
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
            organization: Some(args.organization),
            role_name: args.role_name.clone(),
            accounts: OneOrMany::of(&args.accounts),
            exclude_accounts: OneOrMany::of(&args.exclude_accounts),
            external_id: args.external_id.clone(),
            dest_role_arn: args.dest_role_arn.clone(),
            dest_region: args.s3.dest_region.clone(),
            target_concurrency: Some(args.target_concurrency),
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
            metrics: args.metrics.map(|m| {
                match m {
                    MetricsFormat::Emf => "emf",
                    MetricsFormat::EmfRun => "emf-run",
                }
                .to_string()
            }),
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

/// The environment variable of a flag: `dest` -> `APPFLOW_EXPORT_DEST`.
pub fn env_var(flag: &str) -> String {
    format!("APPFLOW_EXPORT_{}", flag.replace('-', "_").to_uppercase())
}

/// Whether the environment sets the flag (clap reads it; an empty value is unset).
fn in_env(flag: &str) -> bool {
    std::env::var_os(env_var(flag)).is_some_and(|v| !v.is_empty())
}

/// The command line with the config file's flags put in, and what came from it.
pub struct Expanded {
    pub argv: Vec<OsString>,
    /// The config file read, if any.
    pub file: Option<PathBuf>,
    /// The flags (names, `dest`) whose values came from the file.
    pub from_file: Vec<String>,
}

/// The command line with the config file's flags put in: `prog [..] run <file's
/// flags> <user's flags>`, less the keys a flag or an `APPFLOW_EXPORT_*` variable
/// sets (flag, then environment, then file, then default). Unchanged when there is
/// no `--config` (nor `APPFLOW_EXPORT_CONFIG`).
pub fn expand(argv: Vec<OsString>) -> Result<Expanded, Failure> {
    let unchanged = |argv| Expanded {
        argv,
        file: None,
        from_file: Vec::new(),
    };
    let Some(sub) = subcommand_at(&argv)
        .filter(|&i| argv[i].to_str().is_some_and(|a| WITH_CONFIG.contains(&a)))
    else {
        return Ok(unchanged(argv));
    };
    let from_env = || {
        std::env::var_os(env_var("config"))
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let Some(path) = config_path(&argv[sub + 1..]).or_else(from_env) else {
        return Ok(unchanged(argv));
    };
    let file = ConfigFile::read(&path)?;
    // Checked alone first (every key), so a bad value is reported as the file's.
    let mut alone: Vec<OsString> = vec!["appflow-export".into(), "run".into()];
    alone.extend(file.to_args(&|_| false));
    if file.dest.is_none() {
        alone.push("--dest=unset".into());
    }
    // Without the environment: its variables are not the file's, and may conflict
    // with keys the variables will override (a variable's flows, the file's pattern).
    let without_env = with_env(Cli::command(), &|_| false);
    if let Err(e) = without_env.try_get_matches_from(&alone) {
        let why = e.render().to_string();
        let why = why.trim().trim_start_matches("error: ");
        let why = why.lines().next().unwrap_or(why);
        return Err(Failure::new(
            EXIT_USAGE,
            anyhow!("the config file {} is not valid: {why}", path.display()),
        ));
    }
    let set = |flag: &str| {
        in_env(flag)
            || argv
                .iter()
                .filter_map(|a| a.to_str())
                .any(|a| a == format!("--{flag}") || a.starts_with(&format!("--{flag}=")))
    };
    // `--flows` and `--flow-pattern` exclude each other: either one given overrides
    // both keys of the file.
    let given = |flag: &str| match flag {
        "flows" | "flow-pattern" => set("flows") || set("flow-pattern"),
        _ => set(flag),
    };
    let inserted = file.to_args(&given);
    let from_file = inserted
        .iter()
        .filter_map(|a| a.to_str())
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split_once('=').map_or(a, |(flag, _)| flag).to_string())
        .collect();
    let mut out: Vec<OsString> = argv[..=sub].to_vec();
    out.extend(inserted);
    out.extend(argv[sub + 1..].iter().cloned());
    Ok(Expanded {
        argv: out,
        file: Some(path),
        from_file,
    })
}

/// Where the subcommand is: the first argument that is neither an option nor the
/// value of the global `--log-format` (so `status --dest run` is not a `run`).
fn subcommand_at(argv: &[OsString]) -> Option<usize> {
    let mut i = 1;
    while i < argv.len() {
        let arg = argv[i].to_string_lossy();
        if arg == "--log-format" {
            i += 2;
        } else if arg.starts_with('-') {
            i += 1;
        } else {
            return Some(i);
        }
    }
    None
}

/// The command line's parser, reading each option's `APPFLOW_EXPORT_*` variable only
/// where `keep(variable)`: an empty variable is unset (as `expand` takes it), and the
/// file's own check reads none.
fn with_env(cmd: clap::Command, keep: &dyn Fn(&std::ffi::OsStr) -> bool) -> clap::Command {
    let strip = |a: clap::Arg| match a.get_env() {
        Some(var) if !keep(var) => a.env(None),
        _ => a,
    };
    let subcommands: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    let mut cmd = cmd.mut_args(strip);
    for name in subcommands {
        cmd = cmd.mut_subcommand(name, |c| c.mut_args(strip));
    }
    cmd
}

/// The parser of the command line, reading the `APPFLOW_EXPORT_*` variables that are
/// set and not empty.
pub fn command() -> clap::Command {
    // Unset ones keep their name, so `--help` still shows `[env: ...]`.
    with_env(Cli::command(), &|var| {
        std::env::var_os(var).is_none_or(|v| !v.is_empty())
    })
}

/// Where a value came from, lowest first: a higher source's value replaces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Default,
    File,
    Environment,
    Flag,
}

fn level(matches: &ArgMatches, expanded: &Expanded, id: &str) -> Level {
    match matches.value_source(id) {
        Some(ValueSource::CommandLine) if expanded.from_file.contains(&id.replace('_', "-")) => {
            Level::File
        }
        Some(ValueSource::CommandLine) => Level::Flag,
        Some(ValueSource::EnvVariable) => Level::Environment,
        _ => Level::Default,
    }
}

/// Settles the options that exclude or need each other once every source is read: of
/// two that exclude each other (`--flows` and `--flow-pattern`, `--role-arn` and
/// `--organization`) the one from the higher source wins (flag, environment, file);
/// from the same source they are an error. Then what needs `--organization` is checked.
pub fn settle(
    args: &mut RunArgs,
    matches: &ArgMatches,
    expanded: &Expanded,
) -> Result<(), Failure> {
    let usage = |why: String| Failure::new(EXIT_USAGE, anyhow!(why));
    let from = |l: Level| match l {
        Level::File => match &expanded.file {
            Some(f) => format!("the config file {}", f.display()),
            None => "the config file".to_string(),
        },
        Level::Environment => "the environment".to_string(),
        _ => "the command line".to_string(),
    };
    // Which of two set options to drop: `Some(true)` the first.
    let exclusive = |a: &str, b: &str| -> Result<bool, Failure> {
        let (la, lb) = (level(matches, expanded, a), level(matches, expanded, b));
        if la == lb {
            let (fa, fb) = (a.replace('_', "-"), b.replace('_', "-"));
            let whence = match la {
                Level::Environment => format!(
                    "both from the environment: {} and {}",
                    env_var(&fa),
                    env_var(&fb)
                ),
                other => format!("both from {}", from(other)),
            };
            return Err(usage(format!(
                "--{fa} and --{fb} exclude each other ({whence})"
            )));
        }
        Ok(la < lb)
    };
    if !args.flows.is_empty() && args.flow_pattern.is_some() {
        if exclusive("flows", "flow_pattern")? {
            args.flows.clear();
        } else {
            args.flow_pattern = None;
        }
    }
    if !args.role_arn.is_empty() && args.organization {
        if exclusive("role_arn", "organization")? {
            args.role_arn.clear();
        } else {
            // What only means something with the organization goes with it.
            args.organization = false;
            args.role_name = None;
            args.accounts.clear();
            args.exclude_accounts.clear();
        }
    }
    if args.organization && args.role_name.is_none() {
        return Err(usage(
            "--organization needs --role-name (APPFLOW_EXPORT_ROLE_NAME, or role_name in --config): the role to read each member account through".into(),
        ));
    }
    // Turned off from a higher source (`APPFLOW_EXPORT_ORGANIZATION=false` over a
    // file's organization): its companions from below go with it.
    let off_above = |id: &str| {
        !args.organization
            && level(matches, expanded, "organization") > level(matches, expanded, id)
    };
    if off_above("role_name") {
        args.role_name = None;
    }
    if off_above("accounts") {
        args.accounts.clear();
    }
    if off_above("exclude_accounts") {
        args.exclude_accounts.clear();
    }
    for (set, flag) in [
        (args.role_name.is_some(), "--role-name"),
        (!args.accounts.is_empty(), "--accounts"),
        (!args.exclude_accounts.is_empty(), "--exclude-accounts"),
    ] {
        if set && !args.organization {
            return Err(usage(format!("{flag} goes with --organization")));
        }
    }
    Ok(())
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

/// Where one option's value came from, for `config --print`.
fn source(matches: &ArgMatches, expanded: &Expanded, key: &str) -> String {
    let flag = key.replace('_', "-");
    match matches.value_source(key) {
        Some(ValueSource::CommandLine) if expanded.from_file.contains(&flag) => {
            match &expanded.file {
                Some(file) => format!("the config file {}", file.display()),
                None => "the config file".to_string(),
            }
        }
        Some(ValueSource::CommandLine) => format!("the flag --{flag}"),
        Some(ValueSource::EnvVariable) => format!("the environment ({})", env_var(&flag)),
        _ => "the default".to_string(),
    }
}

/// `appflow-export config --print`: the effective options as TOML, each key after a
/// comment saying where its value came from (still valid TOML).
pub fn print(
    cli_log_format: LogFormat,
    args: &ConfigArgs,
    matches: &ArgMatches,
    expanded: &Expanded,
) -> Result<(), Failure> {
    let effective = ConfigFile::effective(&args.run, cli_log_format);
    let text = toml::to_string(&effective).map_err(|e| Failure::new(EXIT_USAGE, e))?;
    let mut out = String::from("# the effective options of `appflow-export run`\n");
    for line in text.lines() {
        if let Some((key, _)) = line.split_once(" = ") {
            out.push_str(&format!(
                "# {key}: from {}\n",
                source(matches, expanded, key)
            ));
        }
        out.push_str(line);
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}
