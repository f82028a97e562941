//! Segments: the stage's rows written to its folder, one Arrow IPC file per table,
//! each holding a sorted run of every day it touches (a [`Slice`] says where), and
//! the merges of a day's runs into one run of the next level.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Int32Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::compute::interleave_record_batch;
use arrow::datatypes::{Int32Type, SchemaRef, TimestampMillisecondType};
use arrow::ipc::writer::FileWriter;

use super::day::Run;
use super::{FAN_IN, PartitionKey, day_of, stage_bug, stage_io, staged_schema};
use crate::error::Result;
use crate::sorted::{Encoder, Input, Merge, Picked};
use appflow_transform::Table;

/// Where one partition's rows of a segment are: the segment, and the batches of each
/// table's file that hold them (a sorted run, [`STAGED_BATCH_ROWS`] rows a batch).
#[derive(Clone, Debug)]
pub(super) struct Slice {
    pub(super) segment: usize,
    /// 0: written from memory; n: merged from runs of level n - 1.
    pub(super) level: u32,
    pub(super) executions: Range<usize>,
    pub(super) catalog_registrations: Range<usize>,
}

/// Rows per batch of a staged run: a day is read back one batch per run at a time.
pub(super) const STAGED_BATCH_ROWS: usize = 256;

/// The rows of `batches` sorted by partition (its `account_id`, `region` and the day
/// of its `started_at`), then as its table's runs are stored, copied once into one
/// batch; each partition's rows are a slice of it.
pub(super) fn by_partition(
    table: Table,
    batches: &[RecordBatch],
) -> Result<Vec<(PartitionKey, RecordBatch)>> {
    let order = partition_order(table, batches)?;
    if order.is_empty() {
        return Ok(Vec::new());
    }
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    let sorted = interleave_record_batch(&refs, &order).map_err(stage_bug)?;
    let col = |name: &str| -> Result<arrow::array::ArrayRef> {
        sorted
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| stage_bug(format!("no column {name}")))
    };
    let (account, region, started) = (col("account_id")?, col("region")?, col("started_at")?);
    let (account, region, started) = (
        account.as_string::<i32>(),
        region.as_string::<i32>(),
        started.as_primitive::<TimestampMillisecondType>(),
    );
    let day = |i: usize| started.value(i).div_euclid(86_400_000);
    let mut parts = Vec::new();
    let mut first = 0;
    for i in 1..=sorted.num_rows() {
        let same = i < sorted.num_rows()
            && day(i) == day(first)
            && account.value(i) == account.value(first)
            && region.value(i) == region.value(first);
        if !same {
            let key = PartitionKey {
                account_id: account.value(first).to_string(),
                region: region.value(first).to_string(),
                day: day_of(started.value(first))?,
            };
            parts.push((key, sorted.slice(first, i - first)));
            first = i;
        }
    }
    Ok(parts)
}

/// The columns of one batch that order its rows.
struct OrderColumns<'a> {
    account: &'a StringArray,
    region: &'a StringArray,
    flow: &'a StringArray,
    id: &'a StringArray,
    started: &'a TimestampMillisecondArray,
    ordinal: Option<&'a Int32Array>,
}

impl<'a> OrderColumns<'a> {
    fn of(table: Table, batch: &'a RecordBatch) -> Result<Self> {
        let string = |name: &str| -> Result<&'a StringArray> {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| stage_bug(format!("no string column {name}")))
        };
        let ordinal = match table {
            Table::CatalogRegistrations => Some(
                batch
                    .column_by_name("ordinal")
                    .and_then(|c| c.as_primitive_opt::<Int32Type>())
                    .ok_or_else(|| stage_bug("no column ordinal"))?,
            ),
            _ => None,
        };
        Ok(OrderColumns {
            account: string("account_id")?,
            region: string("region")?,
            flow: string("flow_name")?,
            id: string("execution_id")?,
            started: batch
                .column_by_name("started_at")
                .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>())
                .ok_or_else(|| stage_bug("no column started_at"))?,
            ordinal,
        })
    }

    fn started(&self, i: usize) -> Option<i64> {
        self.started.is_valid(i).then(|| self.started.value(i))
    }

    fn ordinal(&self, i: usize) -> Option<i32> {
        self.ordinal.and_then(|o| o.is_valid(i).then(|| o.value(i)))
    }
}

/// The (batch, row) order that sorts the rows of `batches` by partition, then as a
/// day file's rows ([`crate::sorted::order_of`] the table), strings by their bytes. The strings of a flow's identity are ranked once, so most
/// comparisons are of integers; the sort is stable and finds the runs already in
/// order (each page comes newest-first, a reversed run).
fn partition_order(table: Table, batches: &[RecordBatch]) -> Result<Vec<(usize, usize)>> {
    let columns = batches
        .iter()
        .map(|b| OrderColumns::of(table, b))
        .collect::<Result<Vec<_>>>()?;
    let rows: Vec<(usize, usize)> = batches
        .iter()
        .enumerate()
        .flat_map(|(b, batch)| (0..batch.num_rows()).map(move |r| (b, r)))
        .collect();
    let place = ranks(
        rows.iter()
            .map(|&(b, r)| (text(columns[b].account, r), text(columns[b].region, r)))
            .collect(),
    );
    let flows = ranks(
        rows.iter()
            .map(|&(b, r)| text(columns[b].flow, r))
            .collect(),
    );
    let keys: Vec<(usize, Option<i64>, usize, Option<i64>)> = rows
        .iter()
        .enumerate()
        .map(|(i, &(b, r))| {
            let ms = columns[b].started(r);
            (
                place[i],
                ms.map(|ms| ms.div_euclid(86_400_000)),
                flows[i],
                ms,
            )
        })
        .collect();
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&x, &y| {
        let ((bx, rx), (by, ry)) = (rows[x], rows[y]);
        let (cx, cy) = (&columns[bx], &columns[by]);
        keys[x]
            .cmp(&keys[y])
            .then_with(|| text(cx.id, rx).cmp(&text(cy.id, ry)))
            .then_with(|| cx.ordinal(rx).cmp(&cy.ordinal(ry)))
    });
    Ok(order.into_iter().map(|i| rows[i]).collect())
}

/// Row `i` of a string column.
fn text(a: &StringArray, i: usize) -> Option<&str> {
    a.is_valid(i).then(|| a.value(i))
}

/// Each value's rank among the distinct values (equal values, equal ranks).
fn ranks<T: Ord + Clone>(values: Vec<T>) -> Vec<usize> {
    let mut distinct = values.clone();
    distinct.sort_unstable();
    distinct.dedup();
    values
        .iter()
        .map(|v| distinct.binary_search(v).unwrap_or_else(|at| at))
        .collect()
}

pub(super) type SegmentWriter = FileWriter<BufWriter<File>>;

pub(super) fn writer(path: &PathBuf, schema: &SchemaRef) -> Result<SegmentWriter> {
    let file = File::create(path).map_err(stage_io)?;
    FileWriter::try_new(BufWriter::new(file), schema).map_err(stage_io)
}

/// The lowest level at which a day holds [`FAN_IN`] runs.
pub(super) fn full_level(slices: &[Slice]) -> Option<u32> {
    let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
    for s in slices {
        *counts.entry(s.level).or_default() += 1;
    }
    counts
        .into_iter()
        .find(|(_, n)| *n >= FAN_IN)
        .map(|(level, _)| level)
}

/// The file of one table of a segment.
pub(super) fn segment_path(dir: &Path, segment: usize, table: Table) -> PathBuf {
    dir.join(format!("{segment:06}-{}.arrow", table.name()))
}

/// The sorted run a slice of a segment in `dir` is.
pub(super) fn run_in(dir: &Path, s: &Slice) -> Run {
    Run::Segment {
        executions: (
            Arc::new(segment_path(dir, s.segment, Table::Executions)),
            s.executions.clone(),
        ),
        catalog_registrations: (
            Arc::new(segment_path(dir, s.segment, Table::CatalogRegistrations)),
            s.catalog_registrations.clone(),
        ),
    }
}

/// Writes the rows of `runs` of `table`, merged in order (every row), as batches of
/// [`STAGED_BATCH_ROWS`] rows; returns their indexes in the file, counting on from
/// `next`.
pub(super) fn write_merged(
    writer: &mut FileWriter<BufWriter<File>>,
    runs: &[Run],
    table: Table,
    next: &mut usize,
) -> Result<Range<usize>> {
    let schema = staged_schema(table);
    let content = Arc::new(Encoder::content(&schema, None)?);
    let inputs = runs
        .iter()
        .map(|run| Input {
            rows: run.rows(table),
            content: content.clone(),
            unsorted: Box::new(|| stage_bug("staged rows are out of order")),
        })
        .collect();
    let mut merge = Merge::new(&schema, inputs)?;
    let mut picked = Picked::new(STAGED_BATCH_ROWS);
    let first = *next;
    let mut write = |picked: &mut Picked| -> Result<bool> {
        let Some(batch) = picked.take(None)? else {
            return Ok(false);
        };
        writer.write(&batch).map_err(stage_io)?;
        *next += 1;
        Ok(true)
    };
    while let Some(group) = merge.next_group()? {
        for row in &group {
            picked.push(row);
            if picked.full() {
                write(&mut picked)?;
            }
        }
    }
    while write(&mut picked)? {}
    Ok(first..*next)
}

/// Writes `batch` (a sorted run) as batches of [`STAGED_BATCH_ROWS`] rows; returns
/// their indexes in the file, counting on from `next`.
pub(super) fn write_run(
    writer: &mut FileWriter<BufWriter<File>>,
    batch: &RecordBatch,
    next: &mut usize,
) -> Result<Range<usize>> {
    let first = *next;
    for piece in pieces(batch) {
        writer.write(&piece).map_err(stage_io)?;
        *next += 1;
    }
    Ok(first..*next)
}

/// `batch` in slices of at most [`STAGED_BATCH_ROWS`] rows (none when it is empty).
pub(super) fn pieces(batch: &RecordBatch) -> impl Iterator<Item = RecordBatch> + Send + 'static {
    let batch = batch.clone();
    (0..batch.num_rows())
        .step_by(STAGED_BATCH_ROWS)
        .map(move |at| batch.slice(at, STAGED_BATCH_ROWS.min(batch.num_rows() - at)))
}
