//! An in-memory store for unit tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;

use super::{Object, ObjectStore, PutMode, PutOutcome};
use crate::error::Result;

#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<(u64, BTreeMap<String, Object>)>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait::async_trait]
impl ObjectStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Object>> {
        Ok(self
            .objects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .get(key)
            .cloned())
    }

    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> Result<PutOutcome> {
        let mut guard = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        let (version, objects) = &mut *guard;
        if !mode.allows(objects.get(key).map(|o| o.etag.as_str())) {
            return Ok(PutOutcome::Conflict);
        }
        *version += 1;
        let etag = format!("v{version}");
        objects.insert(
            key.to_string(),
            Object {
                body,
                etag: etag.clone(),
            },
        );
        Ok(PutOutcome::Written { etag })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let guard = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        Ok(guard
            .1
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.objects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .remove(key);
        Ok(())
    }

    async fn check(&self) -> Result<()> {
        Ok(())
    }

    fn location(&self, key: &str) -> String {
        format!("memory://{key}")
    }
}
