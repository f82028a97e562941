//! A store in front of another that runs a hook before each put, for tests (feature
//! `testkit`): another writer's put first, a put that is refused, conflicts or panics.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::{Object, ObjectStore, PutMode, PutOutcome, local_file};
use crate::error::Result;

/// Runs before each put, with its key and body; `Some(outcome)` answers the put
/// instead of the inner store, `None` lets it through.
pub type PutHook =
    Arc<dyn Fn(String, Bytes) -> BoxFuture<'static, Result<Option<PutOutcome>>> + Send + Sync>;

#[derive(Clone)]
pub struct Intercepted {
    inner: Arc<dyn ObjectStore>,
    before_put: PutHook,
}

impl Intercepted {
    pub fn new(inner: Arc<dyn ObjectStore>, before_put: PutHook) -> Self {
        Intercepted { inner, before_put }
    }
}

impl std::fmt::Debug for Intercepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intercepted")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl ObjectStore for Intercepted {
    async fn get(&self, key: &str) -> Result<Option<Object>> {
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> Result<PutOutcome> {
        if let Some(outcome) = (self.before_put)(key.to_string(), body.clone()).await? {
            return Ok(outcome);
        }
        self.inner.put(key, body, mode).await
    }
    async fn get_file(&self, key: &str, path: &Path) -> Result<Option<String>> {
        self.inner.get_file(key, path).await
    }
    /// The hook sees the file's bytes (tests hold small files).
    async fn put_file(&self, key: &str, path: &Path, mode: PutMode) -> Result<PutOutcome> {
        let body = tokio::fs::read(path)
            .await
            .map_err(|e| local_file(path, e))?;
        if let Some(outcome) = (self.before_put)(key.to_string(), Bytes::from(body)).await? {
            return Ok(outcome);
        }
        self.inner.put_file(key, path, mode).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn check(&self) -> Result<()> {
        self.inner.check().await
    }
    fn location(&self, key: &str) -> String {
        self.inner.location(key)
    }
}
