//! The seeded history generator: the same configuration and seed give the same flows
//! and runs, byte for byte.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::model::{
    ErrorInfo, ExecutionRecord, ExecutionResult, Flow, FlowDefinition, MetadataCatalogDetail,
    Millis, RegistrationOutput,
};

const DAY_MS: i64 = 86_400_000;

/// What to generate.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenConfig {
    /// Number of flows.
    pub flows: usize,
    /// Runs generated for each flow.
    pub runs_per_flow: usize,
    /// Seed of the random generator.
    pub seed: u64,
    /// Days of history the runs are spread over, ending at `end`.
    pub days: u32,
    /// The end of the generated history, in epoch milliseconds (usually "now").
    pub end: i64,
    /// The AWS account the flows belong to (in their ARNs).
    pub account: String,
    /// The region the flows belong to (in their ARNs).
    pub region: String,
}

impl GenConfig {
    /// A small history ending now: 12 flows, 60 runs each over 10 days.
    pub fn small(seed: u64) -> Self {
        GenConfig {
            flows: 12,
            runs_per_flow: 60,
            seed,
            days: 10,
            end: now_millis(),
            account: DEFAULT_ACCOUNT.to_string(),
            region: DEFAULT_REGION.to_string(),
        }
    }
}

pub const DEFAULT_ACCOUNT: &str = "123456789012";
pub const DEFAULT_REGION: &str = "us-east-1";

pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

const SOURCES: &[&str] = &[
    "Salesforce",
    "Zendesk",
    "Slack",
    "Googleanalytics",
    "Marketo",
    "Servicenow",
    "SAPOData",
    "S3",
    "CustomConnector",
];
const DESTINATIONS: &[&str] = &["S3", "Redshift", "Snowflake", "Upsolver", "EventBridge"];
const TEAMS: &[&str] = &["sales-ops", "finance", "growth", "support", "data-platform"];
const ERROR_MESSAGES: &[&str] = &[
    "Salesforce API limit exceeded for the org. Retry after 24 hours.",
    "Access Denied. Check the bucket policy of the destination bucket.",
    "The connector profile credentials have expired. Refresh the connection.",
    "Source entity Account__c not found",
    "Internal error occurred in Amazon AppFlow. Please retry.",
    "Requested resource not found - table analytics.orders",
    "Throughput exceeded for SAP OData service. Lower the page size.",
];
const GLUE_ERRORS: &[&str] = &[
    "AccessDeniedException: User is not authorized to perform glue:CreateTable",
    "EntityNotFoundException: Database appflow_runs not found",
    "AlreadyExistsException: Partition already exists.",
];

/// A name from the whole alphabet AWS allows (`[a-zA-Z0-9][\w!@#.-]+`, at most 256),
/// different for each index.
fn flow_name(i: usize, rng: &mut StdRng) -> String {
    let source = SOURCES[i % SOURCES.len()].to_lowercase();
    match i % 10 {
        3 => format!("Acct_sync.v{}@prod#{i}!", rng.random_range(1..9)),
        5 if i < 10 => {
            // One name of the maximum length.
            let head = format!("{i}-long_flow.name-");
            let mut name = head.clone();
            while name.len() < 256 {
                name.push(['a', 'B', '9', '_', '.', '-', '!', '@', '#'][name.len() % 9]);
            }
            name
        }
        7 => format!("{i}_{source}.orders-hourly"),
        _ => format!("{source}-to-s3-{i:03}"),
    }
}

fn execution_id(rng: &mut StdRng) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        rng.random::<u32>(),
        rng.random::<u16>(),
        rng.random::<u16>() & 0xfff,
        (rng.random::<u16>() & 0x3fff) | 0x8000,
        rng.random::<u64>() & 0xffff_ffff_ffff
    )
}

/// Generates the flows and their histories.
pub fn generate(cfg: &GenConfig) -> Vec<Flow> {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let start = cfg.end - i64::from(cfg.days.max(1)) * DAY_MS;
    (0..cfg.flows)
        .map(|i| {
            let name = flow_name(i, &mut rng);
            let created = start - rng.random_range(DAY_MS..120 * DAY_MS);
            let with_catalog = i % 5 < 2;
            let definition = FlowDefinition {
                flow_arn: format!("arn:aws:appflow:{}:{}:flow/{name}", cfg.region, cfg.account),
                description: (i % 3 != 0)
                    .then(|| format!("Copies {} data, flow {i}", SOURCES[i % SOURCES.len()])),
                flow_name: name,
                flow_status: ["Active", "Active", "Active", "Suspended", "Errored"][i % 5]
                    .to_string(),
                source_connector_type: SOURCES[i % SOURCES.len()].to_string(),
                source_connector_label: (SOURCES[i % SOURCES.len()] == "CustomConnector")
                    .then(|| "AcmeCrm".to_string()),
                destination_connector_type: DESTINATIONS[i % DESTINATIONS.len()].to_string(),
                destination_connector_label: None,
                trigger_type: ["Scheduled", "Scheduled", "OnDemand", "Event"][i % 4].to_string(),
                created_at: Millis(created),
                last_updated_at: Millis(created + rng.random_range(0..DAY_MS)),
                created_by: format!("arn:aws:iam::{}:user/alice", cfg.account),
                last_updated_by: format!("arn:aws:iam::{}:role/deployer", cfg.account),
                tags: [
                    Some(("team", TEAMS[i % TEAMS.len()].to_string())),
                    (i % 2 == 0).then(|| ("env", "prod".to_string())),
                    (i % 3 == 0).then(|| ("cost-center", format!("cc-{}", 100 + i % 7))),
                ]
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
                last_run_execution_details: None,
            };
            let mut flow = Flow {
                definition,
                records: Vec::new(),
            };
            let runs = cfg.runs_per_flow;
            let interval = ((cfg.end - start) / runs.max(1) as i64).max(1);
            for k in 0..runs {
                let newest = k + 1 == runs;
                let at = start + k as i64 * interval + rng.random_range(0..=interval / 4);
                let status = if newest && rng.random_bool(0.35) {
                    if rng.random_bool(0.15) {
                        "CancelStarted"
                    } else {
                        "InProgress"
                    }
                } else if i % 13 == 6 && k + 3 == runs.saturating_sub(runs / 2) {
                    // A run stuck in progress for days, as AWS sometimes shows.
                    "InProgress"
                } else {
                    pick_finished_status(&mut rng)
                };
                flow.records.push(make_record(
                    &mut rng,
                    at,
                    interval,
                    status,
                    with_catalog,
                    &flow.definition.flow_name,
                ));
            }
            flow.sort_records();
            flow
        })
        .collect()
}

fn pick_finished_status(rng: &mut StdRng) -> &'static str {
    match rng.random_range(0..100) {
        0..80 => "Successful",
        80..94 => "Error",
        _ => "Canceled",
    }
}

/// One run started at `at` with the given status; fields optional in the API are
/// left out now and then, as AWS does.
pub(crate) fn make_record(
    rng: &mut StdRng,
    at: i64,
    interval: i64,
    status: &str,
    with_catalog: bool,
    flow_name: &str,
) -> ExecutionRecord {
    let open = matches!(status, "InProgress" | "CancelStarted");
    let duration = rng.random_range(4_000..1_800_000);
    let bytes: i64 = if rng.random_bool(0.02) {
        // Now and then a run far past 2^32 bytes, to keep 64-bit integers honest.
        rng.random_range(5_000_000_000..9_000_000_000_000)
    } else {
        rng.random_range(0..400_000_000)
    };
    let records = bytes / rng.random_range(200..2_000);
    let mut result = ExecutionResult {
        error_info: None,
        bytes_processed: Some(bytes),
        bytes_written: Some(if status == "Error" { bytes / 3 } else { bytes }),
        records_processed: Some(records),
        num_parallel_processes: rng.random_bool(0.8).then(|| rng.random_range(1..9)),
        max_page_size: rng.random_bool(0.3).then_some(1000),
    };
    if status == "Error" {
        result.error_info = Some(ErrorInfo {
            put_failures_count: Some(rng.random_range(1..500)),
            execution_message: Some(
                ERROR_MESSAGES[rng.random_range(0..ERROR_MESSAGES.len())].to_string(),
            ),
        });
    } else if status == "Successful" && rng.random_bool(0.3) {
        result.error_info = Some(ErrorInfo {
            put_failures_count: Some(0),
            execution_message: None,
        });
    }
    if open {
        result.bytes_written = Some(0);
    }
    let catalog = (with_catalog && !open).then(|| {
        (0..rng.random_range(1..=3))
            .map(|n| catalog_detail(rng, flow_name, n, status))
            .collect::<Vec<_>>()
    });
    ExecutionRecord {
        execution_id: execution_id(rng),
        execution_status: Some(status.to_string()),
        execution_result: Some(result),
        started_at: Millis(at),
        last_updated_at: Some(Millis(if open {
            at + rng.random_range(500..3_000)
        } else {
            at + duration
        })),
        data_pull_start_time: rng.random_bool(0.9).then(|| Millis(at - interval)),
        data_pull_end_time: (!open).then_some(Millis(at)),
        metadata_catalog_details: catalog,
    }
}

fn catalog_detail(
    rng: &mut StdRng,
    flow_name: &str,
    n: usize,
    status: &str,
) -> MetadataCatalogDetail {
    let table: String = flow_name
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let failed = status == "Error" || rng.random_bool(0.08);
    let output = |rng: &mut StdRng, what: &str| RegistrationOutput {
        message: Some(if failed {
            GLUE_ERRORS[rng.random_range(0..GLUE_ERRORS.len())].to_string()
        } else {
            format!("{what} registered")
        }),
        result: (!failed).then(|| format!("{} {what}s created or updated", rng.random_range(1..4))),
        status: Some(if failed { "Error" } else { "Successful" }.to_string()),
    };
    MetadataCatalogDetail {
        catalog_type: Some("GLUE".to_string()),
        table_name: Some(format!("appflow_{table}_{n}")),
        table_registration_output: Some(output(rng, "table")),
        partition_registration_output: rng.random_bool(0.85).then(|| output(rng, "partition")),
    }
}

/// A finished version of an open run: final status, later `lastUpdatedAt`, results,
/// and (for a flow that registers in a catalog) its catalog details.
pub(crate) fn finish_record(
    rng: &mut StdRng,
    rec: &mut ExecutionRecord,
    now: i64,
    catalog_of: Option<&str>,
) {
    let status = match rec.execution_status.as_deref() {
        Some("CancelStarted") => "Canceled",
        _ => pick_finished_status(rng),
    };
    let updated = now.max(rec.last_updated_at.map_or(rec.started_at.0, |m| m.0) + 1);
    rec.execution_status = Some(status.to_string());
    rec.last_updated_at = Some(Millis(updated));
    rec.data_pull_end_time = Some(rec.started_at);
    if let Some(flow_name) = catalog_of {
        let details = (0..rng.random_range(1..=3))
            .map(|n| catalog_detail(rng, flow_name, n, status))
            .collect();
        rec.metadata_catalog_details = Some(details);
    }
    if let Some(result) = rec.execution_result.as_mut() {
        result.bytes_written = result.bytes_processed;
        if status == "Error" {
            result.error_info = Some(ErrorInfo {
                put_failures_count: Some(rng.random_range(1..50)),
                execution_message: Some(
                    ERROR_MESSAGES[rng.random_range(0..ERROR_MESSAGES.len())].to_string(),
                ),
            });
        }
    }
}
