//! A local folder: write to a temporary file in the destination's `_tmp/` (on the same
//! file system, outside every folder a reader globs), fsync, then rename under a lock
//! file, so a reader sees the old file or the new one and two processes on one machine
//! cannot lose an update. A killed process's temporary files are removed by a later
//! run once they are a day old.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{Object, ObjectStore, PutMode, PutOutcome, local_file};
use crate::error::{Error, Result};

/// The lock every conditional put takes, under the destination's `_state/`.
const LOCK_FILE: &str = "_state/.lock";
/// Temporary files start with this; listings skip them.
const TMP_PREFIX: &str = ".tmp-";
/// The folder of the temporary files, under the destination: no table's folder holds
/// one, even for a moment (Athena, Glue and DuckDB read every file of a table's).
const TMP_DIR: &str = "_tmp";
/// A temporary file this old is no live run's (a put writes, syncs and renames its
/// file in seconds to minutes): a killed run left it, and it is removed.
const TMP_ABANDONED: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A new temporary file in `root`'s `_tmp/`, created like any file the process
/// creates (0666 less the umask), not tempfile's 0600: DuckDB or a BI tool running as
/// another user must be able to read the export once it is renamed into place.
fn temp_file(root: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = root.join(TMP_DIR);
    fs::create_dir_all(&dir)?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(TMP_PREFIX);
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    builder.tempfile_in(dir)
}

/// Removes the temporary files in `root`'s `_tmp/` older than [`TMP_ABANDONED`];
/// returns how many. One that cannot be removed is left for a later run.
fn sweep_abandoned(root: &Path) -> std::io::Result<usize> {
    let entries = match fs::read_dir(root.join(TMP_DIR)) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > TMP_ABANDONED);
        let ours = entry.file_name().to_string_lossy().starts_with(TMP_PREFIX);
        if old && ours && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: PathBuf) -> Self {
        LocalStore { root }
    }

    fn path(&self, key: &str) -> PathBuf {
        key.split('/')
            .fold(self.root.clone(), |p, part| p.join(part))
    }
}

/// The tag of a local file: a digest of its content.
fn etag(body: &[u8]) -> String {
    tag_of(Sha256::digest(body).as_slice())
}

fn tag_of(digest: &[u8]) -> String {
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Copies `from` into `to` in pieces (never whole in memory), returning the tag of
/// what it copied.
fn copy_tagged(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 256 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
    }
    Ok(tag_of(hasher.finalize().as_slice()))
}

/// A writer that remembers whether it failed, to tell which end of a copy did.
struct Noted<W> {
    inner: W,
    failed: bool,
}

impl<W: Write> Noted<W> {
    fn new(inner: W) -> Self {
        Noted {
            inner,
            failed: false,
        }
    }
}

impl<W: Write> Write for Noted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf).inspect_err(|_| self.failed = true)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().inspect_err(|_| self.failed = true)
    }
}

/// The tag of the file at `path`, read in pieces; `None` when there is none.
fn tag_of_file(path: &Path) -> std::io::Result<Option<String>> {
    match File::open(path) {
        Ok(mut f) => copy_tagged(&mut f, &mut std::io::sink()).map(Some),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn read(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Where a put's bytes come from.
enum Source<'a> {
    Memory(&'a [u8]),
    /// A local file, copied in pieces.
    File(&'a Path),
}

fn put_blocking(
    root: &Path,
    path: &Path,
    body: Source<'_>,
    mode: &PutMode,
) -> std::io::Result<PutOutcome> {
    let dir = path.parent().unwrap_or(root);
    fs::create_dir_all(dir)?;
    let mut tmp = temp_file(root)?;
    let tag = match body {
        Source::Memory(bytes) => {
            tmp.write_all(bytes)?;
            etag(bytes)
        }
        Source::File(from) => {
            let mut out = std::io::BufWriter::new(tmp.as_file_mut());
            let tag = copy_tagged(&mut File::open(from)?, &mut out)?;
            out.flush()?;
            tag
        }
    };
    tmp.as_file().sync_all()?;

    let lock_path = root.join(LOCK_FILE);
    if let Some(parent) = lock_path.parent() {
        fs::create_dir_all(parent)?;
    }
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    lock.lock()?;
    // The lock is held until `lock` is dropped, on every path out of here.
    let current = tag_of_file(path)?;
    if !mode.allows(current.as_deref()) {
        return Ok(PutOutcome::Conflict);
    }
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()?;
    Ok(PutOutcome::Written { etag: tag })
}

fn list_blocking(base: &Path, root: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    let entries = match fs::read_dir(base) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(TMP_PREFIX) {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            list_blocking(&path, root, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            let key: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(key.join("/"));
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    async fn get(&self, key: &str) -> Result<Option<Object>> {
        let path = self.path(key);
        let body = tokio::task::spawn_blocking({
            let path = path.clone();
            move || read(&path)
        })
        .await
        .map_err(|e| Error::read(self.location(key), e))?
        .map_err(|e| Error::read(self.location(key), e))?;
        Ok(body.map(|b| Object {
            etag: etag(&b),
            body: Bytes::from(b),
        }))
    }

    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> Result<PutOutcome> {
        let (root, path) = (self.root.clone(), self.path(key));
        tokio::task::spawn_blocking(move || {
            put_blocking(&root, &path, Source::Memory(&body), &mode)
        })
        .await
        .map_err(|e| Error::write(self.location(key), e))?
        .map_err(|e| Error::write(self.location(key), e))
    }

    /// Copies the object into `to` in pieces. A file replaced meanwhile (renamed over)
    /// is read whole as it was when opened: the open file keeps its old content.
    async fn get_file(&self, key: &str, to: &Path) -> Result<Option<String>> {
        let (from, to_owned) = (self.path(key), to.to_path_buf());
        let copy = move || -> std::io::Result<Result<Option<String>>> {
            let mut src = match File::open(&from) {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Ok(None)),
                Err(e) => return Err(e),
            };
            let mut out = match File::create(&to_owned) {
                Ok(f) => Noted::new(std::io::BufWriter::new(f)),
                Err(e) => return Ok(Err(local_file(&to_owned, e))),
            };
            // A failed write is the local copy's (the scratch disk full), not the store's.
            let tag = match copy_tagged(&mut src, &mut out) {
                Ok(tag) => tag,
                Err(e) if out.failed => return Ok(Err(local_file(&to_owned, e))),
                Err(e) => return Err(e),
            };
            if let Err(e) = out.flush() {
                return Ok(Err(local_file(&to_owned, e)));
            }
            Ok(Ok(Some(tag)))
        };
        tokio::task::spawn_blocking(copy)
            .await
            .map_err(|e| Error::read(self.location(key), e))?
            .map_err(|e| Error::read(self.location(key), e))?
    }

    async fn put_file(&self, key: &str, from: &Path, mode: PutMode) -> Result<PutOutcome> {
        let (root, path, from) = (self.root.clone(), self.path(key), from.to_path_buf());
        tokio::task::spawn_blocking(move || put_blocking(&root, &path, Source::File(&from), &mode))
            .await
            .map_err(|e| Error::write(self.location(key), e))?
            .map_err(|e| Error::write(self.location(key), e))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let root = self.root.clone();
        let owned = prefix.to_string();
        let mut keys = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            // Walk from the deepest folder the prefix names, then filter.
            let dir = owned.rsplit_once('/').map_or("", |(d, _)| d);
            let base = dir
                .split('/')
                .filter(|p| !p.is_empty())
                .fold(root.clone(), |p, s| p.join(s));
            list_blocking(&base, &root, &mut out).map(|()| out)
        })
        .await
        .map_err(|e| Error::read(self.location(""), e))?
        .map_err(|e| Error::read(self.location(""), e))?;
        keys.retain(|k| k.starts_with(prefix));
        keys.sort();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        let remove = move || match fs::remove_file(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            other => other,
        };
        tokio::task::spawn_blocking(remove)
            .await
            .map_err(|e| Error::write(self.location(key), e))?
            .map_err(|e| Error::write(self.location(key), e))
    }

    async fn check(&self) -> Result<()> {
        let root = self.root.clone();
        let probe = move || -> std::io::Result<()> {
            fs::create_dir_all(&root)?;
            let mut f = temp_file(&root)?;
            f.write_all(b"probe")?;
            // Housekeeping: a failure to remove old leftovers fails nothing.
            match sweep_abandoned(&root) {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "removed temporary files a killed run left"),
                Err(e) => {
                    tracing::warn!(error = %e, "temporary files a killed run left could not be listed")
                }
            }
            Ok(())
        };
        tokio::task::spawn_blocking(probe)
            .await
            .map_err(|e| Error::write(self.root.display().to_string(), e))?
            .map_err(|e| Error::BadDest {
                dest: self.root.display().to_string(),
                why: format!("the folder cannot be created or written: {e}"),
            })
    }

    fn location(&self, key: &str) -> String {
        self.path(key).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_files_are_made_outside_every_table_folder() {
        let root = tempfile::tempdir().unwrap();
        let file = temp_file(root.path()).unwrap();
        assert_eq!(
            file.path().parent(),
            Some(root.path().join(TMP_DIR).as_path())
        );
        assert!(
            file.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(TMP_PREFIX)
        );
    }
}
