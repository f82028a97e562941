//! One export run as a library: the CLI parses flags and builds the AWS clients,
//! then hands a [`Plan`] to a [`Pipeline`]; `demo`, the tests and the benchmarks do
//! the same.
//!
//! A run ([`Pipeline::execute`]): check the destination, list the flows and keep
//! this shard's ([`Pipeline::prepare`]: the state and each flow's cutoff), then
//! rounds of reading (each page transformed and staged as it comes; a flow that
//! fails has its pages discarded) and committing (day files, then watermarks, then a
//! backfill's progress), then the flows table. [`Pipeline::run_recorded`] adds the
//! run's manifest and its `run finished` log line.
//!
//! A run asked to stop ([`Stop`]) starts no new flow, gives those in flight
//! [`Plan::stop_timeout`] to end, commits what ended and records that it was
//! interrupted.
//!
//! The pipeline neither parses flags nor prints; it reports what it did in a
//! [`RunReport`] and tells an [`Observer`] as it goes.

mod error;
mod observer;
mod plan;
mod prepare;
mod report;
mod round;
mod run;
mod stop;
mod time;

use std::path::PathBuf;

use appflow_extract::Extractor;
use appflow_load::{Loader, Stage};

pub use error::{Error, ErrorKind, Result};
pub use observer::{Observer, Quiet};
pub use plan::{Backfill, Plan, Target};
pub use prepare::Prepared;
pub use report::RunReport;
pub use run::Status;
pub use stop::Stop;
pub use time::{iso, now_ms};

/// Where a run stages the rows it read before it merges them into day files.
#[derive(Clone, Debug, Default)]
pub struct Staging {
    /// The folder under which the run's temporary staging folder is made (the
    /// system's temporary folder when `None`).
    pub dir: Option<PathBuf>,
    /// Bytes of rows held in memory before they are written to the folder (the
    /// stage's default when `None`).
    pub memory_budget: Option<usize>,
}

/// The stages one run goes through: an extractor for the account and region's
/// AppFlow, a loader for the destination, and where rows wait in between.
#[derive(Clone, Debug)]
pub struct Pipeline {
    extractor: Extractor,
    loader: Loader,
    staging: Staging,
    stop: Stop,
}

impl Pipeline {
    pub fn new(extractor: Extractor, loader: Loader) -> Self {
        Pipeline {
            extractor,
            loader,
            staging: Staging::default(),
            stop: Stop::default(),
        }
    }

    /// The pipeline with a [`Stop`] through which its runs can be asked to stop early.
    pub fn with_stop(mut self, stop: Stop) -> Self {
        self.stop = stop;
        self
    }

    pub fn with_staging(mut self, staging: Staging) -> Self {
        self.staging = staging;
        self
    }

    pub fn loader(&self) -> &Loader {
        &self.loader
    }

    fn stage(&self) -> Result<Stage> {
        Stage::open(self.staging.dir.clone(), self.staging.memory_budget)
            .map_err(|source| Error::Staging { flow: None, source })
    }
}
