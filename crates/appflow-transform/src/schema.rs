//! The three tables' columns, defined once: the Arrow schemas, the DDL, the Glue
//! tables and the docs are generated from these lists.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Bumped when columns are added; stored in every file's key-value metadata.
pub const SCHEMA_VERSION: &str = "1";
/// The key-value metadata key (Arrow schema and Parquet footer) of [`SCHEMA_VERSION`].
pub const SCHEMA_VERSION_KEY: &str = "appflow_export.schema_version";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    String,
    Int32,
    Int64,
    Float64,
    /// INT64 TIMESTAMP(MILLIS) adjusted to UTC.
    Timestamp,
    /// `map<string,string>` (a Parquet MAP; keys are never null).
    StringMap,
}

/// One column of a table.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub name: &'static str,
    pub kind: ColumnType,
    pub nullable: bool,
    pub doc: &'static str,
}

const fn col(name: &'static str, kind: ColumnType, nullable: bool, doc: &'static str) -> Column {
    Column {
        name,
        kind,
        nullable,
        doc,
    }
}

use ColumnType::{Float64, Int32, Int64, String as Str, StringMap, Timestamp};

/// `executions`: one row per (account_id, region, flow_name, execution_id).
pub const EXECUTION_FIELDS: &[Column] = &[
    col(
        "account_id",
        Str,
        false,
        "AWS account of the flow (from its ARN).",
    ),
    col(
        "region",
        Str,
        false,
        "AWS region of the flow (from its ARN).",
    ),
    col("flow_name", Str, false, "Name of the flow."),
    col("flow_arn", Str, false, "ARN of the flow."),
    col(
        "execution_id",
        Str,
        false,
        "Identifier of the run (executionId).",
    ),
    col(
        "execution_status",
        Str,
        true,
        "InProgress, Successful, Error, CancelStarted, Canceled, or a newer value as AWS sent it.",
    ),
    col(
        "started_at",
        Timestamp,
        false,
        "When the run started (startedAt, UTC). Its date is the dt partition.",
    ),
    col(
        "last_updated_at",
        Timestamp,
        true,
        "When AWS last updated the run (lastUpdatedAt, UTC).",
    ),
    col(
        "data_pull_start_time",
        Timestamp,
        true,
        "First new or updated source record the run transferred (dataPullStartTime).",
    ),
    col(
        "data_pull_end_time",
        Timestamp,
        true,
        "Last new or updated source record the run transferred (dataPullEndTime).",
    ),
    col(
        "bytes_processed",
        Int64,
        true,
        "Bytes processed by the run.",
    ),
    col("bytes_written", Int64, true, "Bytes written by the run."),
    col(
        "records_processed",
        Int64,
        true,
        "Records processed by the run.",
    ),
    col(
        "num_parallel_processes",
        Int64,
        true,
        "Processes AppFlow ran at the same time to retrieve the data.",
    ),
    col(
        "max_page_size",
        Int64,
        true,
        "Maximum records per page received from the source (SAP).",
    ),
    col(
        "put_failures_count",
        Int64,
        true,
        "Failed writes of the run (errorInfo.putFailuresCount).",
    ),
    col(
        "execution_message",
        Str,
        true,
        "Error message of the run (errorInfo.executionMessage).",
    ),
    col(
        "duration_seconds",
        Float64,
        true,
        "last_updated_at - started_at in seconds for a finished run (Successful, Error, Canceled), null otherwise.",
    ),
    col(
        "catalog_registration_count",
        Int32,
        false,
        "Number of metadata catalog details of the run (rows in catalog_registrations).",
    ),
    col(
        "exported_at",
        Timestamp,
        false,
        "When this version of the row was first written (unchanged rows keep it).",
    ),
];

/// `catalog_registrations`: one row per metadata catalog detail of a run.
pub const CATALOG_FIELDS: &[Column] = &[
    col("account_id", Str, false, "AWS account of the flow."),
    col("region", Str, false, "AWS region of the flow."),
    col("flow_name", Str, false, "Name of the flow."),
    col(
        "execution_id",
        Str,
        false,
        "The run this registration belongs to (joins executions).",
    ),
    col(
        "started_at",
        Timestamp,
        false,
        "When the run started (UTC). Its date is the dt partition.",
    ),
    col(
        "ordinal",
        Int32,
        false,
        "Position of the detail in the run's metadataCatalogDetails, from 0.",
    ),
    col("catalog_type", Str, true, "Metadata catalog used (GLUE)."),
    col(
        "table_name",
        Str,
        true,
        "Catalog table that stores the metadata of the run's data.",
    ),
    col(
        "table_registration_status",
        Str,
        true,
        "Status of the table registration.",
    ),
    col(
        "table_registration_message",
        Str,
        true,
        "Message of the table registration (why it failed).",
    ),
    col(
        "table_registration_result",
        Str,
        true,
        "Resources the table registration created or updated.",
    ),
    col(
        "partition_registration_status",
        Str,
        true,
        "Status of the partition registration.",
    ),
    col(
        "partition_registration_message",
        Str,
        true,
        "Message of the partition registration (why it failed).",
    ),
    col(
        "partition_registration_result",
        Str,
        true,
        "Resources the partition registration created or updated.",
    ),
];

/// `flows`: one row per flow `ListFlows` returned, kept after the flow is deleted.
pub const FLOW_FIELDS: &[Column] = &[
    col(
        "account_id",
        Str,
        false,
        "AWS account of the flow (from its ARN).",
    ),
    col(
        "region",
        Str,
        false,
        "AWS region of the flow (from its ARN).",
    ),
    col("flow_name", Str, false, "Name of the flow."),
    col("flow_arn", Str, false, "ARN of the flow."),
    col("description", Str, true, "Description of the flow."),
    col(
        "flow_status",
        Str,
        true,
        "Active, Deprecated, Deleted, Draft, Errored or Suspended, as AWS sent it.",
    ),
    col(
        "source_connector_type",
        Str,
        true,
        "Connector type of the source (Salesforce, S3, CustomConnector, ...).",
    ),
    col(
        "source_connector_label",
        Str,
        true,
        "Label of the source's custom connector.",
    ),
    col(
        "destination_connector_type",
        Str,
        true,
        "Connector type of the destination.",
    ),
    col(
        "destination_connector_label",
        Str,
        true,
        "Label of the destination's custom connector.",
    ),
    col("trigger_type", Str, true, "Scheduled, Event or OnDemand."),
    col(
        "created_at",
        Timestamp,
        true,
        "When the flow was created (UTC).",
    ),
    col(
        "created_by",
        Str,
        true,
        "ARN of the user who created the flow.",
    ),
    col(
        "last_updated_at",
        Timestamp,
        true,
        "When the flow was last changed (UTC).",
    ),
    col(
        "last_updated_by",
        Str,
        true,
        "ARN of the user who last changed the flow.",
    ),
    col("tags", StringMap, true, "Tags of the flow."),
    col(
        "last_run_status",
        Str,
        true,
        "Status of the flow's most recent run (lastRunExecutionDetails), when the snapshot was taken.",
    ),
    col(
        "last_run_at",
        Timestamp,
        true,
        "Time of the flow's most recent run (mostRecentExecutionTime), when the snapshot was taken.",
    ),
    col(
        "last_run_message",
        Str,
        true,
        "Message of the flow's most recent run, when the snapshot was taken.",
    ),
    col(
        "snapshot_at",
        Timestamp,
        false,
        "When the export run that first saw this row's values listed the flows (unchanged rows keep it).",
    ),
    col(
        "deleted_at",
        Timestamp,
        true,
        "When the first export run that no longer saw the flow listed the flows (null while ListFlows returns it).",
    ),
];

/// The tables of the data contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Executions,
    CatalogRegistrations,
    Flows,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Executions, Table::CatalogRegistrations, Table::Flows];

    /// Whether the table is stored in `dt=YYYY-MM-DD` folders (one file per account,
    /// region and day); `flows` is one file per account and region.
    pub fn partitioned(self) -> bool {
        self != Table::Flows
    }

    /// What one row is, for the table's description in DDL and Glue.
    pub fn doc(self) -> &'static str {
        match self {
            Table::Executions => {
                "AppFlow flow runs (DescribeFlowExecutionRecords), one row per run, exported by appflow-export."
            }
            Table::CatalogRegistrations => {
                "Glue Data Catalog registrations of AppFlow flow runs, one row per metadata catalog detail of a run, exported by appflow-export."
            }
            Table::Flows => {
                "AppFlow flows as ListFlows last showed them, one row per flow, kept after the flow is deleted, exported by appflow-export."
            }
        }
    }

    /// The folder name under the destination (and the table name in queries).
    pub fn name(self) -> &'static str {
        match self {
            Table::Executions => "executions",
            Table::CatalogRegistrations => "catalog_registrations",
            Table::Flows => "flows",
        }
    }

    pub fn columns(self) -> &'static [Column] {
        match self {
            Table::Executions => EXECUTION_FIELDS,
            Table::CatalogRegistrations => CATALOG_FIELDS,
            Table::Flows => FLOW_FIELDS,
        }
    }
}

impl ColumnType {
    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::String => DataType::Utf8,
            ColumnType::Int32 => DataType::Int32,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            ColumnType::StringMap => DataType::Map(
                Arc::new(Field::new(
                    MAP_ENTRIES,
                    DataType::Struct(
                        vec![
                            Field::new(MAP_KEY, DataType::Utf8, false),
                            Field::new(MAP_VALUE, DataType::Utf8, true),
                        ]
                        .into(),
                    ),
                    false,
                )),
                false,
            ),
        }
    }
}

/// The doc of the `dt` partition column of the partitioned tables.
pub const DT_DOC: &str = "UTC date of started_at (the folder dt=YYYY-MM-DD).";

/// The names Parquet's MAP layout uses (`key_value` { `key`, `value` }).
pub const MAP_ENTRIES: &str = "key_value";
pub const MAP_KEY: &str = "key";
pub const MAP_VALUE: &str = "value";

fn build(columns: &[Column]) -> SchemaRef {
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| {
            Field::new(c.name, c.kind.arrow(), c.nullable)
                .with_metadata(HashMap::from([("doc".to_string(), c.doc.to_string())]))
        })
        .collect();
    let meta = HashMap::from([(SCHEMA_VERSION_KEY.to_string(), SCHEMA_VERSION.to_string())]);
    Arc::new(Schema::new_with_metadata(fields, meta))
}

static EXECUTIONS: LazyLock<SchemaRef> = LazyLock::new(|| build(EXECUTION_FIELDS));
static CATALOG: LazyLock<SchemaRef> = LazyLock::new(|| build(CATALOG_FIELDS));
static FLOWS: LazyLock<SchemaRef> = LazyLock::new(|| build(FLOW_FIELDS));

pub fn executions_schema() -> SchemaRef {
    EXECUTIONS.clone()
}

pub fn catalog_schema() -> SchemaRef {
    CATALOG.clone()
}

pub fn flows_schema() -> SchemaRef {
    FLOWS.clone()
}

pub fn schema_for(table: Table) -> SchemaRef {
    match table {
        Table::Executions => executions_schema(),
        Table::CatalogRegistrations => catalog_schema(),
        Table::Flows => flows_schema(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_lower_snake_case() {
        for table in Table::ALL {
            assert!(!table.doc().contains(';'), "{} doc has a ';'", table.name());
            let mut seen = std::collections::HashSet::new();
            for c in table.columns() {
                assert!(
                    c.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "{}",
                    c.name
                );
                assert!(seen.insert(c.name), "duplicate {}", c.name);
                assert!(!c.doc.is_empty(), "{} has no doc", c.name);
                // Tools split DDL files on ';' (Athena's console runs one statement).
                assert!(!c.doc.contains(';'), "{} doc has a ';'", c.name);
            }
        }
    }
}
