//! Commits a stage into the destination, one day file at a time, and keeps state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backfill::{BackfillId, BackfillProgress, BackfilledFlow};
use crate::error::{Error, Result};
use crate::flows::{flows_key, merge_flows};
use crate::manifest::{RUNS_PREFIX, RunManifest, is_manifest};
use crate::merge::{current_with_catalog, merge_catalog, merge_executions};
use crate::parquet_io::{decode, encode};
use crate::stage::{PartitionKey, Stage};
use crate::state::{FlowUpdate, StateFile};
use crate::store::{Object, ObjectStore, PutMode, PutOutcome};
use appflow_transform::{Batches, Table, schema_for};

/// Attempts at one object when other writers keep replacing it first: with the
/// backoff below, about two minutes of patience (dozens of shards on one account).
const MAX_ATTEMPTS: u32 = 80;
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

/// What happened to one object.
enum Wrote {
    Written,
    Unchanged,
    /// Nothing stored and nothing to store (an empty listing, no flows file yet).
    Absent,
}

/// The merge of one object's stored rows (first argument) with this run's: the new
/// content, `None` when the stored object is up to date (or nothing is stored and
/// there is nothing to store). The second argument is the context object of the
/// same day as stored now, when the upsert asks for one.
type MergeFn = dyn Fn(
        Option<&RecordBatch>,
        Option<&RecordBatch>,
    ) -> Result<Option<RecordBatch>, arrow::error::ArrowError>
    + Send
    + Sync;

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
        self.commit_with(stage, &|_, _| {}).await
    }

    /// [`Loader::commit`], telling `on_day` of each day file (partition) as its merge
    /// starts, with the number of partitions: for a progress bar.
    pub async fn commit_with(
        &self,
        stage: &mut Stage,
        on_day: &(dyn Fn(&PartitionKey, usize) + Sync),
    ) -> Result<CommitReport> {
        let mut report = CommitReport::default();
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
            report += done.map_err(|e| Error::write(self.store.location(""), e))??;
        }
        Ok(report)
    }

    async fn commit_partition(&self, key: PartitionKey, incoming: Batches) -> Result<CommitReport> {
        let mut report = CommitReport::default();
        let executions = Arc::new(incoming.executions);
        let exec = executions.clone();
        let merge_exec: Arc<MergeFn> =
            Arc::new(move |stored, _| Ok(merge_executions(stored, &exec)?.batch));
        let exec_key = key.object_key(Table::Executions);
        let wrote = self
            .upsert(&exec_key, Table::Executions, None, &mut report, merge_exec)
            .await?;
        report.count(wrote);

        // A run's catalog rows follow its row in the executions file as it is now,
        // read again on every attempt: another writer may have stored a newer
        // version of the run meanwhile, and then its catalog rows are the ones to keep.
        // Every day with runs has its catalog file, with no rows when none of its
        // runs registered anything: readers that glob a table's files (DuckDB 1.x
        // views, Polars, pyarrow datasets) then never find a table without files.
        let catalog = incoming.catalog_registrations;
        let merge_cat: Arc<MergeFn> = Arc::new(move |stored, stored_exec| {
            let current = current_with_catalog(stored_exec, &executions, stored, &catalog)?;
            let merged = merge_catalog(stored, &catalog, &current)?;
            Ok(match (merged, stored) {
                (None, None) => Some(RecordBatch::new_empty(catalog.schema())),
                (merged, _) => merged,
            })
        });
        let wrote = self
            .upsert(
                &key.object_key(Table::CatalogRegistrations),
                Table::CatalogRegistrations,
                Some((Table::Executions, &exec_key)),
                &mut report,
                merge_cat,
            )
            .await?;
        report.count(wrote);
        Ok(report)
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
        let merge: Arc<MergeFn> =
            Arc::new(move |stored, _| merge_flows(stored, &listed, snapshot_ms));
        let key = flows_key(account_id, region);
        let wrote = self
            .upsert(&key, Table::Flows, None, &mut report, merge)
            .await?;
        report.count(wrote);
        Ok(report)
    }

    /// Read-merge-write of one object (of `table`) until its conditional write
    /// succeeds; with `context`, that object (of that table) is read again on each
    /// attempt and handed to the merge.
    async fn upsert(
        &self,
        object_key: &str,
        table: Table,
        context: Option<(Table, &str)>,
        report: &mut CommitReport,
        merge: Arc<MergeFn>,
    ) -> Result<Wrote> {
        let location = self.store.location(object_key);
        for attempt in 1..=MAX_ATTEMPTS {
            let existing = self.store.get(object_key).await?;
            let context_obj = match context {
                Some((t, key)) => Some((t, self.store.get(key).await?, self.store.location(key))),
                None => None,
            };
            let stored = existing.as_ref().map(|o| o.body.clone());
            let (merge, loc) = (merge.clone(), location.clone());
            let body = tokio::task::spawn_blocking(move || -> Result<Option<Bytes>> {
                let stored = decoded(stored, table, &loc)?;
                let context = match context_obj {
                    Some((t, obj, ctx_loc)) => decoded(obj.map(|o| o.body), t, &ctx_loc)?,
                    None => None,
                };
                let batch = merge(stored.as_ref(), context.as_ref())
                    .map_err(|e| Error::write(loc.clone(), e))?;
                batch
                    .map(|b| encode(&b).map_err(|e| Error::write(loc, e)))
                    .transpose()
            })
            .await
            .map_err(|e| Error::write(location.clone(), e))??;
            let Some(body) = body else {
                return Ok(if existing.is_some() {
                    Wrote::Unchanged
                } else {
                    Wrote::Absent
                });
            };
            let mode = existing.map_or(PutMode::Create, |o| PutMode::Replace(o.etag));
            match self.store.put(object_key, body, mode).await? {
                PutOutcome::Written { .. } => return Ok(Wrote::Written),
                PutOutcome::Conflict => {
                    report.conflicts += 1;
                    tracing::info!(object = %location, attempt, "another writer changed the file first; merging again");
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        Err(Error::Contention {
            location,
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Writes a run's manifest (its run id is new: an object already there is an
    /// error, never overwritten).
    pub async fn write_manifest(&self, manifest: &RunManifest) -> Result<()> {
        let key = manifest.key();
        let body = serde_json::to_vec_pretty(manifest)
            .map_err(|e| Error::write(self.store.location(&key), e))?;
        match self
            .store
            .put(&key, Bytes::from(body), PutMode::Create)
            .await?
        {
            PutOutcome::Written { .. } => Ok(()),
            PutOutcome::Conflict => Err(Error::write(
                self.store.location(&key),
                "another run manifest has this run id",
            )),
        }
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
            .list(RUNS_PREFIX)
            .await?
            .into_iter()
            .filter(|k| is_manifest(k))
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
            let Some(obj) = self.store.get(key).await? else {
                continue;
            };
            out.push(
                serde_json::from_slice(&obj.body).map_err(|source| Error::Corrupt {
                    location: self.store.location(key),
                    what: "run manifest",
                    source: source.into(),
                })?,
            );
        }
        Ok(out)
    }

    /// Every state file: `(account, region, state)`, sorted.
    pub async fn states(&self) -> Result<Vec<(String, String, StateFile)>> {
        self.read_all_json(StateFile::PREFIX, StateFile::parse_key, "state file")
            .await
    }

    /// The stored state of an account and region (empty when there is none yet).
    pub async fn read_state(&self, account_id: &str, region: &str) -> Result<StateFile> {
        self.read_json(&StateFile::key(account_id, region), "state file")
            .await
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
        let key = StateFile::key(account_id, region);
        self.upsert_json(&key, "state file", |state: &mut StateFile| {
            state.apply(updates, now_ms)
        })
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
        self.read_json(&id.key(account_id, region), "backfill progress file")
            .await
    }

    /// Every backfill progress file: `(account, region, progress)`, sorted by key.
    pub async fn backfills(&self) -> Result<Vec<(String, String, BackfillProgress)>> {
        self.read_all_json(
            BackfillId::PREFIX,
            BackfillId::parse_key,
            "backfill progress file",
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
        let key = id.key(account_id, region);
        self.upsert_json(
            &key,
            "backfill progress file",
            |p: &mut BackfillProgress| p.apply(id, done, restarted_ms),
        )
        .await
    }

    /// Every JSON object of ours under `prefix` whose key `parse_key` names an
    /// account and region, in key order.
    async fn read_all_json<T: DeserializeOwned + Default>(
        &self,
        prefix: &str,
        parse_key: fn(&str) -> Option<(String, String)>,
        what: &'static str,
    ) -> Result<Vec<(String, String, T)>> {
        let mut out = Vec::new();
        for key in self.store.list(prefix).await? {
            if let Some((account, region)) = parse_key(&key) {
                out.push((account, region, self.read_json(&key, what).await?));
            }
        }
        Ok(out)
    }

    /// A JSON object of ours (`what`, for messages); `T::default()` when absent.
    async fn read_json<T: DeserializeOwned + Default>(
        &self,
        key: &str,
        what: &'static str,
    ) -> Result<T> {
        let stored = self.store.get(key).await?;
        self.parse_json(key, what, stored.as_ref())
    }

    fn parse_json<T: DeserializeOwned + Default>(
        &self,
        key: &str,
        what: &'static str,
        stored: Option<&Object>,
    ) -> Result<T> {
        match stored {
            None => Ok(T::default()),
            Some(o) => serde_json::from_slice(&o.body).map_err(|source| Error::Corrupt {
                location: self.store.location(key),
                what,
                source: source.into(),
            }),
        }
    }

    /// Read-modify-write of a JSON object of ours until its conditional write
    /// succeeds: `change` applies to whatever is stored at that moment. Returns the
    /// conflicts it re-merged.
    async fn upsert_json<T: Serialize + DeserializeOwned + Default>(
        &self,
        key: &str,
        what: &'static str,
        change: impl Fn(&mut T),
    ) -> Result<u32> {
        for attempt in 1..=MAX_ATTEMPTS {
            let existing = self.store.get(key).await?;
            let mut value: T = self.parse_json(key, what, existing.as_ref())?;
            change(&mut value);
            let body = serde_json::to_vec_pretty(&value)
                .map_err(|e| Error::write(self.store.location(key), e))?;
            let mode = existing.map_or(PutMode::Create, |o| PutMode::Replace(o.etag));
            match self.store.put(key, Bytes::from(body), mode).await? {
                PutOutcome::Written { .. } => return Ok(attempt - 1),
                PutOutcome::Conflict => {
                    tracing::info!(object = %self.store.location(key), attempt, "another writer changed the {what} first; merging again");
                    tokio::time::sleep(backoff(attempt)).await
                }
            }
        }
        Err(Error::Contention {
            location: self.store.location(key),
            attempts: MAX_ATTEMPTS,
        })
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
    fn count(&mut self, wrote: Wrote) {
        match wrote {
            Wrote::Written => self.files_written += 1,
            Wrote::Unchanged => self.files_unchanged += 1,
            Wrote::Absent => {}
        }
    }
}

/// The stored object `body` of `table` (at `location`, for messages) as rows.
fn decoded(body: Option<Bytes>, table: Table, location: &str) -> Result<Option<RecordBatch>> {
    body.map(|b| decode(b, &schema_for(table)))
        .transpose()
        .map_err(|source| Error::Corrupt {
            location: location.to_string(),
            what: "Parquet file of this export",
            source,
        })
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
    use super::*;
    use crate::store::MemoryStore;
    use appflow_extract::{CatalogDetail, ExecutionRecord, FlowInfo, RegistrationOutput};
    use appflow_transform::to_batches;
    use arrow::array::{AsArray, RecordBatch};
    use arrow::datatypes::{Int32Type, TimestampMillisecondType};

    const DAY: i64 = 86_400_000;
    const T0: i64 = 1_790_000_000_000 - 1_790_000_000_000 % DAY;

    fn flow(name: &str) -> FlowInfo {
        FlowInfo::from_arn(
            name,
            &format!("arn:aws:appflow:us-east-1:123456789012:flow/{name}"),
        )
        .unwrap()
    }

    fn run(id: &str, started: i64, status: &str, updated: i64, catalog: usize) -> ExecutionRecord {
        ExecutionRecord {
            execution_status: Some(status.into()),
            last_updated_at: Some(updated),
            bytes_processed: Some(10),
            bytes_written: Some(10),
            records_processed: Some(1),
            catalog_details: (0..catalog)
                .map(|i| CatalogDetail {
                    catalog_type: Some("GLUE".into()),
                    table_name: Some(format!("t{i}")),
                    table_registration: Some(RegistrationOutput {
                        status: Some(status.into()),
                        message: None,
                        result: None,
                    }),
                    partition_registration: None,
                })
                .collect(),
            ..ExecutionRecord::new(id, started)
        }
    }

    async fn commit(
        loader: &Loader,
        flows: &[(&str, Vec<ExecutionRecord>)],
        exported_at: i64,
    ) -> CommitReport {
        let mut stage = Stage::new().unwrap();
        for (name, records) in flows {
            stage
                .add(&to_batches(&flow(name), records, exported_at).unwrap())
                .unwrap();
        }
        loader.commit(&mut stage).await.unwrap()
    }

    async fn read(loader: &Loader, table: Table, day: i64) -> RecordBatch {
        let key = PartitionKey {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            day: crate::stage::day_of(day).unwrap(),
        };
        let obj = loader
            .store()
            .get(&key.object_key(table))
            .await
            .unwrap()
            .expect("day file");
        decode(obj.body, &schema_for(table)).unwrap()
    }

    fn strings(b: &RecordBatch, col: &str) -> Vec<String> {
        b.column_by_name(col)
            .unwrap()
            .as_string::<i32>()
            .iter()
            .map(|v| v.unwrap_or("-").to_string())
            .collect()
    }

    fn millis(b: &RecordBatch, col: &str) -> Vec<i64> {
        b.column_by_name(col)
            .unwrap()
            .as_primitive::<TimestampMillisecondType>()
            .values()
            .to_vec()
    }

    fn loader() -> Loader {
        Loader::new(Arc::new(MemoryStore::new()))
    }

    #[tokio::test]
    async fn a_day_of_discarded_rows_only_writes_no_file() {
        let l = loader();
        let mut stage = Stage::new().unwrap();
        let kept = vec![run("a1", T0 + 1000, "Successful", T0 + 2000, 1)];
        stage
            .add(&to_batches(&flow("a"), &kept, 7).unwrap())
            .unwrap();
        // A flow that failed after a page of another day was staged.
        let failed = vec![run("b1", T0 - DAY, "Successful", T0, 2)];
        let id = stage
            .add(&to_batches(&flow("b"), &failed, 7).unwrap())
            .unwrap();
        stage.discard([id]);
        let r = l.commit(&mut stage).await.unwrap();
        assert_eq!(r.files_written, 2, "the kept day's two files only");
        let mut keys = l.store().list("").await.unwrap();
        keys.sort();
        let day = crate::stage::day_of(T0).unwrap();
        assert_eq!(
            keys,
            [
                format!("catalog_registrations/dt={day}/123456789012_us-east-1.parquet"),
                format!("executions/dt={day}/123456789012_us-east-1.parquet"),
            ]
        );
    }

    #[tokio::test]
    async fn writes_one_sorted_file_per_day_and_table() {
        let l = loader();
        let a = vec![
            run("a2", T0 + 2000, "Successful", T0 + 3000, 1),
            run("a1", T0 + 1000, "Error", T0 + 1500, 2),
            run("a0", T0 - 5, "Successful", T0, 0),
        ];
        let b = vec![run("b1", T0 + 1500, "Successful", T0 + 1600, 0)];
        let r = commit(&l, &[("flow-b", b), ("flow-a", a)], 7).await;
        // Both days have both files; the day before has no catalog rows.
        assert_eq!(
            r,
            CommitReport {
                files_written: 4,
                files_unchanged: 0,
                conflicts: 0
            }
        );
        assert_eq!(
            read(&l, Table::CatalogRegistrations, T0 - 1)
                .await
                .num_rows(),
            0
        );
        let day = read(&l, Table::Executions, T0).await;
        assert_eq!(strings(&day, "execution_id"), ["a1", "a2", "b1"]);
        assert_eq!(
            strings(&read(&l, Table::Executions, T0 - 1).await, "execution_id"),
            ["a0"]
        );
        let cat = read(&l, Table::CatalogRegistrations, T0).await;
        assert_eq!(strings(&cat, "execution_id"), ["a1", "a1", "a2"]);
        assert_eq!(
            cat.column_by_name("ordinal")
                .unwrap()
                .as_primitive::<Int32Type>()
                .values(),
            &[0, 1, 0]
        );
    }

    #[tokio::test]
    async fn the_same_rows_again_change_nothing() {
        let l = loader();
        let rows = vec![run("a1", T0 + 1000, "Successful", T0 + 1500, 2)];
        commit(&l, &[("f", rows.clone())], 7).await;
        let before = l.store().list("").await.unwrap();
        let etags: Vec<_> = futures::future::join_all(before.iter().map(|k| l.store().get(k)))
            .await
            .into_iter()
            .map(|o| o.unwrap().unwrap().etag)
            .collect();
        let r = commit(&l, &[("f", rows)], 99).await;
        assert_eq!((r.files_written, r.files_unchanged), (0, 2));
        let after: Vec<_> = futures::future::join_all(before.iter().map(|k| l.store().get(k)))
            .await
            .into_iter()
            .map(|o| o.unwrap().unwrap().etag)
            .collect();
        assert_eq!(etags, after);
        assert_eq!(
            millis(&read(&l, Table::Executions, T0).await, "exported_at"),
            [7]
        );
    }

    #[tokio::test]
    async fn a_finished_run_replaces_its_open_version_in_place() {
        let l = loader();
        commit(
            &l,
            &[(
                "f",
                vec![
                    run("a1", T0 + 1000, "InProgress", T0 + 1100, 0),
                    run("a2", T0 + 5000, "Successful", T0 + 6000, 0),
                ],
            )],
            7,
        )
        .await;
        commit(
            &l,
            &[(
                "f",
                vec![
                    run("a1", T0 + 1000, "Successful", T0 + 9000, 2),
                    run("a2", T0 + 5000, "Successful", T0 + 6000, 0),
                ],
            )],
            8,
        )
        .await;
        let day = read(&l, Table::Executions, T0).await;
        assert_eq!(strings(&day, "execution_id"), ["a1", "a2"]);
        assert_eq!(
            strings(&day, "execution_status"),
            ["Successful", "Successful"]
        );
        assert_eq!(
            millis(&day, "exported_at"),
            [8, 7],
            "only the changed row gets a new exported_at"
        );
        assert_eq!(
            strings(
                &read(&l, Table::CatalogRegistrations, T0).await,
                "execution_id"
            ),
            ["a1", "a1"]
        );
    }

    #[tokio::test]
    async fn an_older_version_never_wins() {
        let l = loader();
        commit(
            &l,
            &[("f", vec![run("a1", T0 + 1000, "Successful", T0 + 9000, 1)])],
            7,
        )
        .await;
        let r = commit(
            &l,
            &[("f", vec![run("a1", T0 + 1000, "InProgress", T0 + 1100, 0)])],
            8,
        )
        .await;
        assert_eq!(r.files_written, 0);
        assert_eq!(
            strings(&read(&l, Table::Executions, T0).await, "execution_status"),
            ["Successful"]
        );
        assert_eq!(
            read(&l, Table::CatalogRegistrations, T0).await.num_rows(),
            1,
            "catalog rows of the newer version stay"
        );
    }

    #[tokio::test]
    async fn flows_sharing_a_day_file_keep_each_other_s_rows() {
        let l = loader();
        commit(
            &l,
            &[("a", vec![run("a1", T0 + 1000, "Successful", T0 + 1100, 1)])],
            7,
        )
        .await;
        commit(
            &l,
            &[("b", vec![run("b1", T0 + 500, "Successful", T0 + 600, 1)])],
            8,
        )
        .await;
        assert_eq!(
            strings(&read(&l, Table::Executions, T0).await, "flow_name"),
            ["a", "b"]
        );
        assert_eq!(
            strings(
                &read(&l, Table::CatalogRegistrations, T0).await,
                "execution_id"
            ),
            ["a1", "b1"]
        );
    }

    #[tokio::test]
    async fn catalog_rows_missing_after_a_crash_are_written_on_the_next_run() {
        let l = loader();
        let rows = vec![run("a1", T0 + 1000, "Successful", T0 + 1100, 2)];
        commit(&l, &[("f", rows.clone())], 7).await;
        // Simulate a crash between the two writes: only the executions file exists.
        let mem = Arc::new(MemoryStore::new());
        let key = PartitionKey {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            day: crate::stage::day_of(T0).unwrap(),
        };
        let exec = l
            .store()
            .get(&key.object_key(Table::Executions))
            .await
            .unwrap()
            .unwrap();
        mem.put(
            &key.object_key(Table::Executions),
            exec.body,
            PutMode::Create,
        )
        .await
        .unwrap();
        let l2 = Loader::new(mem);
        let r = commit(&l2, &[("f", rows)], 9).await;
        assert_eq!((r.files_written, r.files_unchanged), (1, 1));
        assert_eq!(
            read(&l2, Table::CatalogRegistrations, T0).await.num_rows(),
            2
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_commits_lose_no_rows() {
        let l = loader();
        let tasks = (0..6).map(|w| {
            let l = l.clone();
            tokio::spawn(async move {
                let name = format!("flow-{w}");
                let rows: Vec<_> = (0..20)
                    .map(|i| {
                        run(
                            &format!("{w}-{i}"),
                            T0 + i * 3_600_000,
                            "Successful",
                            T0 + i * 3_600_000 + 5,
                            1,
                        )
                    })
                    .collect();
                commit(&l, &[(name.as_str(), rows)], w).await
            })
        });
        for t in futures::future::join_all(tasks).await {
            t.unwrap();
        }
        let day = read(&l, Table::Executions, T0).await;
        assert_eq!(day.num_rows(), 6 * 20);
        assert_eq!(
            read(&l, Table::CatalogRegistrations, T0).await.num_rows(),
            6 * 20
        );
    }

    /// A store that lets another writer commit just before this writer's first
    /// catalog put, which then conflicts.
    #[derive(Debug)]
    struct Interleaved {
        inner: Arc<MemoryStore>,
        other_writer: tokio::sync::Mutex<Option<Vec<ExecutionRecord>>>,
    }

    #[async_trait::async_trait]
    impl ObjectStore for Interleaved {
        async fn get(&self, key: &str) -> Result<Option<crate::store::Object>> {
            self.inner.get(key).await
        }
        async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> Result<PutOutcome> {
            if key.starts_with("catalog_registrations/")
                && let Some(rows) = self.other_writer.lock().await.take()
            {
                let other = Loader::new(self.inner.clone());
                commit(&other, &[("f", rows)], 50).await;
            }
            self.inner.put(key, body, mode).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key).await
        }
        async fn check(&self) -> Result<()> {
            Ok(())
        }
        fn location(&self, key: &str) -> String {
            self.inner.location(key)
        }
    }

    #[tokio::test]
    async fn a_newer_version_written_meanwhile_keeps_its_catalog_rows() {
        let inner = Arc::new(MemoryStore::new());
        let newer = vec![run("a1", T0 + 1000, "Successful", T0 + 9000, 2)];
        let store = Interleaved {
            inner: inner.clone(),
            other_writer: tokio::sync::Mutex::new(Some(newer)),
        };
        let l = Loader::new(Arc::new(store));
        // This writer read the run while it was open, with one catalog detail.
        let r = commit(
            &l,
            &[("f", vec![run("a1", T0 + 1000, "InProgress", T0 + 1100, 1)])],
            7,
        )
        .await;
        assert!(r.conflicts >= 1, "the interleaving happened: {r:?}");
        let check = Loader::new(inner);
        assert_eq!(
            strings(
                &read(&check, Table::Executions, T0).await,
                "execution_status"
            ),
            ["Successful"]
        );
        let cat = read(&check, Table::CatalogRegistrations, T0).await;
        assert_eq!(
            strings(&cat, "table_registration_status"),
            ["Successful", "Successful"],
            "the newer version's catalog rows"
        );
    }

    #[tokio::test]
    async fn only_the_newest_manifests_are_kept() {
        let l = loader();
        for i in 0..5 {
            let m = RunManifest {
                run_id: crate::manifest::run_id(T0 + i * 1000),
                records: i as u64,
                ..Default::default()
            };
            l.write_manifest(&m).await.unwrap();
            let removed = l.prune_manifests(3).await.unwrap();
            assert_eq!(removed, usize::from(i >= 3));
            assert!(
                l.write_manifest(&m).await.is_err(),
                "a run id is written once"
            );
        }
        // A file that is not a manifest is neither counted nor removed.
        l.store()
            .put(
                "_state/runs/notes.txt",
                Bytes::from_static(b"x"),
                PutMode::Create,
            )
            .await
            .unwrap();
        let kept: Vec<u64> = l
            .manifests(10)
            .await
            .unwrap()
            .iter()
            .map(|m| m.records)
            .collect();
        assert_eq!(kept, [4, 3, 2], "newest first");
        assert_eq!(l.store().list(RUNS_PREFIX).await.unwrap().len(), 4);
    }

    #[tokio::test]
    async fn a_corrupt_day_file_is_an_error_naming_it() {
        let l = loader();
        let key = PartitionKey {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            day: crate::stage::day_of(T0).unwrap(),
        };
        l.store()
            .put(
                &key.object_key(Table::Executions),
                Bytes::from_static(b"not parquet"),
                PutMode::Create,
            )
            .await
            .unwrap();
        let mut stage = Stage::new().unwrap();
        stage
            .add(&to_batches(&flow("f"), &[run("a1", T0, "Successful", T0 + 1, 0)], 1).unwrap())
            .unwrap();
        let err = l.commit(&mut stage).await.unwrap_err().to_string();
        assert!(err.contains(&key.object_key(Table::Executions)), "{err}");
        let obj = l
            .store()
            .get(&key.object_key(Table::Executions))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(obj.body.as_ref(), b"not parquet", "nothing overwritten");
    }
}
