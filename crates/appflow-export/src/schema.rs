//! `appflow-export schema`: the query surface for a destination, from the code's schema.

use anyhow::anyhow;
use appflow_load::Destination;
use appflow_transform::{
    Location, Table, arrow_json, athena_ddl, cloudformation_tables, duckdb_views, glue_table,
};

use crate::cli::{SchemaArgs, SchemaFormat, TableName};
use crate::{EXIT_USAGE, Failure};

pub fn command(args: &SchemaArgs) -> Result<(), Failure> {
    // A template's `${Name}` references stand for a value the template supplies: they
    // are checked as if each were a valid name.
    let resolved = |text: &str| match args.format {
        SchemaFormat::Cloudformation => without_references(text),
        _ => text.to_string(),
    };
    Destination::parse(&resolved(&args.dest)).map_err(|e| Failure::new(EXIT_USAGE, e))?;
    let database = resolved(&args.database);
    let valid_database = !database.is_empty()
        && database
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
        SchemaFormat::Cloudformation => cloudformation_tables(&tables, &at, &args.database),
    };
    print!("{text}");
    Ok(())
}

/// `text` with each CloudFormation reference (`${Name}`) replaced by `xxx` (a valid bucket and database name).
fn without_references(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => {
                out.push_str("xxx");
                rest = &rest[start + end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}
