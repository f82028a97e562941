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
use crate::merge::{current_with_catalog, merge_catalog, merge_executions};
use crate::stage::{PartitionKey, Stage};
use crate::state::{FlowUpdate, STATE_VERSION, StateFile};
use crate::store::ObjectStore;
use crate::update::{
    Change, Format, Json, Parquet, Updated, Wrote, decode_error, decode_stored, update,
};
use appflow_transform::{Batches, Table};

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
}

const STATE_FILE: &str = "state file";
const BACKFILL_FILE: &str = "backfill progress file";
const MANIFEST: &str = "run manifest";

impl Loader {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Loader { store }
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
        let mut partitions = keys.iter();
        loop {
            while tasks.len() < DAY_FILES_IN_FLIGHT {
                let Some(key) = partitions.next() else { break };
                on_day(key, keys.len());
                let incoming = stage.read(key)?;
                if incoming.executions.num_rows() == 0 {
                    // Only rows of discarded adds (a flow that failed half-way).
                    continue;
                }
                let (loader, key) = (self.clone(), key.clone());
                tasks.spawn(async move { loader.commit_partition(key, incoming).await });
            }
            let Some(done) = tasks.join_next().await else {
                break;
            };
            let (day, result) = done.map_err(|e| Error::bug("merging a day file", e))?;
            *report += day;
            match result {
                Ok(()) => {}
                Err(e @ Error::NewerVersion { .. }) => {
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
        incoming: Batches,
    ) -> (CommitReport, Result<()>) {
        let mut report = CommitReport::default();
        let result = self.commit_partition_into(key, incoming, &mut report).await;
        (report, result)
    }

    async fn commit_partition_into(
        &self,
        key: PartitionKey,
        incoming: Batches,
        report: &mut CommitReport,
    ) -> Result<()> {
        let executions = Arc::new(incoming.executions);
        let exec = executions.clone();
        let merge_exec: Arc<Change<RecordBatch>> =
            Arc::new(move |stored, _| Ok(merge_executions(stored.as_ref(), &exec)?.batch));
        let exec_key = layout::day_file(Table::Executions, &key);
        let updated = update(
            &self.store,
            &exec_key,
            Parquet(Table::Executions),
            None,
            merge_exec,
        )
        .await?;
        report.count(updated);

        // A run's catalog rows follow its row in the executions file as it is now,
        // read again on every attempt: another writer may have stored a newer
        // version of the run meanwhile, and then its catalog rows are the ones to keep.
        // Every day with runs has its catalog file, with no rows when none of its
        // runs registered anything: readers that glob a table's files (DuckDB 1.x
        // views, Polars, pyarrow datasets) then never find a table without files.
        let catalog = incoming.catalog_registrations;
        let merge_cat: Arc<Change<RecordBatch>> = Arc::new(move |stored, stored_exec| {
            let stored = stored.as_ref();
            let current =
                current_with_catalog(stored_exec.as_ref(), &executions, stored, &catalog)?;
            let merged = merge_catalog(stored, &catalog, &current)?;
            Ok(match (merged, stored) {
                (None, None) => Some(RecordBatch::new_empty(catalog.schema())),
                (merged, _) => merged,
            })
        });
        let updated = update(
            &self.store,
            &layout::day_file(Table::CatalogRegistrations, &key),
            Parquet(Table::CatalogRegistrations),
            Some((&exec_key, Table::Executions)),
            merge_cat,
        )
        .await?;
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
            Arc::new(move |stored, _| Ok(merge_flows(stored.as_ref(), &listed, snapshot_ms)?));
        let key = layout::flows_file(account_id, region);
        let updated = update(&self.store, &key, Parquet(Table::Flows), None, merge).await?;
        report.count(updated);
        Ok(report)
    }

    /// Writes a run's manifest (its run id is new: an object already there is an
    /// error, never overwritten).
    pub async fn write_manifest(&self, manifest: &RunManifest) -> Result<()> {
        let new = manifest.clone();
        let create: Arc<Change<RunManifest>> = Arc::new(move |stored, _| match stored {
            None => Ok(Some(new.clone())),
            Some(_) => Err("another run manifest has this run id".into()),
        });
        let key = layout::manifest_file(&manifest.run_id);
        update(&self.store, &key, Json::new(MANIFEST), None, create).await?;
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
        self.update_json(
            &key,
            (STATE_FILE, STATE_VERSION),
            move |state: &mut StateFile| state.apply(&updates, now_ms),
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
        let change: Arc<Change<T>> = Arc::new(move |stored: Option<T>, _| {
            let mut value = stored.unwrap_or_default();
            change(&mut value);
            Ok(Some(value))
        });
        let format = Json::versioned(what, version);
        let updated = update(&self.store, key, format, None, change).await?;
        Ok(updated.conflicts)
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
mod tests;
