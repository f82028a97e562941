//! The behaviour every [`ObjectStore`] must have; each backend's tests call
//! [`run`] (the S3 backend against moto, from `tests/s3_conformance.rs`).

use std::sync::Arc;

use bytes::Bytes;

use super::{ObjectStore, PutMode, PutOutcome};

fn etag_of(outcome: PutOutcome) -> String {
    match outcome {
        PutOutcome::Written { etag } => etag,
        PutOutcome::Conflict => panic!("expected a write, got a conflict"),
    }
}

/// Eight writers put bodies `first_byte + i` at `key` at once; returns how many
/// succeeded. Bodies differ from every earlier race's, so a win always changes the tag.
async fn racing_puts(
    store: &Arc<dyn ObjectStore>,
    key: &'static str,
    first_byte: u8,
    mode: impl Fn() -> PutMode,
) -> usize {
    let puts = (0..8u8).map(|i| {
        let (store, mode) = (store.clone(), mode());
        tokio::spawn(async move {
            store
                .put(key, Bytes::from(vec![first_byte + i; 64]), mode)
                .await
                .unwrap()
        })
    });
    futures::future::join_all(puts)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(PutOutcome::Written { .. })))
        .count()
}

/// Runs every check against `store`, which must be empty.
pub async fn run(store: Arc<dyn ObjectStore>) {
    let key = "executions/dt=2026-01-02/123456789012_us-east-1.parquet";
    assert!(
        store.get(key).await.unwrap().is_none(),
        "a missing key reads as None"
    );

    let first = etag_of(
        store
            .put(key, Bytes::from_static(b"one"), PutMode::Create)
            .await
            .unwrap(),
    );
    let got = store.get(key).await.unwrap().expect("written object");
    assert_eq!(
        (got.body.as_ref(), got.etag.as_str()),
        (b"one".as_ref(), first.as_str())
    );

    // Streamed to a local file: the same bytes and tag; a local file that cannot be
    // written (a full scratch disk: /dev/full) is a local error naming that file, not
    // a failure of the store or its object.
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("copy");
    assert_eq!(
        store.get_file(key, &copy).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(std::fs::read(&copy).unwrap(), b"one");
    let full = std::path::Path::new("/dev/full");
    if full.exists() {
        // Larger than any write buffer: the copy's writes fail, not only its flush.
        let big = "executions/dt=2026-01-03/123456789012_us-east-1.parquet";
        let body = Bytes::from(vec![7u8; 600 * 1024]);
        store.put(big, body, PutMode::Create).await.unwrap();
        let err = store.get_file(big, full).await.unwrap_err();
        let mut said = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(e) = source {
            said = format!("{said}: {e}");
            source = e.source();
        }
        assert!(err.is_staging() && said.contains("/dev/full"), "{said}");
        store.delete(big).await.unwrap();
    }

    assert_eq!(
        store
            .put(key, Bytes::from_static(b"two"), PutMode::Create)
            .await
            .unwrap(),
        PutOutcome::Conflict,
        "create over an existing object"
    );
    assert_eq!(
        store
            .put(
                key,
                Bytes::from_static(b"two"),
                PutMode::Replace("not-the-etag".into())
            )
            .await
            .unwrap(),
        PutOutcome::Conflict,
        "replace with a wrong etag"
    );
    let second = etag_of(
        store
            .put(
                key,
                Bytes::from_static(b"two"),
                PutMode::Replace(first.clone()),
            )
            .await
            .unwrap(),
    );
    assert_ne!(first, second, "a new version has a new etag");
    assert_eq!(store.get(key).await.unwrap().unwrap().body.as_ref(), b"two");
    assert_eq!(
        store
            .put(key, Bytes::from_static(b"three"), PutMode::Replace(first))
            .await
            .unwrap(),
        PutOutcome::Conflict,
        "replace with a stale etag"
    );
    assert_eq!(
        store
            .put(
                "executions/missing",
                Bytes::from_static(b"x"),
                PutMode::Replace(second)
            )
            .await
            .unwrap(),
        PutOutcome::Conflict,
        "replace of a missing object"
    );

    store
        .put(
            "_state/flows/a.json",
            Bytes::from_static(b"{}"),
            PutMode::Create,
        )
        .await
        .unwrap();
    store
        .put(
            "executions/dt=2026-01-01/b.parquet",
            Bytes::from_static(b"b"),
            PutMode::Create,
        )
        .await
        .unwrap();
    assert_eq!(
        store.list("executions/").await.unwrap(),
        vec![
            "executions/dt=2026-01-01/b.parquet".to_string(),
            key.to_string()
        ]
    );
    assert_eq!(
        store.list("_state/flows/").await.unwrap(),
        vec!["_state/flows/a.json".to_string()]
    );
    assert!(store.list("nothing/").await.unwrap().is_empty());

    // Delete removes the object; deleting a missing key is not an error.
    store.delete("_state/flows/a.json").await.unwrap();
    assert!(store.get("_state/flows/a.json").await.unwrap().is_none());
    assert!(store.list("_state/flows/").await.unwrap().is_empty());
    store.delete("_state/flows/a.json").await.unwrap();

    // Racing writers: exactly one create wins; exactly one replace of a version wins.
    let race = "catalog_registrations/dt=2026-01-03/race.parquet";
    let creates = racing_puts(&store, race, 0, || PutMode::Create).await;
    assert_eq!(creates, 1, "racing creates");
    let base = store.get(race).await.unwrap().unwrap().etag;
    let wins = racing_puts(&store, race, 100, || PutMode::Replace(base.clone())).await;
    assert_eq!(wins, 1, "racing replaces");
    store.check().await.unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LocalStore, MemoryStore};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn memory_store_conforms() {
        run(Arc::new(MemoryStore::new())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn local_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        run(Arc::new(LocalStore::new(dir.path().join("dest")))).await;
        // No temporary file is left behind.
        let leftovers: Vec<_> = walk(dir.path())
            .into_iter()
            .filter(|p| p.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    fn walk(p: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(p).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path().display().to_string());
            }
        }
        out
    }
}
