//! Sorted streams of rows read side by side (a k-way merge): the stage's sorted runs
//! of one day, and a stored day file beside the rows a run brought.
//!
//! Every stream is in the order of the data contract, (flow_name, started_at,
//! execution_id); rows are compared in Arrow's row format (bytes that compare like
//! the values). Memory holds one batch per stream, whatever the rows of a day.
//!
//! Within one account and region (one day file), the sort key is the merge key: a
//! run's `started_at` never changes (it is also what names its day).

use std::sync::{Arc, OnceLock};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::interleave_record_batch;
use arrow::datatypes::{SchemaRef, TimestampMillisecondType};
use arrow::row::{RowConverter, Rows, SortField};

use crate::error::{Error, Result};
use appflow_model::supersedes;
use appflow_transform::Table;

/// The order of rows in a day file and in every stream merged into one.
pub(crate) const SORT_KEY: [&str; 3] = ["flow_name", "started_at", "execution_id"];

/// The order of a table's rows in a day file: [`SORT_KEY`], and a run's catalog rows
/// by their ordinal after it.
pub(crate) fn order_of(table: Table) -> &'static [&'static str] {
    const CATALOG: [&str; 4] = ["flow_name", "started_at", "execution_id", "ordinal"];
    match table {
        Table::CatalogRegistrations => &CATALOG,
        _ => &SORT_KEY,
    }
}

/// The version of a run's row: the newer one wins ([`supersedes`]).
pub(crate) const VERSION: &str = "last_updated_at";

/// Batches of rows in [`SORT_KEY`] order.
pub(crate) type Stream = Box<dyn Iterator<Item = Result<RecordBatch>> + Send>;

/// Column positions of `names` in `schema`.
fn positions(schema: &SchemaRef, names: &[&str]) -> Result<Vec<usize>> {
    names
        .iter()
        .map(|n| {
            schema
                .index_of(n)
                .map_err(|e| Error::bug("merging sorted rows", e))
        })
        .collect()
}

/// Row-format encodings of some columns of batches of one schema: equal bytes iff
/// equal values, and bytes compare like the values.
/// Columns are found by name in each batch, so batches of different tables that
/// share the key columns (executions and catalog rows) compare by one encoder.
pub(crate) struct Encoder {
    converter: RowConverter,
    columns: Vec<String>,
}

impl Encoder {
    fn new(schema: &SchemaRef, columns: Vec<usize>) -> Result<Self> {
        let fields = columns
            .iter()
            .map(|&i| SortField::new(schema.field(i).data_type().clone()))
            .collect();
        let converter =
            RowConverter::new(fields).map_err(|e| Error::bug("merging sorted rows", e))?;
        let columns = columns
            .iter()
            .map(|&i| schema.field(i).name().clone())
            .collect();
        Ok(Encoder { converter, columns })
    }

    /// The sort key of `schema`'s rows.
    pub(crate) fn sort_key(schema: &SchemaRef) -> Result<Self> {
        Self::new(schema, positions(schema, &SORT_KEY)?)
    }

    /// The columns of [`order_of`] `table` in `schema`'s rows.
    pub(crate) fn order(schema: &SchemaRef, table: Table) -> Result<Self> {
        Self::new(schema, positions(schema, order_of(table))?)
    }

    /// Every column of `schema` but `skip`: what makes two versions of a row the same.
    pub(crate) fn content(schema: &SchemaRef, skip: Option<&str>) -> Result<Self> {
        let columns = (0..schema.fields().len())
            .filter(|&i| Some(schema.field(i).name().as_str()) != skip)
            .collect();
        Self::new(schema, columns)
    }

    pub(crate) fn encode(&self, batch: &RecordBatch) -> Result<Rows> {
        let cols =
            self.columns
                .iter()
                .map(|name| {
                    batch.column_by_name(name).cloned().ok_or_else(|| {
                        Error::bug("merging sorted rows", format!("no column {name}"))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
        self.converter
            .convert_columns(&cols)
            .map_err(|e| Error::bug("merging sorted rows", e))
    }
}

/// One input of a [`Merge`].
pub(crate) struct Input {
    pub rows: Stream,
    /// Compares two rows' contents (inputs whose rows are compared share one).
    pub content: Arc<Encoder>,
    /// The error for rows that come out of order.
    pub unsorted: Box<dyn Fn() -> Error + Send>,
}

/// A batch as read from an input, with its rows' contents encoded when first asked.
struct Loaded {
    batch: RecordBatch,
    content: OnceLock<std::result::Result<Rows, String>>,
    encoder: Arc<Encoder>,
}

/// One row of an input, as a [`Merge`] hands it out.
#[derive(Clone)]
pub(crate) struct Row {
    /// The input it came from (its position in [`Merge::new`]'s list).
    pub input: usize,
    loaded: Arc<Loaded>,
    pub index: usize,
}

impl Row {
    pub(crate) fn batch(&self) -> &RecordBatch {
        &self.loaded.batch
    }

    /// The row's `last_updated_at`.
    pub(crate) fn version(&self) -> Result<Option<i64>> {
        let col = self
            .batch()
            .column_by_name(VERSION)
            .ok_or_else(|| Error::bug("merging sorted rows", format!("no column {VERSION}")))?
            .as_primitive::<TimestampMillisecondType>();
        Ok(col.is_valid(self.index).then(|| col.value(self.index)))
    }

    /// Whether two rows hold the same content (the columns their inputs compare).
    pub(crate) fn same(&self, other: &Row) -> Result<bool> {
        Ok(self.content()?.row(self.index) == other.content()?.row(other.index))
    }

    /// Whether this row is a newer version than `other` with a different content.
    pub(crate) fn replaces(&self, other: &Row) -> Result<bool> {
        Ok(supersedes(self.version()?, other.version()?) && !self.same(other)?)
    }

    fn content(&self) -> Result<&Rows> {
        let l = &self.loaded;
        l.content
            .get_or_init(|| l.encoder.encode(&l.batch).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::bug("comparing rows", e.clone()))
    }
}

struct Cursor {
    rows: Stream,
    loaded: Arc<Loaded>,
    keys: Rows,
    index: usize,
    content: Arc<Encoder>,
    unsorted: Box<dyn Fn() -> Error + Send>,
}

/// Reads sorted inputs side by side, a key at a time. The next key is found by
/// comparing each input's current key in place: inputs are few (a day file and the
/// staged rows; a day's sorted runs, at most 7 per level of the stage), and no key is
/// copied but the one being taken.
pub(crate) struct Merge {
    cursors: Vec<Option<Cursor>>,
    keys: Encoder,
    /// The key being taken (reused: no allocation per row).
    key: Vec<u8>,
}

impl Merge {
    /// A merge of `inputs`, all of `schema` (the key columns at least).
    pub(crate) fn new(schema: &SchemaRef, inputs: Vec<Input>) -> Result<Self> {
        let mut merge = Merge {
            cursors: Vec::with_capacity(inputs.len()),
            keys: Encoder::sort_key(schema)?,
            key: Vec::new(),
        };
        for input in inputs {
            let cursor = merge.first(input)?;
            merge.cursors.push(cursor);
        }
        Ok(merge)
    }

    /// The input's first non-empty batch, as a cursor on its first row.
    fn first(&self, mut input: Input) -> Result<Option<Cursor>> {
        let Some(batch) = next_rows(&mut input.rows)? else {
            return Ok(None);
        };
        let keys = self.keys.encode(&batch)?;
        Ok(Some(Cursor {
            loaded: Arc::new(Loaded {
                batch,
                content: OnceLock::new(),
                encoder: input.content.clone(),
            }),
            keys,
            index: 0,
            rows: input.rows,
            content: input.content,
            unsorted: input.unsorted,
        }))
    }

    /// The rows of the next key, from every input, in input order (and in each
    /// input's order); `None` when every input is read.
    pub(crate) fn next_group(&mut self) -> Result<Option<Vec<Row>>> {
        let mut smallest: Option<&[u8]> = None;
        for cursor in self.cursors.iter().flatten() {
            let key = cursor.keys.row(cursor.index).data();
            if smallest.is_none_or(|s| key < s) {
                smallest = Some(key);
            }
        }
        let Some(smallest) = smallest else {
            return Ok(None);
        };
        self.key.clear();
        self.key.extend_from_slice(smallest);
        let mut group = Vec::with_capacity(2);
        for i in 0..self.cursors.len() {
            self.take(i, &mut group)?;
        }
        Ok(Some(group))
    }

    /// Takes every row of the current key from input `i`, if its cursor is on one.
    fn take(&mut self, i: usize, group: &mut Vec<Row>) -> Result<()> {
        loop {
            let Some(cursor) = self.cursors[i].as_mut() else {
                return Ok(());
            };
            if cursor.keys.row(cursor.index).data() != self.key.as_slice() {
                return Ok(());
            }
            group.push(Row {
                input: i,
                loaded: cursor.loaded.clone(),
                index: cursor.index,
            });
            cursor.index += 1;
            if cursor.index == cursor.keys.num_rows() {
                match next_rows(&mut cursor.rows)? {
                    Some(batch) => {
                        cursor.keys = self.keys.encode(&batch)?;
                        cursor.loaded = Arc::new(Loaded {
                            batch,
                            content: OnceLock::new(),
                            encoder: cursor.content.clone(),
                        });
                        cursor.index = 0;
                    }
                    None => {
                        self.cursors[i] = None;
                        return Ok(());
                    }
                }
            }
            if cursor.keys.row(cursor.index).data() < self.key.as_slice() {
                return Err((cursor.unsorted)());
            }
        }
    }
}

/// Batches a [`read_ahead`] stream holds ready for its reader.
const READ_AHEAD_BATCHES: usize = 2;

/// `rows` read on a thread of its own, up to [`READ_AHEAD_BATCHES`] batches ahead of
/// its reader, so that a day's staged runs are merged while the merged rows are
/// encoded (two cores busy on one day file, with one day file's memory). Dropping the
/// stream stops the thread at its next batch; a panic there is an error of the stream,
/// never its end. When no thread can be started the stream is read where it is.
pub(crate) fn read_ahead(rows: Stream) -> Stream {
    let (tx, rx) = std::sync::mpsc::sync_channel(READ_AHEAD_BATCHES);
    let shared = Arc::new(std::sync::Mutex::new(Some(rows)));
    let source = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("read-ahead".into())
        .spawn(move || {
            let Some(rows) = source.lock().ok().and_then(|mut r| r.take()) else {
                let _ = tx.send(Err(Error::bug(
                    "reading rows ahead",
                    "the rows were not there",
                )));
                return;
            };
            for item in rows {
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    return;
                }
            }
        });
    match spawned {
        Ok(thread) => Box::new(ReadAhead {
            rx: Some(rx),
            thread: Some(thread),
        }),
        Err(e) => {
            tracing::debug!(error = %e, "no thread to read ahead: rows read in place");
            match shared.lock().ok().and_then(|mut r| r.take()) {
                Some(rows) => rows,
                None => Box::new(std::iter::once(Err(Error::bug(
                    "reading rows ahead",
                    "the rows went to a thread that never started",
                )))),
            }
        }
    }
}

/// The reader's end of [`read_ahead`].
struct ReadAhead {
    rx: Option<std::sync::mpsc::Receiver<Result<RecordBatch>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Iterator for ReadAhead {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.rx.as_ref()?.recv() {
            Ok(item) => Some(item),
            // The thread ended: every batch was sent, or it panicked.
            Err(_) => match self.thread.take()?.join() {
                Ok(()) => None,
                Err(_) => Some(Err(Error::bug(
                    "reading rows ahead",
                    "the thread reading them panicked",
                ))),
            },
        }
    }
}

impl Drop for ReadAhead {
    /// Stops the thread and waits for it (at most the batch it is making), so that it
    /// never reads the stage's files after its reader is gone.
    fn drop(&mut self) {
        self.rx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The next batch of `rows` that has rows.
fn next_rows(rows: &mut Stream) -> Result<Option<RecordBatch>> {
    for batch in rows.by_ref() {
        let batch = batch?;
        if batch.num_rows() > 0 {
            return Ok(Some(batch));
        }
    }
    Ok(None)
}

/// Rows picked one at a time from inputs' batches, handed on as batches of about
/// `rows` rows. Rows picked in a row from one batch (the usual case: runs and files
/// rarely interleave finely) are handed on as a slice of it, not copied.
pub(crate) struct Picked {
    batches: Vec<Arc<Loaded>>,
    indices: Vec<(usize, usize)>,
    rows: usize,
    /// Whether the rows picked since the last take are consecutive rows of one batch.
    consecutive: bool,
    /// Consecutive rows handed on as a slice when the next row broke the run.
    ready: Option<RecordBatch>,
}

impl Picked {
    pub(crate) fn new(rows: usize) -> Self {
        Picked {
            batches: Vec::new(),
            indices: Vec::with_capacity(rows),
            rows: rows.max(1),
            consecutive: true,
            ready: None,
        }
    }

    pub(crate) fn push(&mut self, row: &Row) {
        let same_batch = self
            .batches
            .last()
            .is_some_and(|b| Arc::ptr_eq(b, &row.loaded));
        let next = same_batch
            && self
                .indices
                .last()
                .is_some_and(|&(_, i)| i + 1 == row.index);
        if self.consecutive && !self.indices.is_empty() && !next {
            // A run of rows long enough to stand as a batch of its own goes on as a
            // slice; a short one is copied with the rows after it.
            if self.ready.is_none() && self.indices.len() >= self.rows / 8 {
                self.ready = self.slice();
                self.batches.clear();
                self.indices.clear();
            } else {
                self.consecutive = false;
            }
        }
        if self.batches.is_empty() || !same_batch {
            self.batches.push(row.loaded.clone());
        }
        self.indices.push((self.batches.len() - 1, row.index));
    }

    /// The rows picked, consecutive rows of one batch, as a slice of it.
    fn slice(&self) -> Option<RecordBatch> {
        let (&(_, first), batch) = (self.indices.first()?, self.batches.first()?);
        Some(batch.batch.slice(first, self.indices.len()))
    }

    /// Whether a batch's worth of rows is waiting.
    pub(crate) fn full(&self) -> bool {
        self.ready.is_some() || self.indices.len() >= self.rows
    }

    /// The next batch of rows picked (`None`: none is waiting), projected to
    /// `columns` when given; call it until `None` once every row is picked.
    pub(crate) fn take(&mut self, columns: Option<&[usize]>) -> Result<Option<RecordBatch>> {
        let batch = match self.ready.take() {
            Some(batch) => batch,
            None if self.indices.is_empty() => return Ok(None),
            None => {
                let batch = if self.consecutive {
                    self.slice()
                        .ok_or_else(|| Error::bug("merging sorted rows", "no rows picked"))?
                } else {
                    let batches: Vec<&RecordBatch> =
                        self.batches.iter().map(|l| &l.batch).collect();
                    interleave_record_batch(&batches, &self.indices)
                        .map_err(|e| Error::bug("merging sorted rows", e))?
                };
                self.batches.clear();
                self.indices.clear();
                self.consecutive = true;
                batch
            }
        };
        let batch = match columns {
            Some(cols) => batch
                .project(cols)
                .map_err(|e| Error::bug("merging sorted rows", e))?,
            None => batch,
        };
        Ok(Some(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn batch(flow: &str, started: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("flow_name", DataType::Utf8, false),
            Field::new(
                "started_at",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
            Field::new("execution_id", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let n = started.clone().count();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![flow; n])),
                Arc::new(TimestampMillisecondArray::from_iter_values(started.clone())),
                Arc::new(StringArray::from_iter_values(
                    started.clone().map(|s| format!("{s:04}")),
                )),
                Arc::new(Int64Array::from_iter_values(started)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rows_read_ahead_come_whole_in_order_and_a_panic_is_an_error_not_their_end() {
        let batches: Vec<RecordBatch> = (0..10).map(|i| batch("a", i * 5..i * 5 + 5)).collect();
        let read: Vec<RecordBatch> = read_ahead(Box::new(batches.clone().into_iter().map(Ok)))
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(read, batches);

        // An error is handed on and ends the stream.
        let failing = vec![
            Ok(batches[0].clone()),
            Err(Error::bug("test", "broken")),
            Ok(batches[1].clone()),
        ];
        let read: Vec<Result<RecordBatch>> = read_ahead(Box::new(failing.into_iter())).collect();
        assert_eq!(read.len(), 2);
        assert!(read[1].is_err());

        // A reader thread that panics half-way: the rows read so far, then an error.
        let first = batches[0].clone();
        let panicking = (0..3).map(move |i| {
            assert!(i < 1, "a bug while reading staged rows");
            Ok(first.clone())
        });
        let read: Vec<Result<RecordBatch>> = read_ahead(Box::new(panicking)).collect();
        assert_eq!(read.len(), 2, "one batch, then the panic as an error");
        assert!(
            read[1].as_ref().is_err_and(
                |e| format!("{e} {:?}", std::error::Error::source(e)).contains("panicked")
            ),
            "{read:?}"
        );

        // A reader that stops early stops the thread, and waits for it.
        struct Endless(RecordBatch, Arc<std::sync::atomic::AtomicBool>);
        impl Iterator for Endless {
            type Item = Result<RecordBatch>;
            fn next(&mut self) -> Option<Self::Item> {
                Some(Ok(self.0.clone()))
            }
        }
        impl Drop for Endless {
            fn drop(&mut self) {
                self.1.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut stream = read_ahead(Box::new(Endless(batches[0].clone(), ended.clone())));
        assert!(stream.next().is_some());
        drop(stream);
        assert!(
            ended.load(std::sync::atomic::Ordering::SeqCst),
            "the thread outlived its reader"
        );
    }

    fn input(batches: Vec<RecordBatch>) -> Input {
        let schema = batches[0].schema();
        Input {
            rows: Box::new(batches.into_iter().map(Ok)),
            content: Arc::new(Encoder::content(&schema, None).unwrap()),
            unsorted: Box::new(|| Error::bug("test", "unsorted")),
        }
    }

    #[test]
    fn picked_rows_come_out_whole_and_in_order_as_slices_or_copies() {
        // Long runs of one batch (slices), then rows that alternate (copies).
        let a = input(vec![batch("a", 0..40), batch("c", 0..10)]);
        let b = input(vec![batch("b", 0..30), batch("c", 0..10).slice(0, 5)]);
        let c = input(vec![batch("c", 100..105)]);
        let mut merge = Merge::new(&batch("a", 0..1).schema(), vec![a, b, c]).unwrap();
        let mut picked = Picked::new(16);
        let mut out = Vec::new();
        while let Some(group) = merge.next_group().unwrap() {
            // A whole group before taking, as a merge that keeps several rows does.
            // Some rows are left out (an older version), as a merge leaves them.
            for row in group.iter().filter(|r| r.input != 1 || r.index % 3 != 2) {
                picked.push(row);
            }
            if picked.full() {
                out.extend(picked.take(None).unwrap());
            }
        }
        while let Some(batch) = picked.take(None).unwrap() {
            out.push(batch);
        }
        let all = arrow::compute::concat_batches(&out[0].schema(), &out).unwrap();
        let flows = all.column(0).as_string::<i32>();
        let n = all.column(3).as_primitive::<arrow::datatypes::Int64Type>();
        let got: Vec<(String, i64)> = (0..all.num_rows())
            .map(|i| (flows.value(i).to_string(), n.value(i)))
            .collect();
        let mut want: Vec<(String, i64)> = (0..40).map(|i| ("a".to_string(), i)).collect();
        want.extend((0..30).filter(|i| i % 3 != 2).map(|i| ("b".to_string(), i)));
        // Rows of one key, from several inputs, in input order.
        want.extend((0..10).flat_map(|i| {
            let both = if i < 5 && i % 3 != 2 { 2 } else { 1 };
            std::iter::repeat_n(("c".to_string(), i), both)
        }));
        want.extend((100..105).map(|i| ("c".to_string(), i)));
        assert_eq!(got, want);
        assert!(
            out.iter().all(|b| b.num_rows() <= 16),
            "no batch is over size"
        );
    }
}
