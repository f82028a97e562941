//! `appflow-export schema`: the query surface for a destination, from the code's schema.

use anyhow::anyhow;
use appflow_load::Destination;
use appflow_transform::{Location, Table, arrow_json, athena_ddl, duckdb_views, glue_table};

use crate::cli::{SchemaArgs, SchemaFormat, TableName};
use crate::{EXIT_USAGE, Failure};

pub fn command(args: &SchemaArgs) -> Result<(), Failure> {
    Destination::parse(&args.dest).map_err(|e| Failure::new(EXIT_USAGE, e))?;
    let valid_database = !args.database.is_empty()
        && args
            .database
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid_database {
        return Err(Failure::new(
            EXIT_USAGE,
            anyhow!(
                "--database '{}' is not a valid Athena database name (lower-case letters, digits, _)",
                args.database
            ),
        ));
    }
    let tables: Vec<Table> = match args.table {
        None => Table::ALL.to_vec(),
        Some(TableName::Executions) => vec![Table::Executions],
        Some(TableName::CatalogRegistrations) => vec![Table::CatalogRegistrations],
        Some(TableName::Flows) => vec![Table::Flows],
    };
    let at = Location { dest: &args.dest };
    let json_docs = |render: &dyn Fn(Table) -> String| match tables.as_slice() {
        [one] => render(*one),
        all => {
            let docs: Vec<String> = all
                .iter()
                .map(|t| render(*t).trim_end().to_string())
                .collect();
            format!("[\n{}\n]\n", docs.join(",\n"))
        }
    };
    let text = match args.format {
        SchemaFormat::Arrow => json_docs(&arrow_json),
        SchemaFormat::Glue => json_docs(&|t| glue_table(t, &at, &args.database)),
        SchemaFormat::Athena => tables
            .iter()
            .map(|t| athena_ddl(*t, &at, &args.database))
            .collect::<Vec<_>>()
            .join("\n"),
        SchemaFormat::Duckdb => duckdb_views(&at, &tables),
    };
    print!("{text}");
    Ok(())
}
