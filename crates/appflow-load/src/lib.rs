//! Writes export batches into Hive-partitioned Parquet on S3 or a local folder, and
//! keeps the per-flow watermarks.
//!
//! [`Stage`] collects every flow's rows of one run in local temporary files, split
//! by (account, region, day). [`Loader::commit`] then reads, merges and writes each
//! touched day file once, with conditional writes ([`ObjectStore`]) so concurrent
//! writers never lose each other's rows. [`Loader::update_state`] records the
//! watermarks afterwards, and [`Loader::commit_flows`] the `flows` table's
//! snapshot. This crate never calls AppFlow.

mod backfill;
mod dest;
mod error;
mod flows;
pub mod layout;
mod loader;
mod manifest;
mod merge;
mod parquet_io;
mod reads;
mod sorted;
mod stage;
mod state;
mod store;
mod update;

pub use backfill::{BackfillId, BackfillProgress, BackfilledFlow};
pub use dest::{Destination, S3Options, Sse};
pub use error::{Error, Result};
pub use loader::{CommitReport, Loader};
pub use manifest::{FlowRun, GapWindow, RunManifest, run_id};
pub use parquet_io::{decode, encode};
pub use reads::{FlowRead, ReadView};
pub use stage::{AddId, PartitionKey, Stage};
pub use state::{FlowState, FlowUpdate, GapRecord, StateFile, current_to};
#[cfg(any(test, feature = "testkit"))]
pub use store::{Intercepted, PutHook};
pub use store::{LocalStore, MemoryStore, Object, ObjectStore, PutMode, PutOutcome, S3Store};

#[doc(hidden)]
pub use store::conformance;
