//! The places we write, behind one small trait with conditional puts.

use bytes::Bytes;

use crate::error::Result;

#[cfg(any(test, feature = "testkit"))]
mod intercepted;
mod local;
mod memory;
mod s3;

/// The checks every backend passes (used by this crate's tests).
pub mod conformance;

#[cfg(any(test, feature = "testkit"))]
pub use intercepted::{Intercepted, PutHook};
pub use local::LocalStore;
pub use memory::MemoryStore;
pub use s3::S3Store;

/// An object and the tag of its current version.
#[derive(Clone, Debug)]
pub struct Object {
    pub body: Bytes,
    pub etag: String,
}

/// The condition of a put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Only if no object exists at the key (`If-None-Match: *`).
    Create,
    /// Only if the object's current version has this tag (`If-Match`).
    Replace(String),
}

impl PutMode {
    /// Whether the put may go ahead, given the tag of the object now at the key.
    pub fn allows(&self, current: Option<&str>) -> bool {
        match self {
            PutMode::Create => current.is_none(),
            PutMode::Replace(tag) => current == Some(tag.as_str()),
        }
    }
}

/// What a conditional put did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Written {
        etag: String,
    },
    /// The condition failed: another writer got there first. Re-read and retry.
    Conflict,
}

/// Keys are relative, `/`-separated (`executions/dt=2026-01-01/1_us-east-1.parquet`).
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// The object at `key`, or `None` when there is none.
    async fn get(&self, key: &str) -> Result<Option<Object>>;
    /// Writes `body` at `key` atomically (readers see the old or the new object)
    /// if `mode` holds.
    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> Result<PutOutcome>;
    /// Every key under `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// Removes the object at `key`; a missing key is not an error (two writers may
    /// prune the same old run manifests). Used only under `_state/runs/`: data is
    /// never deleted.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Fails with a clear error when the destination cannot be reached or written.
    async fn check(&self) -> Result<()>;
    /// Where `key` is, for messages (`s3://bucket/prefix/key`, `/path/key`).
    fn location(&self, key: &str) -> String;
}
