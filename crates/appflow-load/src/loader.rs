//! Commits a stage into the destination, one day file at a time, and keeps state.
//! Every object goes through the one conditional update of `update.rs`; every key
//! comes from `layout.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backfill::{BackfillId, BackfillProgress, BackfilledFlow, PROGRESS_VERSION};
use crate::error::{Error, Result};
use crate::flows::merge_flows;
use crate::layout;
use crate::manifest::RunManifest;
use crate::merge::{Stored, merge_catalog, merge_executions, write_new};
use crate::parquet_io::ROW_GROUP_ROWS;
use crate::sorted::read_ahead;
use crate::stage::{PartitionKey, Stage, StagedDay};
use crate::state::{FlowUpdate, STATE_VERSION, StateFile};
use crate::store::ObjectStore;
use crate::update::{
    Change, Content, ContentChange, Context, Format, Json, Medium, Parquet, Updated, Wrote,
    decode_error, decode_stored, temp_file, update, update_content,
};
use appflow_transform::Table;

/// Day files merged and written at the same time (merging is CPU work, writing is IO).
const DAY_FILES_IN_FLIGHT: usize = 2;

/// What a commit did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// Data files created or replaced.
    pub files_written: u64,
    /// Data files touched by the run whose rows did not change (not written).
    pub files_unchanged: u64,
    /// Conditional writes that lost a race and were re-merged.
    pub conflicts: u64,
}

/// Writes into one destination.
#[derive(Clone, Debug)]
pub struct Loader {
    store: Arc<dyn ObjectStore>,
    /// Rows per row group of the day files it writes.
    row_group_rows: usize,
}

const STATE_FILE: &str = "state file";
const BACKFILL_FILE: &str = "backfill progress file";
const MANIFEST: &str = "run manifest";

impl Loader {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Loader {
            store,
            row_group_rows: ROW_GROUP_ROWS,
        }
    }

    /// A loader whose day files have row groups of at most `rows` rows (tests of
    /// files of many row groups).
    #[doc(hidden)]
    pub fn with_row_group_rows(mut self, rows: usize) -> Self {
        self.row_group_rows = rows.max(1);
        self
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Reads, merges and (when its rows changed) writes each day file the stage
    /// touches, executions before catalog registrations, several days at a time.
    pub async fn commit(&self, stage: &mut Stage) -> Result<CommitReport> {
        let mut report = CommitReport::default();
        self.commit_with(stage, &|_, _| {}, &mut report).await?;
        Ok(report)
    }

    /// [`Loader::commit`], telling `on_day` of each day file (partition) as its merge
    /// starts, with the number of partitions (for a progress bar), and counting into
    /// `report` what was written, also when a later day fails.
    ///
    /// A day whose stored file is of a newer format version is left as it is and the
    /// other days go on; the commit then fails with that day's error (so no watermark
    /// moves). Any other failure stops the commit at once.
    pub async fn commit_with(
        &self,
        stage: &mut Stage,
        on_day: &(dyn Fn(&PartitionKey, usize) + Sync),
        report: &mut CommitReport,
    ) -> Result<()> {
        let mut newer: Option<Error> = None;
        let mut tasks = tokio::task::JoinSet::new();
        let keys = stage.partitions()?;
        let scratch = Arc::new(stage.scratch_dir()?);
        let mut partitions = keys.iter();
        loop {
            while tasks.len() < DAY_FILES_IN_FLIGHT {
                let Some(key) = partitions.next() else { break };
                on_day(key, keys.len());
                let day = stage.day(key)?;
                if day.is_empty()? {
                    // Only rows of discarded adds (a flow that failed half-way).
                    continue;
                }
                let (loader, key, scratch) = (self.clone(), key.clone(), scratch.clone());
                tasks.spawn(async move { loader.commit_partition(key, day, scratch).await });
            }
            let Some(done) = tasks.join_next().await else {
                break;
            };
            let (day, result) = done.map_err(|e| Error::bug("merging a day file", e))?;
            *report += day;
            match result {
                Ok(()) => {}
                Err(e @ (Error::NewerVersion { .. } | Error::UnreadableCodec { .. })) => {
                    tracing::error!(error = %e, "day file left as it is");
                    newer.get_or_insert(e);
                }
                Err(e) => {
                    // Start no other day, but count what the days in flight write.
                    while let Some(done) = tasks.join_next().await {
                        if let Ok((day, _)) = done {
                            *report += day;
                        }
                    }
                    return Err(e);
                }
            }
        }
        newer.map_or(Ok(()), Err)
    }

    /// One day's two files: what was written (also of a day that failed half-way),
    /// and how the day ended.
    async fn commit_partition(
        &self,
        key: PartitionKey,
        day: StagedDay,
        scratch: Arc<std::path::PathBuf>,
    ) -> (CommitReport, Result<()>) {
        let mut report = CommitReport::default();
        let result = self
            .commit_partition_into(key, day, scratch, &mut report)
            .await;
        (report, result)
    }

    /// Each file is streamed: the stored file is read into a temporary file, merged
    /// with the staged rows into another, and that one is put conditionally from disk.
    async fn commit_partition_into(
        &self,
        key: PartitionKey,
        day: StagedDay,
        scratch: Arc<std::path::PathBuf>,
        report: &mut CommitReport,
    ) -> Result<()> {
        let medium = Medium::Disk(scratch.clone());
        let rows = self.row_group_rows;
        let exec_key = layout::day_file(Table::Executions, &key);
        let exec_location = self.store.location(&exec_key);
        let (d, dir, location) = (day.clone(), scratch.clone(), exec_location.clone());
        let merge_exec: Arc<ContentChange> = Arc::new(move |stored, _| {
            let stored = file_of(stored)?;
            let stored = stored.as_deref().map(|path| Stored {
                path,
                location: &location,
                table: Table::Executions,
            });
            let out = temp_file(&dir, "merged-")?;
            let changed = merge_executions(stored, read_ahead(d.executions()?), &out, rows)?;
            Ok(changed.then_some(Content::File(out)))
        });
        let updated =
            update_content(&self.store, &exec_key, &medium, Context::None, merge_exec).await?;
        report.count(updated);
        // This commit made the executions file: it holds this run's runs only.
        let made_executions = updated.created;

        // A run's catalog rows follow its row in the executions file as it is now,
        // read again on every attempt: another writer may have stored a newer
        // version of the run meanwhile, and then its catalog rows are the ones to keep.
        // A day whose executions file this commit made gets, when its catalog file is
        // not stored, this run's catalog rows without reading the executions back: a
        // writer that replaced the executions meanwhile writes the rows of its runs
        // when it writes the catalog file (after ours, it merges into it; before
        // ours, our create fails and we merge).
        // Every day with runs has its catalog file, with no rows when none of its
        // runs registered anything: readers that glob a table's files (DuckDB 1.x
        // views, Polars, pyarrow datasets) then never find a table without files.
        let cat_key = layout::day_file(Table::CatalogRegistrations, &key);
        let cat_location = self.store.location(&cat_key);
        let merge_cat: Arc<ContentChange> = Arc::new(move |stored, executions| {
            let none = || -> crate::sorted::Stream { Box::new(std::iter::empty()) };
            let new_rows = || {
                if day.has_no_catalog_rows() {
                    Ok(none())
                } else {
                    Ok(read_ahead(day.catalog()?))
                }
            };
            if stored.is_none() && made_executions {
                let out = temp_file(&scratch, "merged-")?;
                write_new(Table::CatalogRegistrations, new_rows()?, &out, rows, true)?;
                return Ok(Some(Content::File(out)));
            }
            let (stored, executions) = (file_of(stored)?, file_of(executions)?);
            let stored = stored.as_deref().map(|path| Stored {
                path,
                location: &cat_location,
                table: Table::CatalogRegistrations,
            });
            let executions = executions.as_deref().map(|path| Stored {
                path,
                location: &exec_location,
                table: Table::Executions,
            });
            let new_rows = new_rows()?;
            // The executions matter only to catalog rows, stored or new.
            let stored_rows = match stored {
                Some(s) => !s.is_empty()?,
                None => false,
            };
            let (executions, mine) = if stored_rows || !day.has_no_catalog_rows() {
                (executions, read_ahead(day.executions()?))
            } else {
                (None, none())
            };
            let out = temp_file(&scratch, "merged-")?;
            let changed = merge_catalog(executions, mine, stored, new_rows, &out, rows)?;
            Ok(changed.then_some(Content::File(out)))
        });
        let context = if made_executions {
            Context::WhenStored(&exec_key)
        } else {
            Context::Always(&exec_key)
        };
        let updated = update_content(&self.store, &cat_key, &medium, context, merge_cat).await?;
        report.count(updated);
        Ok(())
    }

    /// Merges one account and region's `ListFlows` snapshot (`flows_batch` rows,
    /// taken at `snapshot_ms`) into its `flows` file; the file is written only when
    /// some flow's row changed (see `flows.rs`).
    pub async fn commit_flows(
        &self,
        account_id: &str,
        region: &str,
        listed: RecordBatch,
        snapshot_ms: i64,
    ) -> Result<CommitReport> {
        let mut report = CommitReport::default();
        let merge: Arc<Change<RecordBatch>> =
            Arc::new(move |stored| Ok(merge_flows(stored.as_ref(), &listed, snapshot_ms)?));
        let key = layout::flows_file(account_id, region);
        let updated = update(&self.store, &key, Parquet(Table::Flows), merge).await?;
        report.count(updated);
        Ok(report)
    }

    /// Writes a run's manifest (its run id is new: an object already there is an
    /// error, never overwritten).
    pub async fn write_manifest(&self, manifest: &RunManifest) -> Result<()> {
        let new = manifest.clone();
        let create: Arc<Change<RunManifest>> = Arc::new(move |stored| match stored {
            None => Ok(Some(new.clone())),
            Some(_) => Err("another run manifest has this run id".into()),
        });
        let key = layout::manifest_file(&manifest.run_id);
        update(&self.store, &key, Json::new(MANIFEST), create).await?;
        Ok(())
    }

    /// Removes all but the newest `keep` run manifests; returns how many it removed.
    pub async fn prune_manifests(&self, keep: usize) -> Result<usize> {
        let runs = self.manifest_keys().await?;
        let old = runs.len().saturating_sub(keep);
        for key in &runs[..old] {
            self.store.delete(key).await?;
        }
        Ok(old)
    }

    /// The keys of the stored run manifests, oldest first.
    async fn manifest_keys(&self) -> Result<Vec<String>> {
        let mut runs: Vec<String> = self
            .store
            .list(layout::RUNS_PREFIX)
            .await?
            .into_iter()
            .filter(|k| layout::is_manifest_file(k))
            .collect();
        runs.sort();
        Ok(runs)
    }

    /// The newest `limit` run manifests, newest first.
    pub async fn manifests(&self, limit: usize) -> Result<Vec<RunManifest>> {
        let runs = self.manifest_keys().await?;
        let mut out = Vec::new();
        for key in runs.iter().rev().take(limit) {
            // Pruned by another writer between the listing and now: skip it.
            if let Some(manifest) = self.read(key, Json::new(MANIFEST)).await? {
                out.push(manifest);
            }
        }
        Ok(out)
    }

    /// Every state file: `(account, region, state)`, sorted.
    pub async fn states(&self) -> Result<Vec<(String, String, StateFile)>> {
        self.read_all_json(
            layout::STATE_PREFIX,
            layout::parse_state_file,
            (STATE_FILE, STATE_VERSION),
        )
        .await
    }

    /// The stored state of an account and region (empty when there is none yet).
    pub async fn read_state(&self, account_id: &str, region: &str) -> Result<StateFile> {
        let key = layout::state_file(account_id, region);
        Ok(self
            .read(&key, Json::versioned(STATE_FILE, STATE_VERSION))
            .await?
            .unwrap_or_default())
    }

    /// Records a run's progress for some flows of an account and region, on top of
    /// whatever another writer stored meanwhile. Returns the conflicts it re-merged.
    pub async fn update_state(
        &self,
        account_id: &str,
        region: &str,
        updates: &BTreeMap<String, FlowUpdate>,
        now_ms: i64,
    ) -> Result<u32> {
        let key = layout::state_file(account_id, region);
        let updates = updates.clone();
        // One id for every attempt of this update (unique like a run's): applied
        // again, it counts once.
        let id = crate::manifest::run_id(now_ms);
        self.update_json(
            &key,
            (STATE_FILE, STATE_VERSION),
            move |state: &mut StateFile| state.apply(&id, &updates, now_ms),
        )
        .await
    }

    /// What the backfill `id` completed of an account and region (nothing, when it
    /// never ran).
    pub async fn read_backfill(
        &self,
        id: &BackfillId,
        account_id: &str,
        region: &str,
    ) -> Result<BackfillProgress> {
        let key = layout::backfill_file(id, account_id, region);
        Ok(self
            .read(&key, Json::versioned(BACKFILL_FILE, PROGRESS_VERSION))
            .await?
            .unwrap_or_default())
    }

    /// Every backfill progress file: `(account, region, progress)`, sorted by key.
    pub async fn backfills(&self) -> Result<Vec<(String, String, BackfillProgress)>> {
        self.read_all_json(
            layout::BACKFILLS_PREFIX,
            layout::parse_backfill_file,
            (BACKFILL_FILE, PROGRESS_VERSION),
        )
        .await
    }

    /// Records flows the backfill `id` completed (rows and state committed), and with
    /// `restarted_ms`, that it started again from scratch. Returns the conflicts it
    /// re-merged.
    pub async fn record_backfill(
        &self,
        id: &BackfillId,
        account_id: &str,
        region: &str,
        done: &BTreeMap<String, BackfilledFlow>,
        restarted_ms: Option<i64>,
    ) -> Result<u32> {
        let key = layout::backfill_file(id, account_id, region);
        let (id, done) = (id.clone(), done.clone());
        self.update_json(
            &key,
            (BACKFILL_FILE, PROGRESS_VERSION),
            move |p: &mut BackfillProgress| p.apply(&id, &done, restarted_ms),
        )
        .await
    }

    /// Every JSON object of ours under `prefix` whose key `parse_key` names an
    /// account and region, in key order; `(what, version)`: what they are, and the
    /// newest format version this release knows.
    async fn read_all_json<T: Serialize + DeserializeOwned + Default + Send + 'static>(
        &self,
        prefix: &str,
        parse_key: fn(&str) -> Option<(String, String)>,
        (what, version): (&'static str, u32),
    ) -> Result<Vec<(String, String, T)>> {
        let mut out = Vec::new();
        for key in self.store.list(prefix).await? {
            if let Some((account, region)) = parse_key(&key) {
                let format = Json::versioned(what, version);
                let value = self.read(&key, format).await?.unwrap_or_default();
                out.push((account, region, value));
            }
        }
        Ok(out)
    }

    /// The object at `key`, decoded; `None` when there is none.
    async fn read<F: Format>(&self, key: &str, format: F) -> Result<Option<F::Value>> {
        let Some(object) = self.store.get(key).await? else {
            return Ok(None);
        };
        decode_stored(&format, object.body)
            .map(Some)
            .map_err(|source| decode_error(self.store.location(key), format.what(), source))
    }

    /// [`update`] of a JSON document of ours whose absence means its default value.
    /// Returns the conflicts it re-merged.
    async fn update_json<T: Serialize + DeserializeOwned + Default + Send + 'static>(
        &self,
        key: &str,
        (what, version): (&'static str, u32),
        change: impl Fn(&mut T) + Send + Sync + 'static,
    ) -> Result<u32> {
        let change: Arc<Change<T>> = Arc::new(move |stored: Option<T>| {
            let mut value = stored.unwrap_or_default();
            change(&mut value);
            Ok(Some(value))
        });
        let format = Json::versioned(what, version);
        let updated = update(&self.store, key, format, change).await?;
        Ok(updated.conflicts)
    }
}

/// The temporary file a streamed read went to.
fn file_of(content: Option<Content>) -> Result<Option<tempfile::TempPath>> {
    match content {
        None => Ok(None),
        Some(Content::File(path)) => Ok(Some(path)),
        Some(Content::Memory(_)) => Err(Error::bug(
            "merging a day file",
            "a day file read into memory",
        )),
    }
}

impl std::ops::AddAssign for CommitReport {
    fn add_assign(&mut self, other: CommitReport) {
        self.files_written += other.files_written;
        self.files_unchanged += other.files_unchanged;
        self.conflicts += other.conflicts;
    }
}

impl CommitReport {
    fn count(&mut self, updated: Updated) {
        self.conflicts += u64::from(updated.conflicts);
        match updated.wrote {
            Wrote::Written => self.files_written += 1,
            Wrote::Unchanged => self.files_unchanged += 1,
            Wrote::Absent => {}
        }
    }
}

#[cfg(test)]
mod streaming_tests;
#[cfg(test)]
mod tests;
