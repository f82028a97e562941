//! Copy-on-write merge of one day file with the rows a run brought.
//!
//! `executions` is keyed by (account_id, region, flow_name, execution_id): the
//! newer version wins ([`supersedes`]: stored rows were read before this run's); a version whose content equals
//! the stored row keeps the stored row, `exported_at` included, so a run with
//! nothing new changes no byte. `catalog_registrations` follows its execution: the
//! rows of each execution whose current version came (or equals what came) from
//! this run are replaced by this run's rows.

use std::collections::{HashMap, HashSet};

use appflow_model::supersedes;
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::{
    SortColumn, concat_batches, filter_record_batch, lexsort_to_indices, take_record_batch,
};
use arrow::datatypes::TimestampMillisecondType;
use arrow::error::ArrowError;
use arrow::row::{RowConverter, Rows, SortField};

pub(crate) const KEY: [&str; 4] = ["account_id", "region", "flow_name", "execution_id"];
pub(crate) const VERSION: &str = "last_updated_at";
const FIRST_WRITTEN: &str = "exported_at";

/// Executions whose stored rows must equal this run's (their catalog rows follow).
pub(crate) type KeySet = HashSet<Vec<u8>>;

pub(crate) fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, ArrowError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| ArrowError::SchemaError(format!("no column {name}")))
}

/// Row-format encodings of the given columns: equal bytes iff equal values.
pub(crate) fn rows(batch: &RecordBatch, names: &[&str]) -> Result<Rows, ArrowError> {
    let cols = names
        .iter()
        .map(|n| column(batch, n).cloned())
        .collect::<Result<Vec<_>, _>>()?;
    let fields = cols
        .iter()
        .map(|c| SortField::new(c.data_type().clone()))
        .collect();
    RowConverter::new(fields)?.convert_columns(&cols)
}

fn key_rows(batch: &RecordBatch) -> Result<Rows, ArrowError> {
    rows(batch, &KEY)
}

fn content_rows(batch: &RecordBatch, skip: Option<&str>) -> Result<Rows, ArrowError> {
    let schema = batch.schema();
    let names: Vec<&str> = schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|n| Some(*n) != skip)
        .collect();
    rows(batch, &names)
}

pub(crate) fn concat(
    existing: Option<&RecordBatch>,
    incoming: &RecordBatch,
) -> Result<(RecordBatch, usize), ArrowError> {
    match existing {
        Some(old) => Ok((
            concat_batches(&incoming.schema(), [old, incoming])?,
            old.num_rows(),
        )),
        None => Ok((incoming.clone(), 0)),
    }
}

/// Sorts by the given columns (flow, start time, ...), as files are stored.
pub(crate) fn sorted(batch: &RecordBatch, by: &[&str]) -> Result<RecordBatch, ArrowError> {
    let columns = by
        .iter()
        .map(|n| {
            Ok(SortColumn {
                values: column(batch, n)?.clone(),
                options: None,
            })
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    let order = lexsort_to_indices(&columns, None)?;
    take_record_batch(batch, &order)
}

/// The outcome of merging an executions day file.
pub(crate) struct MergedExecutions {
    /// The new file content; `None` when the stored file is already up to date.
    pub batch: Option<RecordBatch>,
    /// Executions whose stored row now equals this run's newest version.
    pub current: KeySet,
}

/// Merges this run's execution rows into a day file's rows.
pub(crate) fn merge_executions(
    existing: Option<&RecordBatch>,
    incoming: &RecordBatch,
) -> Result<MergedExecutions, ArrowError> {
    let (all, n_old) = concat(existing, incoming)?;
    let keys = key_rows(&all)?;
    let version_col = column(&all, VERSION)?.as_primitive::<TimestampMillisecondType>();
    let version = |i: usize| version_col.is_valid(i).then(|| version_col.value(i));

    // First pass: group rows by key. Row contents are compared only where keys
    // collide (a run read again); a day of new runs needs no comparison at all.
    let mut rows_of: HashMap<&[u8], Vec<usize>> = HashMap::with_capacity(all.num_rows());
    for i in 0..all.num_rows() {
        rows_of.entry(keys.row(i).data()).or_default().push(i);
    }
    let collisions = rows_of.values().any(|rows| rows.len() > 1);
    let content = if collisions {
        Some(content_rows(&all, Some(FIRST_WRITTEN))?)
    } else {
        None
    };
    let same =
        |a: usize, b: usize| a == b || content.as_ref().is_some_and(|c| c.row(a) == c.row(b));

    let mut keep = Vec::with_capacity(rows_of.len());
    let mut current = KeySet::with_capacity(incoming.num_rows());
    let mut changed = false;
    for (key, rows) in &rows_of {
        // Rows are in order: stored rows first, then this run's, as read.
        let mut winner = rows[0];
        let mut newest_incoming = None;
        for &i in rows {
            if i >= n_old && newest_incoming.is_none_or(|j| supersedes(version(i), version(j))) {
                newest_incoming = Some(i);
            }
            if i != winner && supersedes(version(i), version(winner)) && !same(i, winner) {
                winner = i;
            }
        }
        changed |= winner >= n_old;
        if newest_incoming.is_some_and(|j| same(winner, j)) {
            current.insert(key.to_vec());
        }
        keep.push(winner as u32);
    }
    let batch = if changed {
        keep.sort_unstable();
        let merged = take_record_batch(&all, &UInt32Array::from(keep))?;
        Some(sorted(
            &merged,
            &["flow_name", "started_at", "execution_id"],
        )?)
    } else {
        None
    };
    Ok(MergedExecutions { batch, current })
}

/// The executions whose stored row equals this run's newest version, among those
/// that have catalog rows stored or coming: the only ones the catalog merge asks about.
pub(crate) fn current_with_catalog(
    stored_exec: Option<&RecordBatch>,
    incoming_exec: &RecordBatch,
    stored_cat: Option<&RecordBatch>,
    incoming_cat: &RecordBatch,
) -> Result<KeySet, ArrowError> {
    let mut wanted = KeySet::new();
    for batch in stored_cat.into_iter().chain([incoming_cat]) {
        let keys = key_rows(batch)?;
        wanted.extend((0..batch.num_rows()).map(|i| keys.row(i).data().to_vec()));
    }
    let only_wanted = |batch: &RecordBatch| -> Result<RecordBatch, ArrowError> {
        let keys = key_rows(batch)?;
        let mask: BooleanArray = (0..batch.num_rows())
            .map(|i| Some(wanted.contains(keys.row(i).data())))
            .collect();
        filter_record_batch(batch, &mask)
    };
    let stored = stored_exec.map(only_wanted).transpose()?;
    Ok(merge_executions(stored.as_ref(), &only_wanted(incoming_exec)?)?.current)
}

/// Merges this run's catalog rows into a day file's rows: for every execution in
/// `current`, the stored rows are replaced by this run's. `None`: nothing changes.
pub(crate) fn merge_catalog(
    existing: Option<&RecordBatch>,
    incoming: &RecordBatch,
    current: &KeySet,
) -> Result<Option<RecordBatch>, ArrowError> {
    let (all, n_old) = concat(existing, incoming)?;
    let keys = key_rows(&all)?;
    let replaced = |i: usize| current.contains(keys.row(i).data());
    let (mut keep, mut dropped, mut added) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..all.num_rows() {
        match (i < n_old, replaced(i)) {
            (true, false) => keep.push(i as u32),
            (true, true) => dropped.push(i),
            (false, true) => {
                keep.push(i as u32);
                added.push(i);
            }
            (false, false) => {}
        }
    }
    // Row contents are compared only when stored rows would be replaced.
    let unchanged = if dropped.is_empty() || added.is_empty() {
        dropped.is_empty() && added.is_empty()
    } else {
        let content = content_rows(&all, None)?;
        let mut before: Vec<_> = dropped.iter().map(|&i| content.row(i)).collect();
        let mut after: Vec<_> = added.iter().map(|&i| content.row(i)).collect();
        before.sort();
        after.sort();
        before == after
    };
    if unchanged {
        return Ok(None);
    }
    let merged = take_record_batch(&all, &UInt32Array::from(keep))?;
    Ok(Some(sorted(
        &merged,
        &["flow_name", "started_at", "execution_id", "ordinal"],
    )?))
}
