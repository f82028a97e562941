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

/// The order of rows in a day file and in every stream merged into one.
pub(crate) const SORT_KEY: [&str; 3] = ["flow_name", "started_at", "execution_id"];

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

    /// Every column of `schema` but `skip`: what makes two versions of a row the same.
    pub(crate) fn content(schema: &SchemaRef, skip: Option<&str>) -> Result<Self> {
        let columns = (0..schema.fields().len())
            .filter(|&i| Some(schema.field(i).name().as_str()) != skip)
            .collect();
        Self::new(schema, columns)
    }

    fn encode(&self, batch: &RecordBatch) -> Result<Rows> {
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
/// `rows` rows.
pub(crate) struct Picked {
    batches: Vec<Arc<Loaded>>,
    indices: Vec<(usize, usize)>,
    rows: usize,
}

impl Picked {
    pub(crate) fn new(rows: usize) -> Self {
        Picked {
            batches: Vec::new(),
            indices: Vec::with_capacity(rows),
            rows: rows.max(1),
        }
    }

    pub(crate) fn push(&mut self, row: &Row) {
        let same_batch = self
            .batches
            .last()
            .is_some_and(|b| Arc::ptr_eq(b, &row.loaded));
        if !same_batch {
            self.batches.push(row.loaded.clone());
        }
        self.indices.push((self.batches.len() - 1, row.index));
    }

    /// Whether a batch's worth of rows is waiting.
    pub(crate) fn full(&self) -> bool {
        self.indices.len() >= self.rows
    }

    /// The rows picked so far, as one batch (`None`: none), projected to `columns`
    /// when given.
    pub(crate) fn take(&mut self, columns: Option<&[usize]>) -> Result<Option<RecordBatch>> {
        if self.indices.is_empty() {
            return Ok(None);
        }
        let batches: Vec<&RecordBatch> = self.batches.iter().map(|l| &l.batch).collect();
        let batch = interleave_record_batch(&batches, &self.indices)
            .map_err(|e| Error::bug("merging sorted rows", e))?;
        self.batches.clear();
        self.indices.clear();
        let batch = match columns {
            Some(cols) => batch
                .project(cols)
                .map_err(|e| Error::bug("merging sorted rows", e))?,
            None => batch,
        };
        Ok(Some(batch))
    }
}
