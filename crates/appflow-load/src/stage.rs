//! Staging: every flow's rows of a run, kept in local temporary Arrow IPC files and
//! indexed by (account, region, day), so memory stays bounded by the stage's budget
//! while reading and by one day's rows while merging.
//!
//! Rows come in page by page. Each [`Stage::add`] is numbered, and the number is
//! staged with the rows (a column of the stage's own, never written to the export),
//! so that when a day is read back
//! - a run read twice (pages that shifted while they were read) is kept once, in its
//!   newest version (`last_updated_at`; on a tie, the one added last), with the
//!   catalog rows of that version only;
//! - the adds of a flow that failed half-way can be [`Stage::discard`]ed: none of
//!   its rows reach a day file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;

use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, UInt32Array, UInt64Array};
use arrow::compute::{concat_batches, filter_record_batch, max, min, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMillisecondType, UInt64Type};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use chrono::DateTime;

use crate::error::{Error, Result};
use crate::merge::{KEY, VERSION, rows};
use appflow_model::supersedes;
use appflow_transform::{Batches, Table, schema_for};

/// One data file of the export: a table's rows of one account, region and UTC day.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    pub account_id: String,
    pub region: String,
    /// `YYYY-MM-DD`, the UTC date of `started_at`.
    pub day: String,
}

/// The UTC date of an epoch-millisecond timestamp.
pub(crate) fn day_of(millis: i64) -> Result<String> {
    DateTime::from_timestamp_millis(millis)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .ok_or(Error::BadTimestamp { millis })
}

/// Rows kept in memory before they are written to a segment file.
const MEMORY_BUDGET: usize = 32 << 20;

/// The stage's own column: the number of the [`Stage::add`] that brought the row.
const ADDED_BY: &str = "_stage_add";

/// The number of one [`Stage::add`], to [`Stage::discard`] it later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddId(u64);

/// A table's schema with the stage's column last.
fn staged_schema(table: Table) -> SchemaRef {
    let schema = schema_for(table);
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(ADDED_BY, DataType::UInt64, false)));
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` (of `table`) with the stage's column, every row added by `id`.
fn tagged(table: Table, batch: &RecordBatch, id: AddId) -> Result<RecordBatch> {
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(UInt64Array::from_value(id.0, batch.num_rows())));
    RecordBatch::try_new(staged_schema(table), columns).map_err(stage_bug)
}

/// `batch` without the stage's column (its last).
fn untagged(batch: &RecordBatch) -> Result<RecordBatch> {
    let keep: Vec<usize> = (0..batch.num_columns().saturating_sub(1)).collect();
    batch.project(&keep).map_err(stage_bug)
}

/// Where one partition's rows of a segment are: the segment and the batch index
/// (the same in both tables' files).
#[derive(Clone, Copy, Debug)]
struct Slice {
    segment: usize,
    batch: usize,
}

/// The rows of a run, waiting to be merged into their day files. Rows are kept in
/// memory up to a budget; past it they are written to a segment (one Arrow IPC file
/// per table, one batch per partition), so memory stays bounded whatever the
/// history size and a day's rows are read back from a few files.
#[derive(Debug)]
pub struct Stage {
    /// Where the temporary folder is made (the system's temporary folder: `None`).
    parent: Option<PathBuf>,
    dir: Option<tempfile::TempDir>,
    segments: usize,
    slices: BTreeMap<PartitionKey, Vec<Slice>>,
    pending: Vec<Batches>,
    pending_bytes: usize,
    budget: usize,
    memory: BTreeMap<PartitionKey, Batches>,
    adds: u64,
    discarded: HashSet<u64>,
}

/// The staging folder's files failed (disk full, folder gone): not a bug.
fn stage_io<E: Into<Box<dyn std::error::Error + Send + Sync>>>(e: E) -> Error {
    Error::stage(e)
}

/// Rows in memory did not fit the stage's own invariants: a bug of this tool.
fn stage_bug<E: Into<Box<dyn std::error::Error + Send + Sync>>>(e: E) -> Error {
    Error::bug("staging rows", e)
}

/// Groups the rows of `batch` by partition (as computed from its `account_id`,
/// `region` and `started_at` columns), in first-seen order.
fn group(batch: &RecordBatch) -> Result<BTreeMap<PartitionKey, Vec<u32>>> {
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| stage_bug(format!("no column {name}")))
    };
    let account = col("account_id")?.as_string::<i32>();
    let region = col("region")?.as_string::<i32>();
    let started = col("started_at")?.as_primitive::<TimestampMillisecondType>();
    let mut groups: BTreeMap<PartitionKey, Vec<u32>> = BTreeMap::new();
    // Consecutive rows are usually of the same partition: collect such runs of rows
    // and look the partition up once per run, not once per row.
    let mut run: Option<(i64, PartitionKey, Vec<u32>)> = None;
    for i in 0..batch.num_rows() {
        let ms = started.value(i);
        let day = ms.div_euclid(86_400_000);
        match &mut run {
            Some((d, k, rows))
                if *d == day && k.account_id == account.value(i) && k.region == region.value(i) =>
            {
                rows.push(i as u32);
            }
            _ => {
                if let Some((_, k, rows)) = run.take() {
                    groups.entry(k).or_default().extend(rows);
                }
                let key = PartitionKey {
                    account_id: account.value(i).to_string(),
                    region: region.value(i).to_string(),
                    day: day_of(ms)?,
                };
                run = Some((day, key, vec![i as u32]));
            }
        }
    }
    if let Some((_, k, rows)) = run {
        groups.entry(k).or_default().extend(rows);
    }
    Ok(groups)
}

fn writer(path: &PathBuf, schema: &SchemaRef) -> Result<FileWriter<BufWriter<File>>> {
    let file = File::create(path).map_err(stage_io)?;
    FileWriter::try_new(BufWriter::new(file), schema).map_err(stage_io)
}

fn concat(table: Table, parts: impl IntoIterator<Item = RecordBatch>) -> Result<RecordBatch> {
    let parts: Vec<RecordBatch> = parts.into_iter().collect();
    concat_batches(&staged_schema(table), &parts).map_err(stage_bug)
}

impl Stage {
    /// An empty stage; segment files go to a temporary folder removed on drop.
    pub fn new() -> Result<Self> {
        Self::open(None, None)
    }

    /// A stage whose temporary folder is made now, in `parent` (the system's
    /// temporary folder when `None`), so that a folder that cannot be made fails
    /// before anything is read; it holds up to `budget` bytes of rows in memory
    /// (32 MB when `None`).
    pub fn open(parent: Option<PathBuf>, budget: Option<usize>) -> Result<Self> {
        let mut stage = Self::with_options(parent, budget);
        stage.make_dir()?;
        Ok(stage)
    }

    /// A stage that writes a segment whenever more than `bytes` of rows are held.
    pub fn with_memory_budget(bytes: usize) -> Self {
        Self::with_options(None, Some(bytes))
    }

    /// [`Stage::open`], but the folder is made only when rows are first written to it.
    fn with_options(parent: Option<PathBuf>, budget: Option<usize>) -> Self {
        Stage {
            parent,
            dir: None,
            segments: 0,
            slices: BTreeMap::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            budget: budget.unwrap_or(MEMORY_BUDGET),
            memory: BTreeMap::new(),
            adds: 0,
            discarded: HashSet::new(),
        }
    }

    /// Makes the temporary folder, unless it is made.
    fn make_dir(&mut self) -> Result<()> {
        if self.dir.is_some() {
            return Ok(());
        }
        let parent = self.parent.clone().unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("appflow-export-stage-")
            .tempdir_in(&parent)
            .map_err(|e| {
                stage_io(format!(
                    "cannot create a temporary folder in {}: {e}",
                    parent.display()
                ))
            })?;
        self.dir = Some(dir);
        Ok(())
    }

    fn path(&self, segment: usize, table: Table) -> Result<PathBuf> {
        let dir = self
            .dir
            .as_ref()
            .ok_or_else(|| stage_bug("no staging folder"))?;
        Ok(dir
            .path()
            .join(format!("{segment:06}-{}.arrow", table.name())))
    }

    /// Adds the rows of some runs (typically one page of a flow's), returning the
    /// add's number. Rows that cannot be partitioned are refused here, before
    /// anything is staged; an error while spilling means the stage can no longer be
    /// trusted and the run must stop.
    pub fn add(&mut self, batches: &Batches) -> Result<AddId> {
        let id = AddId(self.adds);
        self.adds += 1;
        if batches.executions.num_rows() == 0 {
            return Ok(id);
        }
        // Only started_at can make rows unpartitionable: check its range here, once.
        let started = batches
            .executions
            .column_by_name("started_at")
            .ok_or_else(|| stage_bug("no column started_at"))?
            .as_primitive::<TimestampMillisecondType>();
        for bound in [min(started), max(started)].into_iter().flatten() {
            day_of(bound)?;
        }
        let staged = Batches {
            executions: tagged(Table::Executions, &batches.executions, id)?,
            catalog_registrations: tagged(
                Table::CatalogRegistrations,
                &batches.catalog_registrations,
                id,
            )?,
        };
        self.pending_bytes += staged.executions.get_array_memory_size()
            + staged.catalog_registrations.get_array_memory_size();
        self.pending.push(staged);
        if self.pending_bytes >= self.budget {
            self.spill()?;
        }
        Ok(id)
    }

    /// Forgets the rows of these adds (a flow that failed after some of its pages
    /// were staged): [`Stage::read`] never returns them.
    pub fn discard(&mut self, adds: impl IntoIterator<Item = AddId>) {
        self.discarded.extend(adds.into_iter().map(|a| a.0));
    }

    /// The pending rows, split by partition. They leave `pending` only once split.
    fn split_pending(&mut self) -> Result<Vec<(PartitionKey, Batches)>> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let exec = concat(
            Table::Executions,
            self.pending.iter().map(|b| b.executions.clone()),
        )?;
        let cat = concat(
            Table::CatalogRegistrations,
            self.pending.iter().map(|b| b.catalog_registrations.clone()),
        )?;
        let exec_groups = group(&exec)?;
        let cat_groups = group(&cat)?;
        if let Some(orphan) = cat_groups.keys().find(|k| !exec_groups.contains_key(*k)) {
            return Err(stage_bug(format!(
                "catalog rows of day {} have no execution rows",
                orphan.day
            )));
        }
        let parts = exec_groups
            .into_iter()
            .map(|(key, rows)| {
                let cat_rows = cat_groups.get(&key).cloned().unwrap_or_default();
                let part = Batches {
                    executions: take_record_batch(&exec, &UInt32Array::from(rows))
                        .map_err(stage_bug)?,
                    catalog_registrations: take_record_batch(&cat, &UInt32Array::from(cat_rows))
                        .map_err(stage_bug)?,
                };
                Ok((key, part))
            })
            .collect::<Result<Vec<_>>>()?;
        self.pending.clear();
        self.pending_bytes = 0;
        Ok(parts)
    }

    /// Writes the pending rows as one segment.
    fn spill(&mut self) -> Result<()> {
        let parts = self.split_pending()?;
        if parts.is_empty() {
            return Ok(());
        }
        self.make_dir()?;
        let segment = self.segments;
        self.segments += 1;
        let mut exec = writer(
            &self.path(segment, Table::Executions)?,
            &staged_schema(Table::Executions),
        )?;
        let mut cat = writer(
            &self.path(segment, Table::CatalogRegistrations)?,
            &staged_schema(Table::CatalogRegistrations),
        )?;
        for (batch, (key, part)) in parts.into_iter().enumerate() {
            exec.write(&part.executions).map_err(stage_io)?;
            cat.write(&part.catalog_registrations).map_err(stage_io)?;
            self.slices
                .entry(key)
                .or_default()
                .push(Slice { segment, batch });
        }
        exec.finish().map_err(stage_io)?;
        cat.finish().map_err(stage_io)?;
        tracing::debug!(segment, "staged rows written to a temporary segment");
        Ok(())
    }

    /// Ends adding and returns the partitions that have rows, in order. The rows
    /// still in memory stay there, grouped by partition.
    pub fn partitions(&mut self) -> Result<Vec<PartitionKey>> {
        for (key, part) in self.split_pending()? {
            self.memory.insert(key, part);
        }
        let mut keys: Vec<PartitionKey> = self
            .slices
            .keys()
            .chain(self.memory.keys())
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// The staged rows of one partition (call [`Stage::partitions`] first): one
    /// version of each run, with its catalog rows, none of a discarded add. Empty
    /// when every row of the partition was discarded.
    pub fn read(&self, key: &PartitionKey) -> Result<Batches> {
        let staged = self.read_staged(key)?;
        let staged = self.without_discarded(staged)?;
        let current = newest_versions(staged)?;
        Ok(Batches {
            executions: untagged(&current.executions)?,
            catalog_registrations: untagged(&current.catalog_registrations)?,
        })
    }

    fn without_discarded(&self, staged: Batches) -> Result<Batches> {
        if self.discarded.is_empty() {
            return Ok(staged);
        }
        let kept = |batch: &RecordBatch| -> Result<RecordBatch> {
            let added = added_by(batch)?;
            let mask: BooleanArray = added
                .values()
                .iter()
                .map(|a| Some(!self.discarded.contains(a)))
                .collect();
            filter_record_batch(batch, &mask).map_err(stage_bug)
        };
        Ok(Batches {
            executions: kept(&staged.executions)?,
            catalog_registrations: kept(&staged.catalog_registrations)?,
        })
    }

    /// Every staged row of one partition, with the stage's column.
    fn read_staged(&self, key: &PartitionKey) -> Result<Batches> {
        let slices = self.slices.get(key).map(Vec::as_slice).unwrap_or_default();
        let in_memory = self.memory.get(key);
        let read_table = |table: Table, in_memory: Option<&RecordBatch>| -> Result<RecordBatch> {
            let mut parts = Vec::with_capacity(slices.len() + 1);
            for s in slices {
                let file = File::open(self.path(s.segment, table)?).map_err(stage_io)?;
                let mut reader =
                    FileReader::try_new(BufReader::new(file), None).map_err(stage_io)?;
                reader.set_index(s.batch).map_err(stage_io)?;
                match reader.next() {
                    Some(batch) => parts.push(batch.map_err(stage_io)?),
                    None => return Err(stage_io("a staged batch is missing")),
                }
            }
            parts.extend(in_memory.cloned());
            concat(table, parts)
        };
        Ok(Batches {
            executions: read_table(Table::Executions, in_memory.map(|m| &m.executions))?,
            catalog_registrations: read_table(
                Table::CatalogRegistrations,
                in_memory.map(|m| &m.catalog_registrations),
            )?,
        })
    }
}

fn added_by(batch: &RecordBatch) -> Result<&arrow::array::PrimitiveArray<UInt64Type>> {
    batch
        .column_by_name(ADDED_BY)
        .map(|c| c.as_primitive::<UInt64Type>())
        .ok_or_else(|| stage_bug(format!("no column {ADDED_BY}")))
}

/// One row per run, the newer version by [`supersedes`] (an add made later was read
/// later); catalog rows only of the add that brought that row.
fn newest_versions(staged: Batches) -> Result<Batches> {
    let exec = &staged.executions;
    let keys = rows(exec, &KEY).map_err(stage_bug)?;
    let version = exec
        .column_by_name(VERSION)
        .ok_or_else(|| stage_bug(format!("no column {VERSION}")))?
        .as_primitive::<TimestampMillisecondType>();
    let added = added_by(exec)?;
    let version = |i: usize| version.is_valid(i).then(|| version.value(i));
    // Of two rows of one run, the one that supersedes the other.
    let newer = |a: usize, b: usize| {
        let (later, earlier) = if added.value(a) >= added.value(b) {
            (a, b)
        } else {
            (b, a)
        };
        if supersedes(version(later), version(earlier)) {
            later
        } else {
            earlier
        }
    };
    // The row kept for each key; most keys are seen once.
    let mut winner: HashMap<&[u8], usize> = HashMap::with_capacity(exec.num_rows());
    let mut repeated = false;
    for i in 0..exec.num_rows() {
        match winner.entry(keys.row(i).data()) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(i);
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                repeated = true;
                let kept = newer(i, *o.get());
                o.insert(kept);
            }
        }
    }
    if !repeated {
        return Ok(staged);
    }
    let mut keep: Vec<u32> = winner.values().map(|&i| i as u32).collect();
    keep.sort_unstable();
    let chosen: HashMap<&[u8], u64> = winner.iter().map(|(k, &i)| (*k, added.value(i))).collect();
    let cat = &staged.catalog_registrations;
    let cat_keys = rows(cat, &KEY).map_err(stage_bug)?;
    let cat_added = added_by(cat)?;
    let mask: BooleanArray = (0..cat.num_rows())
        .map(|i| Some(chosen.get(cat_keys.row(i).data()) == Some(&cat_added.value(i))))
        .collect();
    Ok(Batches {
        executions: take_record_batch(exec, &UInt32Array::from(keep)).map_err(stage_bug)?,
        catalog_registrations: filter_record_batch(cat, &mask).map_err(stage_bug)?,
    })
}

#[cfg(test)]
mod tests;
