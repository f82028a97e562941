//! The places we write, behind one small trait with conditional puts.

use std::path::Path;

use bytes::Bytes;

use crate::error::{Error, Result};

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
    /// Streams the object at `key` into the local file `path` (created or truncated)
    /// and returns its tag, or `None` when there is none. Day files go this way, so
    /// that no object is ever held whole in memory. This default, through
    /// [`ObjectStore::get`], is for stores that hold their objects in memory anyway.
    async fn get_file(&self, key: &str, path: &Path) -> Result<Option<String>> {
        let Some(object) = self.get(key).await? else {
            return Ok(None);
        };
        tokio::fs::write(path, &object.body)
            .await
            .map_err(|e| local_file(path, e))?;
        Ok(Some(object.etag))
    }
    /// [`ObjectStore::put`] of the bytes of the local file `path`, streamed from
    /// disk. This default reads the file into memory (see [`ObjectStore::get_file`]).
    async fn put_file(&self, key: &str, path: &Path, mode: PutMode) -> Result<PutOutcome> {
        let body = tokio::fs::read(path)
            .await
            .map_err(|e| local_file(path, e))?;
        self.put(key, Bytes::from(body), mode).await
    }
    /// Removes the object at `key`; a missing key is not an error (two writers may
    /// prune the same old run manifests). Used only under `_state/runs/`: data is
    /// never deleted.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Fails with a clear error when the destination cannot be reached or written.
    async fn check(&self) -> Result<()>;
    /// Where `key` is, for messages (`s3://bucket/prefix/key`, `/path/key`).
    fn location(&self, key: &str) -> String;
}

/// A local temporary file of a streamed object failed: the staging disk, not the
/// destination.
pub(crate) fn local_file(path: &Path, e: std::io::Error) -> Error {
    Error::stage(format!("temporary file {}: {e}", path.display()))
}
