//! The two tables' columns, defined once: the Arrow schemas (and later the DDL and
//! docs) are generated from these lists.

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

use ColumnType::{Float64, Int32, Int64, String as Str, Timestamp};

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
        "last_updated_at - started_at in seconds for a finished run (Successful, Error, Canceled); null otherwise.",
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
        "When this version of the row was first written; unchanged rows keep it.",
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

/// The two tables of the data contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Executions,
    CatalogRegistrations,
}

impl Table {
    pub const ALL: [Table; 2] = [Table::Executions, Table::CatalogRegistrations];

    /// The folder name under the destination (and the table name in queries).
    pub fn name(self) -> &'static str {
        match self {
            Table::Executions => "executions",
            Table::CatalogRegistrations => "catalog_registrations",
        }
    }

    pub fn columns(self) -> &'static [Column] {
        match self {
            Table::Executions => EXECUTION_FIELDS,
            Table::CatalogRegistrations => CATALOG_FIELDS,
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
        }
    }
}

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

pub fn executions_schema() -> SchemaRef {
    EXECUTIONS.clone()
}

pub fn catalog_schema() -> SchemaRef {
    CATALOG.clone()
}

pub fn schema_for(table: Table) -> SchemaRef {
    match table {
        Table::Executions => executions_schema(),
        Table::CatalogRegistrations => catalog_schema(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_lower_snake_case() {
        for table in Table::ALL {
            let mut seen = std::collections::HashSet::new();
            for c in table.columns() {
                assert!(
                    c.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "{}",
                    c.name
                );
                assert!(seen.insert(c.name), "duplicate {}", c.name);
                assert!(!c.doc.is_empty(), "{} has no doc", c.name);
            }
        }
    }
}
