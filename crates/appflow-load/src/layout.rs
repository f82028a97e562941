//! Every object key of the export, built and parsed here and nowhere else (the data
//! contract of README.md and the design brief):
//!
//! ```text
//! executions/dt=YYYY-MM-DD/<account>_<region>.parquet
//! catalog_registrations/dt=YYYY-MM-DD/<account>_<region>.parquet
//! flows/<account>_<region>.parquet
//! _state/flows/<account>_<region>.json
//! _state/backfills/<since>_<until|open>/<account>_<region>.json
//! _state/runs/<run-id>.json
//! ```

use appflow_transform::Table;

use crate::backfill::BackfillId;
use crate::stage::PartitionKey;

/// Where the state files are (one per account and region).
pub const STATE_PREFIX: &str = "_state/flows/";
/// Where the backfills' progress files are.
pub const BACKFILLS_PREFIX: &str = "_state/backfills/";
/// Where the run manifests are.
pub const RUNS_PREFIX: &str = "_state/runs/";

/// `executions/dt=2026-11-25/123456789012_us-east-1.parquet`: a table's day file.
pub fn day_file(table: Table, key: &PartitionKey) -> String {
    format!(
        "{}/dt={}/{}",
        table.name(),
        key.day,
        file_name(&key.account_id, &key.region, "parquet")
    )
}

/// `flows/123456789012_us-east-1.parquet`: an account and region's flows table.
pub fn flows_file(account_id: &str, region: &str) -> String {
    format!(
        "{}/{}",
        Table::Flows.name(),
        file_name(account_id, region, "parquet")
    )
}

/// `_state/flows/123456789012_us-east-1.json`: an account and region's watermarks.
pub fn state_file(account_id: &str, region: &str) -> String {
    format!("{STATE_PREFIX}{}", file_name(account_id, region, "json"))
}

/// The account and region a state file's key names.
pub fn parse_state_file(key: &str) -> Option<(String, String)> {
    account_region(key.strip_prefix(STATE_PREFIX)?)
}

/// `_state/backfills/2026-01-01_open/123456789012_us-east-1.json`: what the backfill
/// `id` completed of an account and region.
pub fn backfill_file(id: &BackfillId, account_id: &str, region: &str) -> String {
    format!(
        "{BACKFILLS_PREFIX}{}_{}/{}",
        id.since,
        id.until.as_deref().unwrap_or("open"),
        file_name(account_id, region, "json")
    )
}

/// The account and region a backfill progress file's key names.
pub fn parse_backfill_file(key: &str) -> Option<(String, String)> {
    let (_, file) = key.strip_prefix(BACKFILLS_PREFIX)?.split_once('/')?;
    account_region(file)
}

/// `_state/runs/<run-id>.json`: a run's manifest.
pub fn manifest_file(run_id: &str) -> String {
    format!("{RUNS_PREFIX}{run_id}.json")
}

/// Whether `key` is a run manifest (and not, say, a temporary file).
pub fn is_manifest_file(key: &str) -> bool {
    key.strip_prefix(RUNS_PREFIX)
        .is_some_and(|name| name.ends_with(".json") && !name.contains('/'))
}

fn file_name(account_id: &str, region: &str, extension: &str) -> String {
    format!("{account_id}_{region}.{extension}")
}

/// `123456789012_us-east-1.json` -> (account, region). Account ids are digits, so the
/// first `_` ends the account.
fn account_region(file_name: &str) -> Option<(String, String)> {
    let (account, region) = file_name.strip_suffix(".json")?.split_once('_')?;
    Some((account.to_string(), region.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_data_contract_and_parse_back() {
        let day = PartitionKey {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            day: "2026-11-25".into(),
        };
        assert_eq!(
            day_file(Table::Executions, &day),
            "executions/dt=2026-11-25/123456789012_us-east-1.parquet"
        );
        assert_eq!(
            day_file(Table::CatalogRegistrations, &day),
            "catalog_registrations/dt=2026-11-25/123456789012_us-east-1.parquet"
        );
        assert_eq!(flows_file("1", "eu-west-1"), "flows/1_eu-west-1.parquet");
        assert_eq!(
            state_file("1", "eu-west-1"),
            "_state/flows/1_eu-west-1.json"
        );
        assert_eq!(
            parse_state_file(&state_file("1", "eu-west-1")),
            Some(("1".to_string(), "eu-west-1".to_string()))
        );
        assert_eq!(parse_state_file("_state/flows/.tmp-x"), None);
        assert_eq!(manifest_file("r1"), "_state/runs/r1.json");
        assert!(is_manifest_file("_state/runs/r1.json"));
        assert!(!is_manifest_file("_state/runs/notes.txt"));
        assert!(!is_manifest_file("_state/runs/x/r1.json"));
    }

    #[test]
    fn a_backfill_s_files_are_named_by_its_window() {
        let id = BackfillId {
            since: "2026-01-01".into(),
            until: None,
        };
        assert_eq!(
            backfill_file(&id, "1", "eu-west-1"),
            "_state/backfills/2026-01-01_open/1_eu-west-1.json"
        );
        assert_eq!(
            parse_backfill_file(&backfill_file(&id, "1", "eu-west-1")),
            Some(("1".to_string(), "eu-west-1".to_string()))
        );
        assert_eq!(parse_backfill_file("_state/backfills/x.json"), None);
    }
}
