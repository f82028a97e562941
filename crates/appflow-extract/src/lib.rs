//! Reads AppFlow run history with the real `aws-sdk-appflow` client.
//!
//! [`Extractor::list_flows`] discovers the flows to export; [`Extractor::extract`]
//! pages each flow's `DescribeFlowExecutionRecords` newest-first, concurrently, and
//! stops at the flow's [`cutoff`]. Records come out as plain [`ExecutionRecord`]s with
//! exact millisecond timestamps. This crate knows nothing of Arrow, Parquet or S3.

mod cutoff;
mod error;
mod flows;
mod pager;
mod record;
mod shard;

pub use cutoff::{IncrementalPolicy, Resume, cutoff};
pub use error::{Error, Result};
pub use flows::{FlowDetails, FlowInfo, FlowSelection};
pub use pager::{
    ExtractJob, Extractor, FlowEvent, FlowExtract, FlowListing, FlowReader, FlowSummary, Reading,
};
pub use record::{CatalogDetail, ExecutionRecord, RegistrationOutput, is_finished, is_open};
pub use shard::Shard;
