//! The one conditional update that every object of the export goes through: day
//! files, the flows table, state files, backfill progress and run manifests.
//!
//! [`update`] reads the object with its version (ETag), decodes it, applies the
//! change to what is stored at that moment, encodes the result, writes nothing when
//! the change keeps the object or its bytes come out the same, and otherwise puts it
//! on the condition that the object is still the version it read. When another
//! writer got there first it backs off, reads again and reapplies the change, under
//! one [`POLICY`]; each lost race is counted once, here.
//!
//! The guarantees about a single object live here:
//! - a retried put that meets its own earlier write (the response was lost, the write
//!   was not: the SDK retries, and the condition then fails against our own bytes) is
//!   a success, not a conflict: after a failed condition the object is read again, and
//!   if it holds exactly the bytes this attempt meant to write, the write is done;
//! - an object of a newer format version than this release knows is never changed:
//!   [`Format::decode`] refuses it ([`NewerVersion`]), and the update fails naming the
//!   object and both versions, leaving it as it is.

use std::marker::PhantomData;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

mod content;

pub(crate) use content::{Content, Medium, temp_file};

use crate::error::{BoxError, Error, Result};
use crate::parquet_io::{decode, encode};
use crate::store::{ObjectStore, PutMode, PutOutcome};
use appflow_transform::{Table, schema_for};

/// An object in a format version this release does not know (a newer one, or one
/// that is not a whole number, which only another release writes): never merged
/// into, never rewritten.
#[derive(Debug)]
pub(crate) struct NewerVersion {
    pub found: String,
    pub known: u64,
}

impl std::fmt::Display for NewerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "format version {} is not one this release knows (it knows up to {})",
            self.found, self.known
        )
    }
}

impl std::error::Error for NewerVersion {}

/// Refuses a `found` version (as stored, `None` when none is) that is newer than
/// `known`, or that is not a whole number.
pub(crate) fn check_version(found: Option<&str>, known: u64) -> Result<(), BoxError> {
    let Some(found) = found else {
        return Ok(());
    };
    match found.trim().parse::<u64>() {
        Ok(n) if n <= known => Ok(()),
        _ => Err(Box::new(NewerVersion {
            found: found.to_string(),
            known,
        })),
    }
}

/// How an object's bytes become a value and back.
pub(crate) trait Format: Send + Sync + 'static {
    type Value: Send + 'static;
    /// What such an object is, for messages ("state file").
    fn what(&self) -> &'static str;
    fn decode(&self, body: Bytes) -> Result<Self::Value, BoxError>;
    fn encode(&self, value: &Self::Value) -> Result<Bytes, BoxError>;
}

/// A Parquet file of one of the export's tables.
pub(crate) struct Parquet(pub Table);

impl Format for Parquet {
    type Value = RecordBatch;

    fn what(&self) -> &'static str {
        "Parquet file of this export"
    }

    fn decode(&self, body: Bytes) -> Result<RecordBatch, BoxError> {
        decode(body, &schema_for(self.0))
    }

    fn encode(&self, value: &RecordBatch) -> Result<Bytes, BoxError> {
        encode(value)
    }
}

/// A JSON document of ours (state, backfill progress, run manifest), pretty-printed.
pub(crate) struct Json<T> {
    what: &'static str,
    /// The newest `version` member this release knows (`None`: not versioned).
    known: Option<u64>,
    value: PhantomData<fn() -> T>,
}

impl<T> Json<T> {
    /// A document without a format version (run manifests: written once, never
    /// rewritten).
    pub(crate) fn new(what: &'static str) -> Self {
        Json {
            what,
            known: None,
            value: PhantomData,
        }
    }

    /// A document whose `version` member is its format version, `known` the newest
    /// this release reads.
    pub(crate) fn versioned(what: &'static str, known: u32) -> Self {
        Json {
            known: Some(u64::from(known)),
            ..Self::new(what)
        }
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Format for Json<T> {
    type Value = T;

    fn what(&self) -> &'static str {
        self.what
    }

    fn decode(&self, body: Bytes) -> Result<T, BoxError> {
        let value: serde_json::Value = serde_json::from_slice(&body)?;
        if let Some(known) = self.known {
            // A whole number, as this release writes it; anything else (a string, a
            // fraction) is only another release's, shown as stored.
            let found = value.get("version").map(ToString::to_string);
            check_version(found.as_deref(), known)?;
        }
        Ok(serde_json::from_value(value)?)
    }

    fn encode(&self, value: &T) -> Result<Bytes, BoxError> {
        Ok(Bytes::from(serde_json::to_vec_pretty(value)?))
    }
}

/// The retry policy of contended objects.
pub(crate) struct Policy {
    /// Attempts at one object when other writers keep replacing it first.
    pub max_attempts: u32,
}

/// With [`backoff`], about two minutes of patience (dozens of shards on one account).
pub(crate) const POLICY: Policy = Policy { max_attempts: 80 };

/// A change of a decoded value: the stored value (`None`: no object yet) to the new
/// value (`None`: keep the object as it is, or create none).
pub(crate) type Change<V> = dyn Fn(Option<V>) -> Result<Option<V>, BoxError> + Send + Sync;

/// A change of an object's content: what is stored (`None`: no object yet) and, when
/// the update names a context object, that object as stored now, to the new content
/// (`None`: keep the object as it is, or create none).
pub(crate) type ContentChange =
    dyn Fn(Option<Content>, Option<Content>) -> Result<Option<Content>> + Send + Sync;

/// What happened to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wrote {
    Written,
    Unchanged,
    /// Nothing stored and nothing to store.
    Absent,
}

/// What [`update`] did: the object's fate and the races it lost on the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Updated {
    pub wrote: Wrote,
    pub conflicts: u32,
    /// The write made the object: none was stored (its content is this change's).
    pub created: bool,
}

/// Another object an update hands to its change, read again on every attempt.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Context<'a> {
    None,
    /// The object at this key.
    Always(&'a str),
    /// The object at this key, when the object updated is stored: a change that
    /// makes it anew does not need it.
    WhenStored(&'a str),
}

/// [`update_content`] of an object held in memory and decoded by `format`; nothing
/// is written when the new value encodes to the stored bytes.
pub(crate) async fn update<F: Format>(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    format: F,
    change: Arc<Change<F::Value>>,
) -> Result<Updated> {
    let location = store.location(key);
    let content_change: Arc<ContentChange> = Arc::new(move |stored, _| {
        let stored = match stored {
            Some(Content::Memory(bytes)) => Some(bytes),
            Some(Content::File(_)) => {
                return Err(Error::bug("updating an object", "read to a file"));
            }
            None => None,
        };
        let value = stored
            .clone()
            .map(|b| decode_stored(&format, b))
            .transpose()
            .map_err(|source| decode_error(location.clone(), format.what(), source))?;
        let Some(new) = change(value).map_err(|e| Error::write(location.clone(), e))? else {
            return Ok(None);
        };
        let body = format
            .encode(&new)
            .map_err(|e| Error::write(location.clone(), e))?;
        Ok((stored.as_ref() != Some(&body)).then_some(Content::Memory(body)))
    });
    update_content(store, key, &Medium::Memory, Context::None, content_change).await
}

/// Reads, changes and conditionally writes the object at `key` until its write holds
/// or nothing needs writing, holding its content as `medium` says. The `context`
/// object is read again on every attempt and handed to the change (a catalog file
/// follows the executions file as it is when the catalog file is written).
pub(crate) async fn update_content(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    medium: &Medium,
    context: Context<'_>,
    change: Arc<ContentChange>,
) -> Result<Updated> {
    let location = store.location(key);
    let mut conflicts = 0;
    // The object as read after a failed condition, for the next attempt (not read twice).
    let mut reread: Option<Option<(Content, String)>> = None;
    for attempt in 1..=POLICY.max_attempts {
        let existing = match reread.take() {
            Some(object) => object,
            None => medium.read(store, key).await?,
        };
        let context_key = match context {
            Context::Always(k) => Some(k),
            Context::WhenStored(k) if existing.is_some() => Some(k),
            _ => None,
        };
        let context_now = match context_key {
            Some(k) => medium.read(store, k).await?.map(|(content, _)| content),
            None => None,
        };
        let (stored, etag) = existing.map_or((None, None), |(c, e)| (Some(c), Some(e)));
        let had_object = stored.is_some();
        let change = change.clone();
        // Decoding, merging and encoding a day file is CPU work: off the IO threads.
        let body = tokio::task::spawn_blocking(move || change(stored, context_now))
            .await
            .map_err(|e| Error::bug(format!("updating {location}"), e))??;
        let Some(body) = body else {
            let wrote = if had_object {
                Wrote::Unchanged
            } else {
                Wrote::Absent
            };
            return Ok(Updated {
                wrote,
                conflicts,
                created: false,
            });
        };
        let mode = etag.map_or(PutMode::Create, PutMode::Replace);
        let written = Updated {
            wrote: Wrote::Written,
            conflicts,
            created: !had_object,
        };
        match body.put(store, key, mode).await? {
            PutOutcome::Written { .. } => return Ok(written),
            PutOutcome::Conflict => {
                // Our own earlier attempt, whose response was lost, or another writer?
                let now = medium.read(store, key).await?;
                if let Some((now, _)) = &now
                    && now.same(&body).await?
                {
                    tracing::debug!(object = %location, attempt, "a retried write found its own earlier attempt in place");
                    return Ok(written);
                }
                reread = Some(now);
                conflicts += 1;
                tracing::info!(object = %location, attempt, "another writer changed the object first; merging again");
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
    Err(Error::Contention {
        location,
        attempts: POLICY.max_attempts,
    })
}

/// The error for an object that cannot be decoded: one of a newer release, or one
/// that is not ours to read.
pub(crate) fn decode_error(location: String, what: &'static str, source: BoxError) -> Error {
    let source = match source.downcast::<NewerVersion>() {
        Ok(newer) => {
            return Error::NewerVersion {
                location,
                what,
                found: newer.found,
                known: newer.known,
            };
        }
        Err(source) => source,
    };
    match source.downcast::<crate::parquet_io::UnreadableCodec>() {
        Ok(unreadable) => Error::UnreadableCodec {
            location,
            what,
            codec: unreadable.codec,
        },
        Err(source) => Error::Corrupt {
            location,
            what,
            source,
        },
    }
}

/// Decodes what a store holds: bytes from outside, so a decoder that panics on
/// them (a damaged file) is a corrupt object, not a bug of ours.
pub(crate) fn decode_stored<F: Format>(format: &F, body: Bytes) -> Result<F::Value, BoxError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| format.decode(body)))
        .unwrap_or_else(|_| Err("its decoder failed on its bytes (a damaged file)".into()))
}

/// A growing, jittered pause before re-reading a contended object (20 ms more each
/// attempt, up to 1.6 s, plus up to 0.4 s of jitter).
fn backoff(attempt: u32) -> Duration {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos() % 40));
    Duration::from_millis(20 * u64::from(attempt.min(80)) + jitter * 10)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use serde::Deserialize;

    use super::*;
    use crate::store::{Intercepted, MemoryStore, PutHook};

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Doc {
        items: Vec<String>,
    }

    const KEY: &str = "_state/doc.json";

    /// A change that adds `item` (once) to the stored document.
    fn add(item: &'static str) -> Arc<Change<Doc>> {
        Arc::new(move |stored: Option<Doc>| {
            let mut doc = stored.unwrap_or_default();
            if !doc.items.iter().any(|i| i == item) {
                doc.items.push(item.to_string());
            }
            Ok(Some(doc))
        })
    }

    async fn add_to(store: &Arc<dyn ObjectStore>, item: &'static str) -> Result<Updated> {
        update(store, KEY, Json::new("test document"), add(item)).await
    }

    async fn stored(store: &Arc<dyn ObjectStore>) -> Option<(Doc, String)> {
        let o = store.get(KEY).await.unwrap()?;
        Some((serde_json::from_slice(&o.body).unwrap(), o.etag))
    }

    /// A memory store in which another writer replaces the object just before this
    /// writer's first put (`sneak`), or every put loses (`always_conflict`), with
    /// the puts counted.
    fn contended(
        sneak: Option<Doc>,
        always_conflict: bool,
    ) -> (Arc<dyn ObjectStore>, Arc<AtomicU32>) {
        let inner: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let puts = Arc::new(AtomicU32::new(0));
        let sneak = Arc::new(Mutex::new(sneak));
        let hook: PutHook = Arc::new({
            let (inner, puts) = (inner.clone(), puts.clone());
            move |key, _| {
                let (inner, puts, sneak) = (inner.clone(), puts.clone(), sneak.clone());
                Box::pin(async move {
                    puts.fetch_add(1, Ordering::Relaxed);
                    let doc = sneak.lock().unwrap_or_else(|p| p.into_inner()).take();
                    if let Some(doc) = doc {
                        let current = inner.get(&key).await?;
                        let mode = current.map_or(PutMode::Create, |o| PutMode::Replace(o.etag));
                        let body = Bytes::from(serde_json::to_vec(&doc).unwrap());
                        inner.put(&key, body, mode).await?;
                    }
                    Ok(always_conflict.then_some(PutOutcome::Conflict))
                })
            }
        });
        (Arc::new(Intercepted::new(inner, hook)), puts)
    }

    #[tokio::test]
    async fn a_put_that_meets_its_own_earlier_write_is_written_not_a_conflict() {
        // The first put lands, but its answer is lost and the SDK's retry fails its
        // condition against it: the store answers a conflict.
        let inner: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let first = Arc::new(AtomicU32::new(0));
        let hook: PutHook = Arc::new({
            let inner = inner.clone();
            move |key, body| {
                let (inner, first) = (inner.clone(), first.clone());
                Box::pin(async move {
                    if first.fetch_add(1, Ordering::Relaxed) > 0 {
                        return Ok(None);
                    }
                    inner.put(&key, body, PutMode::Create).await?;
                    Ok(Some(PutOutcome::Conflict))
                })
            }
        });
        let store: Arc<dyn ObjectStore> = Arc::new(Intercepted::new(inner, hook));
        let updated = add_to(&store, "a").await.unwrap();
        assert_eq!((updated.wrote, updated.conflicts), (Wrote::Written, 0));
        assert!(updated.created, "its create landed: the object is its own");
        assert_eq!(stored(&store).await.unwrap().0.items, ["a"]);
    }

    #[tokio::test]
    async fn a_document_of_a_newer_version_is_refused_and_left_as_it_is() {
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let newer = Bytes::from_static(br#"{"version": 99, "items": ["x"], "new_member": 1}"#);
        store
            .put(KEY, newer.clone(), PutMode::Create)
            .await
            .unwrap();
        let err = update(&store, KEY, Json::versioned("doc", 1), add("a"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::NewerVersion { found, known: 1, location, .. } if found == "99" && location.contains(KEY)),
            "{err}"
        );
        assert!(err.to_string().contains("upgrade appflow-export"), "{err}");
        assert_eq!(store.get(KEY).await.unwrap().unwrap().body, newer);
        // A version that is not a whole number is only another release's.
        for odd in [r#""2.1""#, "1.5", r#""v2""#] {
            store.delete(KEY).await.unwrap();
            let body = format!(r#"{{"version": {odd}, "items": ["x"]}}"#);
            store
                .put(KEY, Bytes::from(body), PutMode::Create)
                .await
                .unwrap();
            let err = update(&store, KEY, Json::versioned("doc", 1), add("a"))
                .await
                .unwrap_err();
            assert!(matches!(&err, Error::NewerVersion { .. }), "{odd}: {err}");
        }
        // The same or an older version is read and changed.
        let older = Bytes::from_static(br#"{"version": 1, "items": ["x"]}"#);
        store.delete(KEY).await.unwrap();
        store.put(KEY, older, PutMode::Create).await.unwrap();
        update(&store, KEY, Json::versioned("doc", 1), add("a"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_update_that_changes_no_byte_writes_nothing() {
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let first = add_to(&store, "a").await.unwrap();
        assert_eq!((first.wrote, first.created), (Wrote::Written, true));
        let (_, etag) = stored(&store).await.unwrap();
        let again = add_to(&store, "a").await.unwrap();
        assert_eq!((again.wrote, again.conflicts), (Wrote::Unchanged, 0));
        assert_eq!(stored(&store).await.unwrap().1, etag, "not rewritten");

        let keep: Arc<Change<Doc>> = Arc::new(|_| Ok(None));
        let other = "_state/other.json";
        let none = update(&store, other, Json::new("doc"), keep).await.unwrap();
        assert_eq!(none.wrote, Wrote::Absent);
        assert!(store.get(other).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_lost_race_is_counted_once_and_the_change_applied_to_the_winner_s_object() {
        let (store, _) = contended(
            Some(Doc {
                items: vec!["first".into(), "other writer".into()],
            }),
            false,
        );
        let updated = add_to(&store, "mine").await.unwrap();
        assert_eq!((updated.wrote, updated.conflicts), (Wrote::Written, 1));
        assert!(
            !updated.created,
            "its create lost: it replaced the winner's object"
        );
        assert_eq!(
            stored(&store).await.unwrap().0.items,
            ["first", "other writer", "mine"],
            "neither writer's change is lost"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_object_that_always_conflicts_ends_in_an_error_naming_it() {
        let (store, puts) = contended(None, true);
        let err = add_to(&store, "a").await.unwrap_err();
        assert!(
            matches!(&err, Error::Contention { location, attempts: 80 } if location.contains(KEY)),
            "{err}"
        );
        assert_eq!(puts.load(Ordering::Relaxed), POLICY.max_attempts);
    }

    #[tokio::test]
    async fn a_corrupt_object_is_an_error_naming_it_and_is_left_as_it_is() {
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        store
            .put(KEY, Bytes::from_static(b"{not json"), PutMode::Create)
            .await
            .unwrap();
        let err = add_to(&store, "a").await.unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(KEY), "{err}");
        let body = store.get(KEY).await.unwrap().unwrap().body;
        assert_eq!(body.as_ref(), b"{not json");
    }

    #[tokio::test]
    async fn a_panic_in_a_change_is_reported_as_a_bug() {
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
        let boom: Arc<Change<Doc>> = Arc::new(|_| panic!("boom"));
        let err = update(&store, KEY, Json::new("doc"), boom)
            .await
            .unwrap_err();
        assert!(err.is_bug(), "{err}");
        assert!(err.to_string().contains("a bug"), "{err}");
    }
}
