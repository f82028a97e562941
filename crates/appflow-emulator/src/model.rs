//! The AppFlow shapes the emulator serves, with the member names of botocore's
//! `appflow/2020-08-23/service-2.json` (checked by `tests/test_emulator_model.py`).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, kept as integer milliseconds since the Unix epoch and written
/// on the wire as AWS does: epoch seconds, a JSON number with a fraction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub i64);

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Division is correctly rounded, so the shortest decimal of the result is
        // exactly `seconds.mmm`.
        s.serialize_f64(self.0 as f64 / 1000.0)
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let secs = f64::deserialize(d)?;
        Ok(Millis((secs * 1000.0).round() as i64))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub put_failures_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_message: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_info: Option<ErrorInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_processed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_written: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records_processed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_parallel_processes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_page_size: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationOutput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataCatalogDetail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_registration_output: Option<RegistrationOutput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_registration_output: Option<RegistrationOutput>,
}

/// One run of a flow, as `DescribeFlowExecutionRecords` returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionRecord {
    pub execution_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_result: Option<ExecutionResult>,
    pub started_at: Millis,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated_at: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_pull_start_time: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_pull_end_time: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_catalog_details: Option<Vec<MetadataCatalogDetail>>,
}

impl ExecutionRecord {
    /// A run AWS may still change: in progress or being cancelled.
    pub fn is_open(&self) -> bool {
        matches!(
            self.execution_status.as_deref(),
            Some("InProgress") | Some("CancelStarted")
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionDetails {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub most_recent_execution_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub most_recent_execution_time: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub most_recent_execution_status: Option<String>,
}

/// A flow as `ListFlows` returns it (`FlowDefinition`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowDefinition {
    pub flow_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub flow_name: String,
    pub flow_status: String,
    pub source_connector_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_connector_label: Option<String>,
    pub destination_connector_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_connector_label: Option<String>,
    pub trigger_type: String,
    pub created_at: Millis,
    pub last_updated_at: Millis,
    pub created_by: String,
    pub last_updated_by: String,
    pub tags: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run_execution_details: Option<ExecutionDetails>,
}

/// A flow and its run history, newest run first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flow {
    pub definition: FlowDefinition,
    pub records: Vec<ExecutionRecord>,
}

impl Flow {
    /// Restores newest-first order (by start time, then execution id) after a change.
    pub fn sort_records(&mut self) {
        self.records
            .sort_by(|a, b| (b.started_at, &b.execution_id).cmp(&(a.started_at, &a.execution_id)));
    }

    /// The definition with `lastRunExecutionDetails` taken from the newest run; once
    /// retention has dropped every run, the details of the last one stay (they belong
    /// to the flow, not to its history).
    pub fn definition_now(&self) -> FlowDefinition {
        let mut def = self.definition.clone();
        if let Some(details) = self.last_run_details() {
            def.last_run_execution_details = Some(details);
        }
        def
    }

    /// `lastRunExecutionDetails` of the newest run, if there is one.
    pub fn last_run_details(&self) -> Option<ExecutionDetails> {
        self.records.first().map(|r| ExecutionDetails {
            most_recent_execution_message: r
                .execution_result
                .as_ref()
                .and_then(|x| x.error_info.as_ref())
                .and_then(|e| e.execution_message.clone()),
            most_recent_execution_time: Some(r.last_updated_at.unwrap_or(r.started_at)),
            most_recent_execution_status: r.execution_status.clone(),
        })
    }
}
