//! `schemas/` is generated from the code's schema: this test fails when the files and
//! the code differ. Regenerate with `UPDATE_SCHEMAS=1 cargo test -p appflow-transform --test golden`.

use std::path::PathBuf;

use appflow_transform::{Location, Table, arrow_json, athena_ddl, duckdb_views, glue_table};

/// The destination and database the checked-in files are written for.
const EXAMPLE_DEST: &str = "s3://your-bucket/appflow-export";
const EXAMPLE_DATABASE: &str = "appflow";

fn expected() -> Vec<(String, String)> {
    let at = Location { dest: EXAMPLE_DEST };
    let mut files = Vec::new();
    for table in Table::ALL {
        files.push((format!("arrow/{}.json", table.name()), arrow_json(table)));
        files.push((
            format!("athena/{}.sql", table.name()),
            athena_ddl(table, &at, EXAMPLE_DATABASE),
        ));
        files.push((
            format!("glue/{}.json", table.name()),
            glue_table(table, &at, EXAMPLE_DATABASE),
        ));
    }
    files.push((
        "duckdb/views.sql".to_string(),
        duckdb_views(&at, &Table::ALL),
    ));
    files
}

#[test]
fn schemas_folder_matches_the_code() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for (rel, content) in expected() {
        let path = root.join(&rel);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &content).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(content.as_str()) {
            stale.push(rel);
        }
    }
    assert!(
        stale.is_empty(),
        "schemas/ differs from the code for {stale:?}; regenerate with UPDATE_SCHEMAS=1 cargo test -p appflow-transform --test golden"
    );
}
