//! Staging: every flow's rows of a run, kept in local temporary Arrow IPC files and
//! indexed by (account, region, day), so memory stays bounded by the stage's budget
//! while reading, and by a batch per sorted run while a day is read back.
//!
//! Each time the rows in memory pass the budget they are split by day, sorted like
//! a day file and written as one segment (a sorted run of each day it touches); a
//! day is read back by merging its runs ([`StagedDay`]), never whole.
//!
//! Rows come in page by page. Each [`Stage::add`] is numbered, and the number is
//! staged with the rows (a column of the stage's own, never written to the export),
//! so that when a day is read back
//! - a run read twice (pages that shifted while they were read) is kept once, in its
//!   newest version (`last_updated_at`; on a tie, the one added last), with the
//!   catalog rows of that version only;
//! - the adds of a flow that failed half-way can be [`Stage::discard`]ed: none of
//!   its rows reach a day file.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, UInt64Array};
use arrow::compute::{concat_batches, max, min};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMillisecondType};
use chrono::DateTime;

use crate::error::{Error, Result};
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

/// Rows kept in memory before they are written to a segment file (sorting them for a
/// segment copies them once more).
const MEMORY_BUDGET: usize = 8 << 20;

/// Sorted runs of one day and level merged into one run of the next level.
const FAN_IN: usize = 8;

/// Pages added before they are compacted into one batch (see [`Stage::compact`]).
const COMPACT_EVERY: usize = 64;

/// What the rows of a staged entry hold in memory.
fn size_of(b: &Batches) -> usize {
    b.executions.get_array_memory_size() + b.catalog_registrations.get_array_memory_size()
}

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

/// The rows of a run, waiting to be merged into their day files. Rows are kept in
/// memory up to a budget; past it they are written to a segment (one Arrow IPC file
/// per table, one batch per partition), so memory stays bounded whatever the
/// history size and a day's rows are read back from a few files.
#[derive(Debug)]
pub struct Stage {
    /// Where the temporary folder is made (the system's temporary folder: `None`).
    parent: Option<PathBuf>,
    dir: Option<folder::Folder>,
    segments: usize,
    /// How many slices read each segment's files; a segment no slice reads any more
    /// (all its runs were merged into others) has its files removed.
    readers: BTreeMap<usize, usize>,
    slices: BTreeMap<PartitionKey, Vec<Slice>>,
    pending: Vec<Batches>,
    /// The first entry of `pending` that is a page, not compacted pages.
    compacted: usize,
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
    /// ([`MEMORY_BUDGET`] when `None`).
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
            readers: BTreeMap::new(),
            slices: BTreeMap::new(),
            pending: Vec::new(),
            compacted: 0,
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
        let dir = folder::Folder::make(&parent)?;
        self.dir = Some(dir);
        Ok(())
    }

    /// The stage's temporary folder, made now if it is not yet: day files are merged
    /// through temporary files there.
    pub(crate) fn scratch_dir(&mut self) -> Result<PathBuf> {
        self.make_dir()?;
        self.dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .ok_or_else(|| stage_bug("no staging folder"))
    }

    fn path(&self, segment: usize, table: Table) -> Result<PathBuf> {
        let dir = self
            .dir
            .as_ref()
            .ok_or_else(|| stage_bug("no staging folder"))?;
        Ok(segment_path(dir.path(), segment, table))
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
        self.pending_bytes += size_of(&staged);
        self.pending.push(staged);
        if self.pending.len() - self.compacted >= COMPACT_EVERY {
            self.compact()?;
        }
        if self.pending_bytes >= self.budget {
            self.spill()?;
        }
        Ok(id)
    }

    /// Copies the pages added since the last compaction into one batch per table: a
    /// page of a hundred rows holds a few times its data in buffers and their
    /// padding, so compacted rows fill the budget with more rows, and a day is
    /// spilled in fewer sorted runs.
    fn compact(&mut self) -> Result<()> {
        let pages = self.pending.split_off(self.compacted);
        let before: usize = pages.iter().map(size_of).sum();
        let (exec, cat): (Vec<_>, Vec<_>) = pages
            .into_iter()
            .map(|b| (b.executions, b.catalog_registrations))
            .unzip();
        let compacted = Batches {
            executions: concat(Table::Executions, exec)?,
            catalog_registrations: concat(Table::CatalogRegistrations, cat)?,
        };
        self.pending_bytes = self.pending_bytes - before + size_of(&compacted);
        self.pending.push(compacted);
        self.compacted = self.pending.len();
        Ok(())
    }

    /// Forgets the rows of these adds (a flow that failed after some of its pages
    /// were staged): [`Stage::read`] never returns them.
    pub fn discard(&mut self, adds: impl IntoIterator<Item = AddId>) {
        self.discarded.extend(adds.into_iter().map(|a| a.0));
    }

    /// The pending rows, split by partition, each part sorted.
    fn split_pending(&mut self) -> Result<Vec<(PartitionKey, Batches)>> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        // Each table's pages are dropped once sorted into one batch: an error from
        // here on stops the run anyway (see `add`).
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        self.compacted = 0;
        let (exec, cat): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .map(|b| (b.executions, b.catalog_registrations))
            .unzip();
        let exec_parts = by_partition(Table::Executions, &exec)?;
        drop(exec);
        let mut cat_parts: BTreeMap<PartitionKey, RecordBatch> =
            by_partition(Table::CatalogRegistrations, &cat)?
                .into_iter()
                .collect();
        let parts = exec_parts
            .into_iter()
            .map(|(key, executions)| {
                let catalog_registrations = cat_parts.remove(&key).unwrap_or_else(|| {
                    RecordBatch::new_empty(staged_schema(Table::CatalogRegistrations))
                });
                (
                    key,
                    Batches {
                        executions,
                        catalog_registrations,
                    },
                )
            })
            .collect();
        if let Some(orphan) = cat_parts.keys().next() {
            return Err(stage_bug(format!(
                "catalog rows of day {} have no execution rows",
                orphan.day
            )));
        }
        Ok(parts)
    }

    /// Writes the pending rows as one segment, then merges the runs of any day that
    /// holds [`FAN_IN`] of one level.
    fn spill(&mut self) -> Result<()> {
        let parts = self.split_pending()?;
        if parts.is_empty() {
            return Ok(());
        }
        self.make_dir()?;
        let (segment, mut exec, mut cat) = self.new_segment()?;
        let (mut exec_batches, mut cat_batches) = (0, 0);
        for (key, part) in parts {
            let executions = write_run(&mut exec, &part.executions, &mut exec_batches)?;
            let catalog_registrations =
                write_run(&mut cat, &part.catalog_registrations, &mut cat_batches)?;
            self.slices.entry(key).or_default().push(Slice {
                segment,
                level: 0,
                executions,
                catalog_registrations,
            });
            *self.readers.entry(segment).or_default() += 1;
        }
        exec.finish().map_err(stage_io)?;
        cat.finish().map_err(stage_io)?;
        tracing::debug!(segment, "staged rows written to a temporary segment");
        self.merge_full_levels()
    }

    /// While some day holds [`FAN_IN`] sorted runs of one level, merges them into one
    /// run of the next level (every row kept, with its add's number), the runs of all
    /// such days into one new segment, and removes the files no run reads any more.
    /// Runs are merged per day (as an LSM tree tiers its runs): a day is read back
    /// from at most `FAN_IN - 1` runs per level, levels grow with the logarithm of
    /// the day's rows, and a row is rewritten once per level of its own day only (a
    /// day staged in few runs is never rewritten). A segment's files stay until its
    /// last run is merged away, so the folder holds at most every row once per level.
    fn merge_full_levels(&mut self) -> Result<()> {
        loop {
            let full: Vec<(PartitionKey, u32)> = self
                .slices
                .iter()
                .filter_map(|(key, slices)| full_level(slices).map(|l| (key.clone(), l)))
                .collect();
            if full.is_empty() {
                return Ok(());
            }
            let dir = self
                .dir
                .as_ref()
                .map(|d| d.path().to_path_buf())
                .ok_or_else(|| stage_bug("no staging folder"))?;
            let (segment, mut exec, mut cat) = self.new_segment()?;
            let (mut exec_batches, mut cat_batches) = (0, 0);
            let mut merged_away = Vec::new();
            for (key, level) in &full {
                let slices = self
                    .slices
                    .get_mut(key)
                    .ok_or_else(|| stage_bug("a day without runs"))?;
                let (from, kept): (Vec<Slice>, Vec<Slice>) = std::mem::take(slices)
                    .into_iter()
                    .partition(|s| s.level == *level);
                *slices = kept;
                let runs = from.iter().map(|s| run_in(&dir, s)).collect::<Vec<_>>();
                let executions =
                    write_merged(&mut exec, &runs, Table::Executions, &mut exec_batches)?;
                let catalog_registrations = write_merged(
                    &mut cat,
                    &runs,
                    Table::CatalogRegistrations,
                    &mut cat_batches,
                )?;
                slices.push(Slice {
                    segment,
                    level: level + 1,
                    executions,
                    catalog_registrations,
                });
                *self.readers.entry(segment).or_default() += 1;
                merged_away.extend(from.iter().map(|s| s.segment));
            }
            exec.finish().map_err(stage_io)?;
            cat.finish().map_err(stage_io)?;
            tracing::debug!(segment, days = full.len(), "staged runs merged");
            for s in merged_away {
                let readers = self
                    .readers
                    .get_mut(&s)
                    .ok_or_else(|| stage_bug("a run of no segment"))?;
                *readers -= 1;
                if *readers == 0 {
                    self.readers.remove(&s);
                    for table in [Table::Executions, Table::CatalogRegistrations] {
                        match std::fs::remove_file(segment_path(&dir, s, table)) {
                            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                                return Err(stage_io(e));
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }

    /// A new segment's number and its two files, open for writing.
    fn new_segment(&mut self) -> Result<(usize, SegmentWriter, SegmentWriter)> {
        let segment = self.segments;
        self.segments += 1;
        let exec = writer(
            &self.path(segment, Table::Executions)?,
            &staged_schema(Table::Executions),
        )?;
        let cat = writer(
            &self.path(segment, Table::CatalogRegistrations)?,
            &staged_schema(Table::CatalogRegistrations),
        )?;
        Ok((segment, exec, cat))
    }

    /// The sorted run a slice is.
    fn run_of(&self, s: &Slice) -> Result<Run> {
        let dir = self
            .dir
            .as_ref()
            .ok_or_else(|| stage_bug("no staging folder"))?;
        Ok(run_in(dir.path(), s))
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

    /// The staged rows of one partition (call [`Stage::partitions`] first), to be read
    /// as sorted streams: see [`StagedDay`].
    pub fn day(&self, key: &PartitionKey) -> Result<StagedDay> {
        let mut runs = Vec::new();
        for s in self.slices.get(key).map(Vec::as_slice).unwrap_or_default() {
            runs.push(self.run_of(s)?);
        }
        let mut has_catalog = self
            .slices
            .get(key)
            .into_iter()
            .flatten()
            .any(|s| !s.catalog_registrations.is_empty());
        if let Some(part) = self.memory.get(key) {
            has_catalog |= part.catalog_registrations.num_rows() > 0;
            runs.push(Run::Memory(part.clone()));
        }
        Ok(StagedDay {
            runs,
            discarded: Arc::new(self.discarded.clone()),
            has_catalog,
        })
    }

    /// How many segments (sorted runs of the days they touch) were written (tests).
    #[cfg(test)]
    pub(crate) fn segments(&self) -> usize {
        self.segments
    }

    /// [`Stage::day`]'s rows, whole in memory (tests).
    #[cfg(test)]
    pub(crate) fn read(&self, key: &PartitionKey) -> Result<Batches> {
        let day = self.day(key)?;
        let all = |table: Table, rows: crate::sorted::Stream| -> Result<RecordBatch> {
            let parts = rows.collect::<Result<Vec<_>>>()?;
            concat_batches(&schema_for(table), &parts).map_err(stage_bug)
        };
        Ok(Batches {
            executions: all(Table::Executions, day.executions()?)?,
            catalog_registrations: all(Table::CatalogRegistrations, day.catalog()?)?,
        })
    }
}

mod day;
mod folder;
mod segment;

use day::Run;
pub use day::StagedDay;
use segment::{
    STAGED_BATCH_ROWS, SegmentWriter, Slice, by_partition, full_level, pieces, run_in,
    segment_path, write_merged, write_run, writer,
};

#[cfg(test)]
mod tests;
