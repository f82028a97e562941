//! The plain data the stages hand each other, and the rules on it that more than
//! one stage applies. Extract produces these types from the SDK's, transform turns
//! them into Arrow rows, load merges those rows: none of them needs another's
//! dependencies (the AWS SDK, Arrow) to name a run or a flow.
//!
//! - [`ExecutionRecord`]: one run as `DescribeFlowExecutionRecords` described it.
//! - [`FlowInfo`] and [`FlowDetails`]: a flow's identity and its `ListFlows` row.
//! - [`supersedes`]: which of two versions of one run is the newer.
//!
//! `testkit` (a feature, for unit tests only) builds fixtures of these types.

mod error;
mod flow;
mod record;
mod version;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::{Error, Result};
pub use flow::{FlowDetails, FlowInfo, LastRun};
pub use record::{
    CatalogDetail, ExecutionRecord, LATEST_MILLIS, RegistrationOutput, is_finished, is_open,
};
pub use version::supersedes;
