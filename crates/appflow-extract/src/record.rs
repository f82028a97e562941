//! The records this crate hands on: plain data, timestamps as exact epoch milliseconds.

use aws_sdk_appflow::primitives::DateTime;
use aws_sdk_appflow::types;

use crate::error::{Error, Result};

/// One run of a flow, as `DescribeFlowExecutionRecords` described it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutionRecord {
    pub execution_id: String,
    /// The raw status string, including values unknown to this build.
    pub execution_status: Option<String>,
    pub started_at: i64,
    pub last_updated_at: Option<i64>,
    pub data_pull_start_time: Option<i64>,
    pub data_pull_end_time: Option<i64>,
    pub bytes_processed: Option<i64>,
    pub bytes_written: Option<i64>,
    pub records_processed: Option<i64>,
    pub num_parallel_processes: Option<i64>,
    pub max_page_size: Option<i64>,
    pub put_failures_count: Option<i64>,
    pub execution_message: Option<String>,
    pub catalog_details: Vec<CatalogDetail>,
}

/// One `metadataCatalogDetails` entry of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogDetail {
    pub catalog_type: Option<String>,
    pub table_name: Option<String>,
    pub table_registration: Option<RegistrationOutput>,
    pub partition_registration: Option<RegistrationOutput>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationOutput {
    pub status: Option<String>,
    pub message: Option<String>,
    pub result: Option<String>,
}

/// 9999-12-31T23:59:59.999Z: the last `startedAt` a `dt` partition can name.
const LATEST_MILLIS: i64 = 253_402_300_799_999;

/// A run AWS may still change (`InProgress`, `CancelStarted`).
pub fn is_open(status: Option<&str>) -> bool {
    matches!(status, Some("InProgress" | "CancelStarted"))
}

/// A run that has ended (`Successful`, `Error`, `Canceled`). A status unknown to this
/// build is neither open nor finished.
pub fn is_finished(status: Option<&str>) -> bool {
    matches!(status, Some("Successful" | "Error" | "Canceled"))
}

impl ExecutionRecord {
    /// A run with only its identity; every optional member absent.
    pub fn new(execution_id: impl Into<String>, started_at: i64) -> Self {
        ExecutionRecord {
            execution_id: execution_id.into(),
            execution_status: None,
            started_at,
            last_updated_at: None,
            data_pull_start_time: None,
            data_pull_end_time: None,
            bytes_processed: None,
            bytes_written: None,
            records_processed: None,
            num_parallel_processes: None,
            max_page_size: None,
            put_failures_count: None,
            execution_message: None,
            catalog_details: Vec::new(),
        }
    }

    pub fn is_open(&self) -> bool {
        is_open(self.execution_status.as_deref())
    }
}

/// Epoch milliseconds, rounded: the SDK parses the JSON number as f64 and truncates
/// to nanoseconds, so `to_millis()` would be 1 ms low for many values (aws-facts.md).
pub(crate) fn millis(t: &DateTime) -> i64 {
    t.secs() * 1000 + i64::from((t.subsec_nanos() + 500_000) / 1_000_000)
}

fn registration(o: &types::RegistrationOutput) -> RegistrationOutput {
    RegistrationOutput {
        status: o.status().map(|s| s.as_str().to_string()),
        message: o.message().map(str::to_string),
        result: o.result().map(str::to_string),
    }
}

impl ExecutionRecord {
    /// Converts an SDK record; a record without `executionId` or `startedAt` cannot be
    /// keyed or partitioned and is an error naming the flow.
    pub(crate) fn from_sdk(flow: &str, r: &types::ExecutionRecord) -> Result<Self> {
        let malformed = |what: &str| Error::Malformed {
            flow: flow.to_string(),
            what: what.to_string(),
        };
        let execution_id = r
            .execution_id()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| malformed("no executionId"))?
            .to_string();
        let started_at = r
            .started_at()
            .map(millis)
            .ok_or_else(|| malformed(&format!("execution {execution_id} has no startedAt")))?;
        if !(0..=LATEST_MILLIS).contains(&started_at) {
            return Err(malformed(&format!(
                "execution {execution_id} has startedAt {started_at} ms, outside the years 1970-9999"
            )));
        }
        let result = r.execution_result();
        let error_info = result.and_then(|x| x.error_info());
        Ok(ExecutionRecord {
            execution_id,
            execution_status: r.execution_status().map(|s| s.as_str().to_string()),
            started_at,
            last_updated_at: r.last_updated_at().map(millis),
            data_pull_start_time: r.data_pull_start_time().map(millis),
            data_pull_end_time: r.data_pull_end_time().map(millis),
            bytes_processed: result.and_then(|x| x.bytes_processed()),
            bytes_written: result.and_then(|x| x.bytes_written()),
            records_processed: result.and_then(|x| x.records_processed()),
            num_parallel_processes: result.and_then(|x| x.num_parallel_processes()),
            max_page_size: result.and_then(|x| x.max_page_size()),
            put_failures_count: error_info.and_then(|e| e.put_failures_count()),
            execution_message: error_info
                .and_then(|e| e.execution_message())
                .map(str::to_string),
            catalog_details: r
                .metadata_catalog_details()
                .iter()
                .map(|d| CatalogDetail {
                    catalog_type: d.catalog_type().map(|c| c.as_str().to_string()),
                    table_name: d.table_name().map(str::to_string),
                    table_registration: d.table_registration_output().map(registration),
                    partition_registration: d.partition_registration_output().map(registration),
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_rounds_instead_of_truncating() {
        // 1700000000.123 parses to ...122999999 ns; to_millis() would say ...122.
        for ms in [
            1_700_000_000_123_i64,
            1_700_000_000_001,
            1_700_000_000_999,
            0,
            1_795_553_668_194,
        ] {
            let t = DateTime::from_secs_f64(ms as f64 / 1000.0);
            assert_eq!(millis(&t), ms, "{ms}");
        }
    }
}
