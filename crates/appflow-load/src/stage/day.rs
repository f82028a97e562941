//! A staged day read back: its sorted runs merged into one version of each run
//! (and that version's catalog rows), as streams sorted like the day file.

use std::collections::HashSet;
use std::fs::File;
use std::io::BufReader;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::UInt64Type;
use arrow::ipc::reader::FileReader;

use super::{ADDED_BY, STAGED_BATCH_ROWS, pieces, stage_bug, stage_io, staged_schema};
use crate::error::Result;
use crate::sorted::{Encoder, Input, Merge, Picked, Row, Stream};
use appflow_model::supersedes;
use appflow_transform::{Batches, Table, schema_for};

/// One sorted run of a partition: a segment's batches, or the rows left in memory.
#[derive(Clone, Debug)]
pub(super) enum Run {
    Segment {
        executions: (Arc<PathBuf>, Range<usize>),
        catalog_registrations: (Arc<PathBuf>, Range<usize>),
    },
    Memory(Batches),
}

impl Run {
    /// The run's rows of `table`, a batch at a time. A segment file is opened once
    /// per stream (its footer read once); a day is read from a few runs per level.
    pub(super) fn rows(&self, table: Table) -> Stream {
        match self {
            Run::Segment {
                executions,
                catalog_registrations,
            } => {
                let (path, batches) = match table {
                    Table::CatalogRegistrations => catalog_registrations.clone(),
                    _ => executions.clone(),
                };
                let mut reader: Option<FileReader<BufReader<File>>> = None;
                Box::new(batches.map(move |i| {
                    let r = match &mut reader {
                        Some(r) => r,
                        None => reader.insert(open_segment(&path)?),
                    };
                    read_batch(r, i)
                }))
            }
            Run::Memory(part) => {
                let batch = match table {
                    Table::CatalogRegistrations => &part.catalog_registrations,
                    _ => &part.executions,
                };
                Box::new(pieces(batch).map(Ok))
            }
        }
    }
}

/// A segment file, to read its batches.
fn open_segment(path: &std::path::Path) -> Result<FileReader<BufReader<File>>> {
    let file = File::open(path).map_err(stage_io)?;
    FileReader::try_new(BufReader::new(file), None).map_err(stage_io)
}

/// Batch `index` of a segment file.
fn read_batch(reader: &mut FileReader<BufReader<File>>, index: usize) -> Result<RecordBatch> {
    reader.set_index(index).map_err(stage_io)?;
    match reader.next() {
        Some(batch) => batch.map_err(stage_io),
        None => Err(stage_io("a staged batch is missing")),
    }
}

/// The staged rows of one day file, read back as streams sorted like the day file:
/// one version of each run (the newest by [`supersedes`]; on a tie, the one added
/// last), with the catalog rows of that version only, none of a discarded add.
/// Memory holds one batch per sorted run; each call reads the runs again (a write
/// that lost a race merges again).
#[derive(Clone, Debug)]
pub struct StagedDay {
    pub(super) runs: Vec<Run>,
    pub(super) discarded: Arc<HashSet<u64>>,
    /// Whether any catalog row was staged for the day (before versions are chosen).
    pub(super) has_catalog: bool,
}

impl StagedDay {
    /// Whether no catalog row was staged for this day (then [`StagedDay::catalog`] has none).
    pub(crate) fn has_no_catalog_rows(&self) -> bool {
        !self.has_catalog
    }

    /// Whether every staged row of the day was discarded (or none was staged).
    pub(crate) fn is_empty(&self) -> Result<bool> {
        Ok(self.executions()?.next().transpose()?.is_none())
    }

    /// The runs of the day, one row each, in the day file's order.
    pub(crate) fn executions(&self) -> Result<Stream> {
        Ok(Box::new(Newest::new(self, false)?))
    }

    /// The catalog rows of the versions [`StagedDay::executions`] returns, in the
    /// day file's order.
    pub(crate) fn catalog(&self) -> Result<Stream> {
        Ok(Box::new(Newest::new(self, true)?))
    }

    /// The runs' rows of `table`, without the rows of discarded adds.
    fn inputs(&self, table: Table) -> Result<Vec<Input>> {
        let content = Arc::new(Encoder::content(&staged_schema(table), None)?);
        Ok(self
            .runs
            .iter()
            .map(|run| {
                let discarded = self.discarded.clone();
                let rows = run.rows(table).map(move |b| without(&discarded, b?));
                Input {
                    rows: Box::new(rows),
                    content: content.clone(),
                    unsorted: Box::new(|| stage_bug("staged rows are out of order")),
                }
            })
            .collect())
    }
}

/// `batch` without the rows of the `discarded` adds.
fn without(discarded: &HashSet<u64>, batch: RecordBatch) -> Result<RecordBatch> {
    if discarded.is_empty() {
        return Ok(batch);
    }
    let added = added_by(&batch)?;
    let mask: BooleanArray = added
        .values()
        .iter()
        .map(|a| Some(!discarded.contains(a)))
        .collect();
    filter_record_batch(&batch, &mask).map_err(stage_bug)
}

pub(super) fn added_by(batch: &RecordBatch) -> Result<&arrow::array::PrimitiveArray<UInt64Type>> {
    batch
        .column_by_name(ADDED_BY)
        .map(|c| c.as_primitive::<UInt64Type>())
        .ok_or_else(|| stage_bug(format!("no column {ADDED_BY}")))
}

/// The newest version of each run of a day (or its catalog rows), merged from the
/// day's sorted runs.
struct Newest {
    merge: Merge,
    /// Inputs before this one are execution rows, the others catalog rows.
    catalog_from: usize,
    catalog: bool,
    picked: Picked,
    /// The table's columns, without the stage's.
    columns: Vec<usize>,
}

impl Newest {
    fn new(day: &StagedDay, catalog: bool) -> Result<Self> {
        let mut inputs = day.inputs(Table::Executions)?;
        let catalog_from = inputs.len();
        let table = if catalog {
            inputs.extend(day.inputs(Table::CatalogRegistrations)?);
            Table::CatalogRegistrations
        } else {
            Table::Executions
        };
        let width = schema_for(table).fields().len();
        Ok(Newest {
            merge: Merge::new(&staged_schema(Table::Executions), inputs)?,
            catalog_from,
            catalog,
            picked: Picked::new(STAGED_BATCH_ROWS),
            columns: (0..width).collect(),
        })
    }

    /// Adds the rows of the next run to `picked`; `false` when every run is read.
    fn pick_next(&mut self) -> Result<bool> {
        let Some(group) = self.merge.next_group()? else {
            return Ok(false);
        };
        let added = |row: &Row| -> Result<u64> { Ok(added_by(row.batch())?.value(row.index)) };
        // Of two versions of a run, the one added later wins unless it is older.
        let mut winner: Option<&Row> = None;
        for row in group.iter().filter(|r| r.input < self.catalog_from) {
            winner = Some(match winner {
                None => row,
                Some(w) => {
                    let (later, earlier) = if added(row)? >= added(w)? {
                        (row, w)
                    } else {
                        (w, row)
                    };
                    if supersedes(later.version()?, earlier.version()?) {
                        later
                    } else {
                        earlier
                    }
                }
            });
        }
        let Some(winner) = winner else {
            // Catalog rows of a run whose rows were all discarded.
            return Ok(true);
        };
        if self.catalog {
            let add = added(winner)?;
            for row in group.iter().filter(|r| r.input >= self.catalog_from) {
                if added(row)? == add {
                    self.picked.push(row);
                }
            }
        } else {
            self.picked.push(winner);
        }
        Ok(true)
    }
}

impl Iterator for Newest {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.picked.full() {
                return self.picked.take(Some(&self.columns)).transpose();
            }
            match self.pick_next() {
                Ok(true) => {}
                Ok(false) => return self.picked.take(Some(&self.columns)).transpose(),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
