//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exports Amazon AppFlow run history (DescribeFlowExecutionRecords) into
/// Hive-partitioned Parquet on S3 or a local folder, incrementally and exactly once.
#[derive(Parser, Debug)]
#[command(name = "appflow-export", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr (`RUST_LOG` sets the level; default
    /// warn,appflow_export=info,appflow_load=info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "APPFLOW_EXPORT_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Exports what is new since the last run (the scheduled job).
    Run(RunArgs),
    /// Re-reads each flow's whole retained history and merges the runs started in
    /// --since..=--until into the export (no duplicates; watermarks never move back).
    Backfill(BackfillArgs),
    /// Runs the bundled AppFlow emulator and exports from it twice into a local
    /// folder, with no AWS account.
    Demo(DemoArgs),
    /// Prints the effective options of `run` (defaults, --config file, flags) as TOML.
    Config(ConfigArgs),
    /// Shows what the exports into a destination did and where each flow stands:
    /// watermarks, open runs, lag, and the last runs' manifests. Reads only.
    Status(StatusArgs),
    /// Prints the tables' Arrow schema, Athena DDL, Glue tables or DuckDB views for a
    /// destination.
    Schema(SchemaArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SchemaFormat {
    /// The Arrow schema with field docs (JSON).
    Arrow,
    /// CREATE EXTERNAL TABLE with partition projection on dt.
    Athena,
    /// The input of Glue's CreateTable (`aws glue create-table --cli-input-json`);
    /// a JSON array of them unless --table names one.
    Glue,
    /// CREATE VIEW statements over read_parquet.
    Duckdb,
    /// The tables as AWS::Glue::Table resources, to put under a CloudFormation
    /// template's `Resources:`; `${Name}` in --dest and --database are the template's
    /// references (deploy/cloudformation/appflow-export.yaml's tables are this output).
    Cloudformation,
}

/// A table of the export, for `schema --table`.
#[derive(Clone, Copy, Debug, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum TableName {
    Executions,
    CatalogRegistrations,
    Flows,
}

#[derive(Args, Debug)]
pub struct SchemaArgs {
    /// What to print.
    #[arg(long, value_enum)]
    pub format: SchemaFormat,
    /// The export the DDL or views point at: s3://bucket/prefix or a local folder.
    #[arg(long, default_value = "s3://your-bucket/appflow-export")]
    pub dest: String,
    /// The Athena (Glue) database of the tables.
    #[arg(long, default_value = "appflow")]
    pub database: String,
    /// Only this table (default: all of them).
    #[arg(long, value_enum)]
    pub table: Option<TableName>,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Options from a TOML file (keys: these flags' names in snake_case, see
    /// jobs/config.toml); a flag given here overrides the file.
    #[arg(long, value_name = "FILE", env = "APPFLOW_EXPORT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where to write: s3://bucket/prefix or a local folder.
    #[arg(long, env = "APPFLOW_EXPORT_DEST")]
    pub dest: String,
    /// Only these flows (comma-separated names).
    #[arg(long, value_delimiter = ',', env = "APPFLOW_EXPORT_FLOWS")]
    pub flows: Vec<String>,
    /// Only flows whose name matches this glob (`*`, `?`, `[a-z]`).
    #[arg(long, env = "APPFLOW_EXPORT_FLOW_PATTERN")]
    pub flow_pattern: Option<String>,
    /// Re-read this much before each flow's watermark, for runs that appear late.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, env = "APPFLOW_EXPORT_LOOKBACK")]
    pub lookback: Duration,
    /// An open (InProgress) run younger than this holds its flow's read back to it; an
    /// older one is stuck: it holds the read back to this age once (to find a newer
    /// open run), then nothing (a backfill still updates it).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration, env = "APPFLOW_EXPORT_MAX_OPEN_AGE")]
    pub max_open_age: Duration,
    /// Do not read a flow whose ListFlows entry shows the same last run (time and
    /// status) as when it was last read, that had no open run and whose pages came
    /// newest-first, unless it was last read --recheck-every ago (or at a time after
    /// this host's clock); a listing without the last run's time is always read. A run
    /// over unchanged flows makes only its ListFlows calls. Off by default: AWS does not document that
    /// every new run changes those details; a run they miss (one that appears late)
    /// is exported at its flow's recheck if it started within --lookback of the
    /// flow's watermark, else only by a backfill.
    #[arg(long, env = "APPFLOW_EXPORT_SKIP_UNCHANGED", value_parser = clap::builder::BoolishValueParser::new())]
    pub skip_unchanged: bool,
    /// With --skip-unchanged, read a flow at the first run this long or more after its
    /// last read.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, env = "APPFLOW_EXPORT_RECHECK_EVERY")]
    pub recheck_every: Duration,
    /// AppFlow calls in flight at most for each account and region: the ceiling of its
    /// adaptive limit, which falls while AWS keeps throttling its calls and climbs back
    /// within seconds when it stops (a throttle now and then lowers nothing). Four
    /// times as many flows are read at once, so that a flow waiting out a throttled
    /// call's backoff leaves no call idle.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256), env = "APPFLOW_EXPORT_CONCURRENCY")]
    pub concurrency: u16,
    /// Attempts per AWS call: throttling, 5xx and connection errors are retried with
    /// exponential backoff and full jitter (AppFlow calls from 0.1 s, the others from
    /// 1 s, at most 20 s between attempts). With the default an AppFlow call outlasts
    /// about two minutes of AWS throttling every call; an unreachable endpoint fails
    /// after about 2-3 minutes (lower this to fail faster).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100), env = "APPFLOW_EXPORT_MAX_ATTEMPTS")]
    pub max_attempts: u32,
    /// AWS regions to export (comma-separated; default: AWS_REGION or the profile's
    /// region): every account is exported in each.
    #[arg(long, value_delimiter = ',', value_parser = region, env = "APPFLOW_EXPORT_REGION")]
    pub region: Vec<String>,
    /// Read AppFlow through this IAM role (assumed through STS) to export its
    /// account; repeat it (or list several, comma-separated) to export several
    /// accounts into one --dest. The destination is still written with the job's own
    /// credentials (or --dest-role-arn). Default: the job's own credentials.
    #[arg(
        long,
        value_name = "ARN",
        value_delimiter = ',',
        env = "APPFLOW_EXPORT_ROLE_ARN"
    )]
    pub role_arn: Vec<String>,
    /// Export every ACTIVE account of the AWS organization (Organizations
    /// ListAccounts, from the management account or a delegated administrator), each
    /// read through the role --role-name in it; the job's own account is read with
    /// its own credentials.
    #[arg(long, env = "APPFLOW_EXPORT_ORGANIZATION", value_parser = clap::builder::BoolishValueParser::new())]
    pub organization: bool,
    /// With --organization: the name of the read-only role in each member account
    /// (arn:<partition>:iam::<account>:role/NAME).
    #[arg(long, value_name = "NAME", env = "APPFLOW_EXPORT_ROLE_NAME")]
    pub role_name: Option<String>,
    /// With --organization: only these accounts (comma-separated 12-digit ids).
    #[arg(long, value_name = "ID", value_delimiter = ',', value_parser = account_id, env = "APPFLOW_EXPORT_ACCOUNTS")]
    pub accounts: Vec<String>,
    /// With --organization: not these accounts (comma-separated 12-digit ids).
    #[arg(long, value_name = "ID", value_delimiter = ',', value_parser = account_id, env = "APPFLOW_EXPORT_EXCLUDE_ACCOUNTS")]
    pub exclude_accounts: Vec<String>,
    /// The external id sent with every AssumeRole (a member role's trust policy may
    /// require one: sts:ExternalId).
    #[arg(long, value_name = "ID", env = "APPFLOW_EXPORT_EXTERNAL_ID")]
    pub external_id: Option<String>,
    /// Write the destination through this IAM role (assumed with the job's own
    /// credentials) instead of with the job's own credentials.
    #[arg(long, value_name = "ARN", env = "APPFLOW_EXPORT_DEST_ROLE_ARN")]
    pub dest_role_arn: Option<String>,
    /// Targets (account and region pairs) exported at the same time, each with at most
    /// --concurrency AppFlow calls in flight: at most this times --concurrency calls
    /// are in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64), env = "APPFLOW_EXPORT_TARGET_CONCURRENCY")]
    pub target_concurrency: u16,
    /// AppFlow endpoint URL (default: AWS_ENDPOINT_URL_APPFLOW or AWS's).
    #[arg(long, env = "APPFLOW_EXPORT_APPFLOW_ENDPOINT")]
    pub appflow_endpoint: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
    /// Export only the flows of shard i of N (`i/N`, 0-based), so N processes split
    /// an account's flows; `auto` reads AWS_BATCH_JOB_ARRAY_INDEX and
    /// AWS_BATCH_JOB_ARRAY_SIZE (an AWS Batch array job).
    #[arg(long, value_name = "i/N|auto", env = "APPFLOW_EXPORT_SHARD")]
    pub shard: Option<String>,
    /// List the flows this run would export and where each one's read would stop;
    /// read the state, write nothing, read no run history.
    #[arg(long, env = "APPFLOW_EXPORT_DRY_RUN", value_parser = clap::builder::BoolishValueParser::new())]
    pub dry_run: bool,
    /// On SIGTERM or SIGINT the run starts no new flow and gives the flows being read
    /// this long to end (under ECS's default stop timeout of 30 s); then it commits what
    /// ended and exits with 128 + the signal when it gave up flows or left a target
    /// (account and region) unstarted (as it would have, when neither). A second
    /// signal stops it at once, with the same code.
    #[arg(long, default_value = "25s", value_parser = humantime::parse_duration, env = "APPFLOW_EXPORT_STOP_TIMEOUT")]
    pub stop_timeout: Duration,
    /// `emf`: print CloudWatch Embedded Metric Format lines on stdout, one per account
    /// and region and one for the whole run (namespace AppFlowExport), to alarm on;
    /// `emf-run`: the whole run's line only (each account and region's line adds 14
    /// custom metrics, a cost over a large organization).
    #[arg(long, value_enum, env = "APPFLOW_EXPORT_METRICS")]
    pub metrics: Option<MetricsFormat>,
    /// A name for this job, added to every metric line as the JobName dimension (so
    /// several jobs' alarms stay apart).
    #[arg(long, value_name = "NAME", value_parser = job_name, env = "APPFLOW_EXPORT_JOB_NAME")]
    pub job_name: Option<String>,
    /// Run manifests (`_state/runs/<run-id>.json`) kept: older ones are removed after
    /// each run. Data is never removed.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1_000_000), env = "APPFLOW_EXPORT_KEEP_MANIFESTS")]
    pub keep_manifests: u32,
}

#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// Print the effective options (the only action of `config`).
    #[arg(long, required = true)]
    pub print: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args, Debug)]
pub struct BackfillArgs {
    /// First UTC day (YYYY-MM-DD) of the runs to merge, by their start.
    #[arg(long, value_parser = parse_day, env = "APPFLOW_EXPORT_SINCE")]
    pub since: chrono::NaiveDate,
    /// Last UTC day, inclusive (default: no end).
    #[arg(long, value_parser = parse_day, env = "APPFLOW_EXPORT_UNTIL")]
    pub until: Option<chrono::NaiveDate>,
    /// After this long, start no new flow, let those in flight finish and commit them
    /// (rows, watermarks, and which flows are done), then go on: an interrupted
    /// backfill, run again with the same --since and --until, skips the flows it
    /// completed.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, env = "APPFLOW_EXPORT_CHECKPOINT_EVERY")]
    pub checkpoint_every: Duration,
    /// Read every flow again, even those an earlier run of this backfill (same
    /// --since and --until) completed.
    #[arg(long, env = "APPFLOW_EXPORT_RESTART", value_parser = clap::builder::BoolishValueParser::new())]
    pub restart: bool,
    /// Every option of `run` (--lookback, --max-open-age, --skip-unchanged and
    /// --recheck-every do not apply: a backfill reads each flow's whole history).
    #[command(flatten)]
    pub run: RunArgs,
}

fn parse_day(text: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|e| format!("'{text}' is not a date YYYY-MM-DD ({e})"))
}

/// How to reach S3 (for an `s3://` destination).
#[derive(Args, Debug, Clone)]
pub struct S3Args {
    /// S3 endpoint URL (default: AWS_ENDPOINT_URL_S3 or AWS's).
    #[arg(long, env = "APPFLOW_EXPORT_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Path-style S3 addressing (automatic for IP and localhost endpoints).
    #[arg(long, env = "APPFLOW_EXPORT_S3_PATH_STYLE", value_parser = clap::builder::BoolishValueParser::new())]
    pub s3_path_style: bool,
    /// Server-side encryption asked for on every object written: AES256 (SSE-S3) or
    /// aws:kms (SSE-KMS), for buckets whose policy requires it.
    #[arg(long, value_enum, env = "APPFLOW_EXPORT_SSE")]
    pub sse: Option<SseArg>,
    /// The KMS key (ARN, key id or alias ARN) of --sse aws:kms (default: the AWS
    /// managed key aws/s3; to keep a bucket's own default encryption, give no --sse).
    #[arg(long, value_name = "ARN", env = "APPFLOW_EXPORT_SSE_KMS_KEY_ID")]
    pub sse_kms_key_id: Option<String>,
    /// The AWS account (12 digits) that must own the bucket, sent with every S3
    /// request: a bucket of another account is refused.
    #[arg(long, value_name = "ACCOUNT", value_parser = account_id, env = "APPFLOW_EXPORT_EXPECTED_BUCKET_OWNER")]
    pub expected_bucket_owner: Option<String>,
    /// The bucket's region, which every S3 request is signed for (default: the
    /// region S3 names for the bucket, asked once per run with HeadBucket, else the
    /// run's region).
    #[arg(long, value_name = "REGION", value_parser = region, env = "APPFLOW_EXPORT_DEST_REGION")]
    pub dest_region: Option<String>,
}

/// `--metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MetricsFormat {
    /// CloudWatch Embedded Metric Format, one JSON object per line.
    Emf,
    /// The same, for the whole run only.
    EmfRun,
}

/// `--sse`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SseArg {
    #[value(name = "AES256")]
    Aes256,
    #[value(name = "aws:kms")]
    Kms,
}

/// Whether `name` looks like an AWS region (`eu-west-1`, `us-gov-west-1`,
/// `cn-north-1`, `eusc-de-east-1`): dash-separated words of letters, a number last.
pub fn is_region(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

/// `--region`.
fn region(value: &str) -> Result<String, String> {
    if is_region(value) {
        Ok(value.to_string())
    } else {
        Err(format!(
            "'{value}' is not an AWS region name like eu-west-1"
        ))
    }
}

/// A CloudWatch dimension value: 1 to 1,024 characters, not only white space.
fn job_name(value: &str) -> Result<String, String> {
    if value.trim().is_empty() || value.chars().count() > 1024 {
        Err(
            "a job name is 1 to 1,024 characters, not only spaces (it is a CloudWatch dimension)"
                .into(),
        )
    } else {
        Ok(value.to_string())
    }
}

/// A 12-digit AWS account id.
fn account_id(value: &str) -> Result<String, String> {
    if value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(value.to_string())
    } else {
        Err(format!("'{value}' is not a 12-digit AWS account id"))
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StatusFormat {
    /// Aligned columns, for a terminal.
    Table,
    /// One JSON document (flows and runs), for scripts and dashboards.
    Json,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The export to inspect: s3://bucket/prefix or a local folder.
    #[arg(long)]
    pub dest: String,
    #[arg(long, value_enum, default_value_t = StatusFormat::Table)]
    pub format: StatusFormat,
    /// How many of the newest run manifests to show.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// AWS region of the bucket's client (default: AWS_REGION or the profile's).
    #[arg(long)]
    pub region: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// The folder the demo exports into (replaced if it holds an earlier demo).
    #[arg(long, default_value = "./appflow-demo")]
    pub dir: PathBuf,
    /// Flows the emulator generates.
    #[arg(long, default_value_t = 20)]
    pub flows: usize,
    /// Runs generated for each flow.
    #[arg(long, default_value_t = 300)]
    pub runs_per_flow: usize,
    /// Seed of the generated history.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}
