//! The stage's temporary folder: made in the system's temporary folder (or the one
//! given), removed when the stage is dropped, and locked while in use so that a later
//! run can remove what a killed one left behind.

use std::fs::{self, File};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};

/// Every staging folder's name starts with this.
const PREFIX: &str = "appflow-export-stage-";
/// Held locked (`flock`) by the process using the folder, as long as it lives.
const LOCK: &str = ".lock";
/// An unlocked folder left this long unchanged is another run's leftover: the run
/// that made it either locked it at once or was killed. (Between making the folder
/// and locking it there are microseconds.)
const UNLOCKED_FOR: Duration = Duration::from_secs(60);
/// A folder without a lock file was made by a release from before it was kept, or by
/// a run killed in those microseconds; such a release may still be running a long
/// backfill on this machine, so its folders are left a day.
const UNLOCKED_LEGACY_FOR: Duration = Duration::from_secs(24 * 3600);

/// A staging folder in use.
#[derive(Debug)]
pub(super) struct Folder {
    // Dropped in this order: the lock is closed, then the folder removed (on NFS an
    // open file would keep its folder from being removed).
    _lock: File,
    dir: tempfile::TempDir,
}

impl Folder {
    /// Removes the staging folders killed runs left in `parent`, then makes this
    /// run's, locked.
    pub(super) fn make(parent: &Path) -> Result<Folder> {
        sweep(parent, SystemTime::now());
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir_in(parent)
            .map_err(|e| {
                Error::stage(format!(
                    "cannot create a temporary folder in {}: {e}",
                    parent.display()
                ))
            })?;
        let unwritable = |e: std::io::Error| {
            Error::stage(format!(
                "cannot write in the staging folder {}: {e}",
                dir.path().display()
            ))
        };
        let lock = File::create(dir.path().join(LOCK)).map_err(unwritable)?;
        if let Err(e) = lock.try_lock() {
            // Not held (a file system without locks, or one that refused): without its
            // lock file the folder is left a day, as an older release's is, and the
            // run goes on.
            tracing::debug!(folder = %dir.path().display(), error = %e, "staging folder not locked");
            fs::remove_file(dir.path().join(LOCK)).map_err(unwritable)?;
        }
        Ok(Folder { _lock: lock, dir })
    }

    pub(super) fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes the staging folders in `parent` that no live process holds: locked by
/// nobody and unchanged for [`UNLOCKED_FOR`] (without a lock file,
/// [`UNLOCKED_LEGACY_FOR`]). Best effort: a folder that cannot be read or removed is
/// left, with a warning, and never fails the run.
fn sweep(parent: &Path, now: SystemTime) {
    let Ok(entries) = fs::read_dir(parent) else {
        return; // making the folder reports why
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = entry.file_name().to_string_lossy().starts_with(PREFIX);
        if !ours || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if abandoned(&path, now) {
            match fs::remove_dir_all(&path) {
                // Another run's sweep removed it first: removed all the same.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Ok(()) => tracing::info!(
                    folder = %path.display(),
                    "removed a staging folder a killed run left behind"
                ),
                Err(e) => tracing::warn!(
                    folder = %path.display(),
                    error = %e,
                    "a staging folder a killed run left behind could not be removed"
                ),
            }
        }
    }
}

/// Whether no live process uses the staging folder at `path`.
fn abandoned(path: &Path, now: SystemTime) -> bool {
    let unchanged_for = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| now.duration_since(t).ok());
    let lock = match File::open(path.join(LOCK)) {
        Ok(lock) => lock,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return unchanged_for.is_some_and(|d| d >= UNLOCKED_LEGACY_FOR);
        }
        // Another user's folder (a shared /tmp), or no file handle left: not ours to
        // judge.
        Err(_) => return false,
    };
    let old = unchanged_for.is_some_and(|d| d >= UNLOCKED_FOR);
    // Taken only to test it; released when `lock` is dropped.
    old && lock.try_lock().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aged(path: &Path, by: Duration) {
        let then = SystemTime::now() - by;
        let dir = File::open(path).unwrap();
        dir.set_modified(then).unwrap();
    }

    #[test]
    fn only_folders_no_live_run_holds_are_removed() {
        let parent = tempfile::tempdir().unwrap();
        let live = Folder::make(parent.path()).unwrap();
        aged(live.path(), Duration::from_secs(3600));
        let killed = parent.path().join(format!("{PREFIX}killed"));
        fs::create_dir(&killed).unwrap();
        File::create(killed.join(LOCK)).unwrap();
        fs::write(killed.join("0.executions.arrow"), b"rows").unwrap();
        aged(&killed, Duration::from_secs(120));
        let just_killed = parent.path().join(format!("{PREFIX}just"));
        fs::create_dir(&just_killed).unwrap();
        File::create(just_killed.join(LOCK)).unwrap();
        let legacy = parent.path().join(format!("{PREFIX}legacy"));
        fs::create_dir(&legacy).unwrap();
        aged(&legacy, Duration::from_secs(3600));
        let old_legacy = parent.path().join(format!("{PREFIX}old-legacy"));
        fs::create_dir(&old_legacy).unwrap();
        aged(&old_legacy, Duration::from_secs(2 * 86_400));
        let other = parent.path().join("someone-else");
        fs::create_dir(&other).unwrap();
        aged(&other, Duration::from_secs(2 * 86_400));

        let next = Folder::make(parent.path()).unwrap();
        assert!(live.path().exists(), "a live run's folder was removed");
        assert!(next.path().exists());
        assert!(!killed.exists() && !old_legacy.exists(), "leftovers stay");
        assert!(just_killed.exists() && legacy.exists() && other.exists());
        let live_path = live.path().to_path_buf();
        drop(live);
        assert!(!live_path.exists(), "a stage's folder outlives it");
    }
}
