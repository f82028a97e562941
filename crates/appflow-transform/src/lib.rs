//! Flattens execution records and flow listings into Arrow `RecordBatch`es with the
//! fixed, versioned schemas of the data contract (`executions`,
//! `catalog_registrations`, `flows`), and renders
//! the query surface (Arrow JSON, Athena DDL, Glue tables, DuckDB views) from them.
//! No IO.

mod batch;
mod flows;
mod render;
mod schema;

pub use batch::{Batches, to_batches};
pub use flows::flows_batch;
pub use render::{
    Location, arrow_json, athena_ddl, cloudformation_tables, duckdb_views, glue_table,
};
pub use schema::{
    CATALOG_FIELDS, Column, ColumnType, DT_DOC, EXECUTION_FIELDS, FLOW_FIELDS, SCHEMA_VERSION,
    SCHEMA_VERSION_KEY, Table, catalog_schema, executions_schema, flows_schema, schema_for,
};

/// What can go wrong while building batches.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building the {table} batch failed")]
    Arrow {
        table: &'static str,
        #[source]
        source: arrow::error::ArrowError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
