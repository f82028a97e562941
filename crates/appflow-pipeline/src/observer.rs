//! What a run tells whoever watches it (the CLI's progress bars).

use appflow_load::PartitionKey;

/// What a run tells its observer (a progress bar) as it goes. Every method does
/// nothing by default.
pub trait Observer: Send + Sync {
    /// Reading starts: `flows` to read.
    fn reading(&self, flows: usize) {
        let _ = flows;
    }
    /// A page of `records` is read.
    fn page(&self, records: u64) {
        let _ = records;
    }
    /// A flow is read (or failed).
    fn flow_done(&self) {}
    /// Every flow is read.
    fn reading_done(&self) {}
    /// A commit starts (a backfill commits every `--checkpoint-every`).
    fn merging(&self) {}
    /// A day file's merge starts, of `total` in this commit.
    fn day(&self, key: &PartitionKey, total: usize) {
        let _ = (key, total);
    }
    /// The run is done.
    fn finish(&self) {}
}

/// An observer that shows nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {}
