//! `appflow-export schema`: the query surface for a destination, from the code's schema.

use anyhow::anyhow;
use appflow_load::Destination;
use appflow_transform::{Location, Table, arrow_json, athena_ddl, duckdb_views};

use crate::cli::{SchemaArgs, SchemaFormat};
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
    let at = Location { dest: &args.dest };
    let text = match args.format {
        SchemaFormat::Arrow => {
            let docs: Vec<String> = Table::ALL
                .iter()
                .map(|t| arrow_json(*t).trim_end().to_string())
                .collect();
            format!("[\n{}\n]\n", docs.join(",\n"))
        }
        SchemaFormat::Athena => Table::ALL
            .iter()
            .map(|t| athena_ddl(*t, &at, &args.database))
            .collect::<Vec<_>>()
            .join("\n"),
        SchemaFormat::Duckdb => duckdb_views(&at),
    };
    print!("{text}");
    Ok(())
}
