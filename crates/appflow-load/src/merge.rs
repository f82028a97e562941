//! Copy-on-write merge of one day file with the rows a run brought, streamed: the
//! stored file (a local temporary copy) and the run's staged rows are read side by
//! side in the file's order ([`Merge`]), and the new file is written to a temporary
//! file from the first row that differs on; memory holds a few batches, whatever
//! the rows of the day.
//!
//! `executions` is keyed by (flow_name, started_at, execution_id) within its account
//! and region: the newer version wins ([`supersedes`]: stored rows were read before
//! this run's); a version whose content equals the stored row keeps the stored row,
//! `exported_at` included, so a run with nothing new changes no byte.
//! `catalog_registrations` follows its execution: the rows of each execution whose
//! current version (in the executions file as stored when the catalog file is
//! written) came, or equals what came, from this run are replaced by this run's rows.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::row::{RowConverter, Rows, SortField};

use crate::error::{Error, Result};
use crate::parquet_io::{FileSink, READ_BATCH_ROWS, Reader};
use crate::sorted::{Encoder, Input, Merge, Picked, Row, Stream};
use crate::update::decode_error;
use appflow_model::supersedes;
use appflow_transform::{Table, schema_for};

const FIRST_WRITTEN: &str = "exported_at";
const DATA_FILE: &str = "Parquet file of this export";

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

/// A day file as stored (a local copy), where it is, and its table.
#[derive(Clone, Copy)]
pub(crate) struct Stored<'a> {
    pub path: &'a Path,
    pub location: &'a str,
    pub table: Table,
}

impl Stored<'_> {
    /// The stored rows, batch by batch. A decoder that panics on the file's bytes (a
    /// damaged file) is a corrupt object, not a bug of ours.
    fn reader(&self) -> Result<Reader> {
        let file = File::open(self.path).map_err(|e| crate::store::local_file(self.path, e))?;
        let schema = schema_for(self.table);
        guarded(self.location, || {
            Reader::new(file, &schema, READ_BATCH_ROWS)
        })
    }

    /// [`Stored::reader`] as a stream.
    fn rows(&self) -> Result<Stream> {
        let mut reader = self.reader()?;
        let location = self.location.to_string();
        Ok(Box::new(std::iter::from_fn(move || {
            guarded(&location, || reader.next().transpose()).transpose()
        })))
    }

    /// Whether the file has no rows (read from its footer).
    pub(crate) fn is_empty(&self) -> Result<bool> {
        Ok(self.reader()?.rows() == 0)
    }

    fn input(&self, content: &Arc<Encoder>) -> Result<Input> {
        let location = self.location.to_string();
        Ok(Input {
            rows: self.rows()?,
            content: content.clone(),
            unsorted: Box::new(move || {
                Error::Corrupt {
                location: location.clone(),
                what: DATA_FILE,
                source: "its rows are not sorted by flow_name, started_at and execution_id, as the data contract says".into(),
            }
            }),
        })
    }
}

/// Runs a decoder on stored bytes; its errors and panics name the object.
fn guarded<T>(
    location: &str,
    decode: impl FnOnce() -> std::result::Result<T, crate::error::BoxError>,
) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode))
        .unwrap_or_else(|_| Err("its decoder failed on its bytes (a damaged file)".into()))
        .map_err(|source| decode_error(location.to_string(), DATA_FILE, source))
}

fn no_rows(content: &Arc<Encoder>) -> Input {
    Input {
        rows: Box::new(std::iter::empty()),
        content: content.clone(),
        unsorted: Box::new(|| Error::bug("merging a day file", "an empty input")),
    }
}

fn staged(rows: Stream, content: &Arc<Encoder>) -> Input {
    Input {
        rows,
        content: content.clone(),
        unsorted: Box::new(|| Error::bug("merging a day file", "staged rows are out of order")),
    }
}

/// The new version of a day file, written to a local temporary file from the first
/// row that differs from the stored file on: until then the merge only counts the
/// stored rows it keeps, and a merge that changes nothing writes nothing.
pub(crate) struct Output<'a> {
    path: &'a Path,
    table: Table,
    stored: Option<Stored<'a>>,
    row_group_rows: usize,
    /// Stored rows kept, in order, while nothing changed.
    kept: usize,
    sink: Option<FileSink>,
    picked: Picked,
}

impl<'a> Output<'a> {
    pub(crate) fn new(
        path: &'a Path,
        table: Table,
        stored: Option<Stored<'a>>,
        row_group_rows: usize,
    ) -> Self {
        Output {
            path,
            table,
            stored,
            row_group_rows,
            kept: 0,
            sink: None,
            picked: Picked::new(READ_BATCH_ROWS),
        }
    }

    fn sink_error(&self, e: impl std::fmt::Display) -> Error {
        Error::stage(format!("temporary file {}: {e}", self.path.display()))
    }

    /// The stored file's next row goes on as it is.
    fn keep(&mut self, row: &Row) -> Result<()> {
        if self.sink.is_none() {
            self.kept += 1;
            return Ok(());
        }
        self.push(row)
    }

    /// A row that is not the stored file's next one: the file changes.
    fn add(&mut self, row: &Row) -> Result<()> {
        self.change()?;
        self.push(row)
    }

    fn push(&mut self, row: &Row) -> Result<()> {
        self.picked.push(row);
        if self.picked.full() {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the next batch picked; `false`: none was waiting.
    fn flush(&mut self) -> Result<bool> {
        let Some(batch) = self.picked.take(None)? else {
            return Ok(false);
        };
        let sink = self
            .sink
            .as_mut()
            .ok_or_else(|| Error::bug("merging a day file", "no output file"))?;
        sink.write(&batch)
            .map_err(|e| Error::stage(format!("temporary file: {e}")))?;
        Ok(true)
    }

    /// From now on rows are written: the file starts with the stored rows kept so far.
    fn change(&mut self) -> Result<()> {
        if self.sink.is_some() {
            return Ok(());
        }
        let schema: SchemaRef = schema_for(self.table);
        let mut sink = FileSink::create(self.path, &schema, self.row_group_rows)
            .map_err(|e| self.sink_error(e))?;
        if let (Some(stored), true) = (self.stored, self.kept > 0) {
            let mut left = self.kept;
            for batch in stored.rows()? {
                let batch = batch?;
                let n = left.min(batch.num_rows());
                sink.write(&batch.slice(0, n))
                    .map_err(|e| self.sink_error(e))?;
                left -= n;
                if left == 0 {
                    break;
                }
            }
            if left > 0 {
                return Err(Error::bug(
                    "merging a day file",
                    "the stored file has fewer rows than were kept",
                ));
            }
        }
        self.sink = Some(sink);
        Ok(())
    }

    /// Ends the file: `true` when it was written (the day file changes).
    pub(crate) fn finish(mut self) -> Result<bool> {
        if self.sink.is_none() {
            return Ok(false);
        }
        while self.flush()? {}
        let path = self.path;
        if let Some(sink) = self.sink.take() {
            sink.finish()
                .map_err(|e| Error::stage(format!("temporary file {}: {e}", path.display())))?;
        }
        Ok(true)
    }
}

/// A day file that is not stored yet: this run's rows (one version of each run,
/// sorted) are the file, written to `out` as they come, without a merge. `false`: no
/// rows and `when_empty` false, no file. Rows out of the file's order (a bug of the
/// stage) fail here, before any file is stored.
pub(crate) fn write_new(
    table: Table,
    rows: Stream,
    out: &Path,
    row_group_rows: usize,
    when_empty: bool,
) -> Result<bool> {
    let sink_error = |e| Error::stage(format!("temporary file {}: {e}", out.display()));
    let create = || FileSink::create(out, &schema_for(table), row_group_rows).map_err(sink_error);
    let mut order = Ascending::new(table)?;
    let mut sink = None;
    for batch in rows {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        order.check(&batch)?;
        let sink = match &mut sink {
            Some(s) => s,
            None => sink.insert(create()?),
        };
        sink.write(&batch).map_err(sink_error)?;
    }
    let sink = match sink {
        Some(s) => s,
        None if when_empty => create()?,
        None => return Ok(false),
    };
    sink.finish().map_err(sink_error)?;
    Ok(true)
}

/// Checks that rows come in the strictly ascending order of their table
/// ([`crate::sorted::order_of`]), batch after batch.
struct Ascending {
    keys: Encoder,
    last: Option<arrow::row::OwnedRow>,
}

impl Ascending {
    fn new(table: Table) -> Result<Self> {
        Ok(Ascending {
            keys: Encoder::order(&schema_for(table), table)?,
            last: None,
        })
    }

    fn check(&mut self, batch: &RecordBatch) -> Result<()> {
        let keys = self.keys.encode(batch)?;
        let mut previous = self.last.as_ref().map(|r| r.row());
        for row in keys.iter() {
            if previous.is_some_and(|p| p >= row) {
                return Err(Error::bug(
                    "writing a day file",
                    "staged rows are out of order or repeated",
                ));
            }
            previous = Some(row);
        }
        self.last = previous.map(|r| r.owned());
        Ok(())
    }
}

/// Merges this run's execution rows (one version of each run, sorted) into a day
/// file, writing the new file to `out`. `false`: the stored file is up to date (or,
/// with none stored, no rows came).
pub(crate) fn merge_executions(
    stored: Option<Stored<'_>>,
    incoming: Stream,
    out: &Path,
    row_group_rows: usize,
) -> Result<bool> {
    let Some(stored) = stored else {
        return write_new(Table::Executions, incoming, out, row_group_rows, false);
    };
    let stored = Some(stored);
    let schema = schema_for(Table::Executions);
    let content = Arc::new(Encoder::content(&schema, Some(FIRST_WRITTEN))?);
    let stored_input = match &stored {
        Some(s) => s.input(&content)?,
        None => no_rows(&content),
    };
    const STORED: usize = 0;
    let mut merge = Merge::new(&schema, vec![stored_input, staged(incoming, &content)])?;
    let mut output = Output::new(out, Table::Executions, stored, row_group_rows);
    while let Some(rows) = merge.next_group()? {
        // Stored rows first, then this run's; the newest different version wins.
        let mut winner = &rows[0];
        for row in &rows[1..] {
            if row.replaces(winner)? {
                winner = row;
            }
        }
        if rows.iter().filter(|r| r.input == STORED).count() > 1 {
            // A run stored twice: the file changes, whichever row is kept.
            output.change()?;
        }
        if winner.input == STORED {
            output.keep(winner)?;
        } else {
            output.add(winner)?;
        }
    }
    output.finish()
}

/// Merges this run's catalog rows into a day file, writing the new file to `out`:
/// for every execution whose row in `executions` (the executions file as stored
/// now) is this run's version, or holds the same content, the stored catalog rows are
/// replaced by this run's. `false`: the stored file is up to date. A day without a
/// stored catalog file gets one, with no rows when none of its runs registered
/// anything.
pub(crate) fn merge_catalog(
    executions: Option<Stored<'_>>,
    incoming_executions: Stream,
    stored: Option<Stored<'_>>,
    incoming: Stream,
    out: &Path,
    row_group_rows: usize,
) -> Result<bool> {
    // The inputs: the executions file as stored now, this run's executions, the
    // stored catalog rows, this run's catalog rows.
    const CURRENT: usize = 0;
    const MINE: usize = 1;
    const STORED: usize = 2;
    const NEW: usize = 3;
    let exec_content = Arc::new(Encoder::content(
        &schema_for(Table::Executions),
        Some(FIRST_WRITTEN),
    )?);
    let cat_content = Arc::new(Encoder::content(
        &schema_for(Table::CatalogRegistrations),
        None,
    )?);
    let inputs = vec![
        match &executions {
            Some(e) => e.input(&exec_content)?,
            None => no_rows(&exec_content),
        },
        staged(incoming_executions, &exec_content),
        match &stored {
            Some(s) => s.input(&cat_content)?,
            None => no_rows(&cat_content),
        },
        staged(incoming, &cat_content),
    ];
    let mut merge = Merge::new(&schema_for(Table::Executions), inputs)?;
    let mut output = Output::new(out, Table::CatalogRegistrations, stored, row_group_rows);
    while let Some(rows) = merge.next_group()? {
        let of = |input: usize| rows.iter().filter(move |r| r.input == input);
        let (stored_rows, new_rows): (Vec<&Row>, Vec<&Row>) =
            (of(STORED).collect(), of(NEW).collect());
        if stored_rows.is_empty() && new_rows.is_empty() {
            continue;
        }
        let mut now: Option<&Row> = None;
        for row in of(CURRENT) {
            let newer = match now {
                None => true,
                Some(w) => row.replaces(w)?,
            };
            if newer {
                now = Some(row);
            }
        }
        let current = match (of(MINE).next(), now) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(mine), Some(now)) => {
                supersedes(mine.version()?, now.version()?) || mine.same(now)?
            }
        };
        let unchanged = !current
            || (stored_rows.len() == new_rows.len()
                && stored_rows
                    .iter()
                    .zip(&new_rows)
                    .try_fold(true, |all, (a, b)| Ok::<_, Error>(all && a.same(b)?))?);
        if unchanged {
            for row in stored_rows {
                output.keep(row)?;
            }
        } else {
            output.change()?;
            for row in new_rows {
                output.add(row)?;
            }
        }
    }
    if stored.is_none() {
        output.change()?;
    }
    output.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use appflow_model::testkit::flow;
    use appflow_transform::to_batches;

    /// The executions rows of runs `ids` (started in that order, a second apart).
    fn executions(ids: &[&str]) -> RecordBatch {
        let records: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(n, id)| {
                let started = 1_700_000_000_000 + 1000 * n as i64;
                appflow_model::testkit::run(id, started, "Successful", started)
            })
            .collect();
        to_batches(&flow("f"), &records, 1).unwrap().executions
    }

    /// An error and its causes.
    fn chain(e: &Error) -> String {
        let source = std::error::Error::source(e).map(ToString::to_string);
        format!("{e}: {}", source.unwrap_or_default())
    }

    fn stream(batches: Vec<RecordBatch>) -> Stream {
        Box::new(batches.into_iter().map(Ok))
    }

    #[test]
    fn a_new_file_is_written_only_with_rows_unless_asked_and_only_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("day.parquet");
        let empty = stream(vec![RecordBatch::new_empty(schema_for(Table::Executions))]);
        assert!(!write_new(Table::Executions, empty, &out, 10, false).unwrap());
        assert!(!out.exists(), "no rows, no file");
        let empty = stream(Vec::new());
        assert!(write_new(Table::CatalogRegistrations, empty, &out, 10, true).unwrap());
        assert!(out.exists(), "a catalog file with no rows, when asked");

        let sorted = stream(vec![
            executions(&["a", "b"]),
            executions(&["c"]).slice(0, 0),
        ]);
        assert!(write_new(Table::Executions, sorted, &out, 10, false).unwrap());
        // Out of order across batches (the second starts before the first ends), and
        // a run twice in one batch.
        let batch = executions(&["a", "b"]);
        let unsorted = stream(vec![batch.slice(1, 1), batch.slice(0, 1)]);
        let err = write_new(Table::Executions, unsorted, &out, 10, false).unwrap_err();
        assert!(chain(&err).contains("out of order"), "{err}");
        let twice = concat_batches(&batch.schema(), [&batch.slice(0, 1), &batch.slice(0, 1)]);
        let err = write_new(
            Table::Executions,
            stream(vec![twice.unwrap()]),
            &out,
            10,
            false,
        )
        .unwrap_err();
        assert!(chain(&err).contains("repeated"), "{err}");
    }
}
