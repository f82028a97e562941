//! Fixtures for the crates' unit tests (feature `testkit`): a test names what is
//! special about its data and takes the rest from here.

use crate::{CatalogDetail, ExecutionRecord, FlowInfo, RegistrationOutput};

/// The account of [`flow`]'s flows.
pub const ACCOUNT: &str = "123456789012";
/// The region of [`flow`]'s flows.
pub const REGION: &str = "us-east-1";

/// A flow of [`ACCOUNT`] in [`REGION`].
pub fn flow(name: &str) -> FlowInfo {
    flow_in(name, ACCOUNT, REGION)
}

/// A flow of another account or region.
pub fn flow_in(name: &str, account: &str, region: &str) -> FlowInfo {
    let arn = format!("arn:aws:appflow:{region}:{account}:flow/{name}");
    match FlowInfo::from_arn(name, &arn) {
        Ok(flow) => flow,
        Err(e) => panic!("a test flow needs a valid account and region: {e}"),
    }
}

/// A run started at `started` (epoch ms) with this status, last updated at `updated`.
pub fn run(id: &str, started: i64, status: &str, updated: i64) -> ExecutionRecord {
    ExecutionRecord {
        execution_status: Some(status.into()),
        last_updated_at: Some(updated),
        ..ExecutionRecord::new(id, started)
    }
}

/// A Glue catalog detail of `table`, with a table registration of `status` if given.
pub fn glue(table: impl Into<String>, status: Option<&str>) -> CatalogDetail {
    CatalogDetail {
        catalog_type: Some("GLUE".into()),
        table_name: Some(table.into()),
        table_registration: status.map(|s| RegistrationOutput {
            status: Some(s.into()),
            message: None,
            result: None,
        }),
        partition_registration: None,
    }
}
