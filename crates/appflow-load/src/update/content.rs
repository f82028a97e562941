//! An object's bytes as an update holds them ([`Content`]): in memory, or in a local
//! temporary file for day files, which are never held whole in memory; and what the
//! update puts them with ([`Medium`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::store::{ObjectStore, PutMode, PutOutcome, local_file};

/// An object's bytes as an update holds them.
#[derive(Debug)]
pub(crate) enum Content {
    Memory(Bytes),
    /// A local temporary file, removed when dropped: day files are never held whole
    /// in memory.
    File(tempfile::TempPath),
}

impl Content {
    pub(super) async fn put(
        &self,
        store: &Arc<dyn ObjectStore>,
        key: &str,
        mode: PutMode,
    ) -> Result<PutOutcome> {
        match self {
            Content::Memory(body) => store.put(key, body.clone(), mode).await,
            Content::File(path) => store.put_file(key, path, mode).await,
        }
    }

    /// Whether two contents hold the same bytes.
    pub(super) async fn same(&self, other: &Content) -> Result<bool> {
        match (self, other) {
            (Content::Memory(a), Content::Memory(b)) => Ok(a == b),
            (Content::File(a), Content::File(b)) => {
                let (a, b) = (a.to_path_buf(), b.to_path_buf());
                tokio::task::spawn_blocking(move || same_files(&a, &b))
                    .await
                    .map_err(|e| Error::bug("comparing temporary files", e))?
            }
            _ => Ok(false),
        }
    }
}

/// Whether two local files hold the same bytes, compared in pieces.
fn same_files(a: &Path, b: &Path) -> Result<bool> {
    use std::io::Read;
    let open = |p: &Path| File::open(p).map_err(|e| local_file(p, e));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let len = |f: &File, p: &Path| f.metadata().map(|m| m.len()).map_err(|e| local_file(p, e));
    if len(&fa, a)? != len(&fb, b)? {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0; 256 * 1024], vec![0; 256 * 1024]);
    loop {
        let n = fa.read(&mut ba).map_err(|e| local_file(a, e))?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n]).map_err(|e| local_file(b, e))?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// Where an update holds the objects it reads.
#[derive(Clone, Debug)]
pub(crate) enum Medium {
    Memory,
    /// Streamed into temporary files in this folder.
    Disk(Arc<PathBuf>),
}

impl Medium {
    pub(super) async fn read(
        &self,
        store: &Arc<dyn ObjectStore>,
        key: &str,
    ) -> Result<Option<(Content, String)>> {
        match self {
            Medium::Memory => Ok(store
                .get(key)
                .await?
                .map(|o| (Content::Memory(o.body), o.etag))),
            Medium::Disk(dir) => {
                let path = temp_file(dir, "read-")?;
                Ok(store
                    .get_file(key, &path)
                    .await?
                    .map(|etag| (Content::File(path), etag)))
            }
        }
    }
}

/// A new temporary file in `dir`, removed when dropped.
pub(crate) fn temp_file(dir: &Path, prefix: &str) -> Result<tempfile::TempPath> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempfile_in(dir)
        .map(|f| f.into_temp_path())
        .map_err(|e| {
            Error::stage(format!(
                "cannot create a temporary file in {}: {e}",
                dir.display()
            ))
        })
}
