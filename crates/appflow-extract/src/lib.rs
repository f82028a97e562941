//! Reads AppFlow run history with the real `aws-sdk-appflow` client.
//!
//! [`Extractor::list_flows`] discovers the flows to export; [`Extractor::extract`]
//! pages each flow's `DescribeFlowExecutionRecords` newest-first, concurrently, and
//! stops at the flow's [`cutoff`]. Records come out as plain [`ExecutionRecord`]s with
//! exact millisecond timestamps (the types are `appflow-model`'s, re-exported here
//! for the binary). This crate knows nothing of Arrow, Parquet or S3.

mod cutoff;
mod error;
mod flows;
mod pager;
mod record;
mod shard;

pub use cutoff::{
    IncrementalPolicy, Resume, RetentionGap, created_again, cutoff, open_since, retention_gap,
    unchanged,
};
pub use error::{Error, Result};
pub use flows::FlowSelection;
pub use pager::{
    DEFAULT_CONCURRENCY, ExtractJob, Extractor, FLOWS_PER_SLOT, FlowEvent, FlowExtract,
    FlowListing, FlowReader, FlowSummary, Reading,
};
pub use shard::Shard;

pub use appflow_aws::{CallGate, Calls};

pub use appflow_model::{
    CatalogDetail, ExecutionRecord, FlowDetails, FlowInfo, LastRun, RegistrationOutput,
    is_finished, is_open,
};
