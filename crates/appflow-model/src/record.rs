//! A run of a flow: plain data, timestamps as exact epoch milliseconds.

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
pub const LATEST_MILLIS: i64 = 253_402_300_799_999;

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
