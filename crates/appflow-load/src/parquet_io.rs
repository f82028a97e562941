//! Parquet <-> Arrow batches, with the settings of the data contract: whole files in
//! memory for small objects, and batch by batch from and to local files for day files.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, new_null_array};
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::ChunkReader;
use parquet::schema::types::ColumnPath;

use crate::error::BoxError;
use crate::update::check_version;
use appflow_transform::{SCHEMA_VERSION, SCHEMA_VERSION_KEY};

/// The codecs this build decompresses (the parquet crate's features): the day files'
/// own zstd, and what other tools that rewrite Parquet commonly use.
fn readable(codec: Compression) -> bool {
    matches!(
        codec,
        Compression::UNCOMPRESSED
            | Compression::ZSTD(_)
            | Compression::SNAPPY
            | Compression::LZ4
            | Compression::LZ4_RAW
            | Compression::GZIP(_)
    )
}

/// A data file compressed with a codec this build does not read.
#[derive(Debug)]
pub(crate) struct UnreadableCodec {
    pub codec: String,
}

impl std::fmt::Display for UnreadableCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "compressed with {}, which this build does not read",
            self.codec
        )
    }
}

impl std::error::Error for UnreadableCodec {}

/// Rows per row group of a data file: a merge streams a stored file row group by
/// row group, so memory follows this, never the rows of a day. The writer holds a row
/// group's encoders (a dictionary and a zstd context per column) until it is flushed:
/// at 8,192 rows a writer's peak is about a quarter of what 32,768 cost, and the files
/// came out smaller (BENCHMARKS.md, 2026-12-07).
pub(crate) const ROW_GROUP_ROWS: usize = 8_192;

/// zstd's level for data pages: level 1 compressed our pages smaller than level 3 did
/// (measured with every column dictionary-encoded, BENCHMARKS.md 2026-12-07) at less CPU.
const ZSTD_LEVEL: i32 = 1;

/// Columns whose values are nearly all distinct (ids, times, counts): a dictionary
/// would hold every value again and cost a hash lookup a value, so these are written
/// plain (zstd still compresses them). The others (names, statuses, messages, a
/// write's `exported_at`) repeat, and keep Parquet's default dictionary. Without the
/// dictionaries here the day files came out about a fifth smaller, with less CPU and
/// memory in the writer (BENCHMARKS.md, 2026-12-08).
const PLAIN_COLUMNS: [&str; 9] = [
    "execution_id",
    "started_at",
    "last_updated_at",
    "data_pull_start_time",
    "data_pull_end_time",
    "bytes_processed",
    "bytes_written",
    "records_processed",
    "duration_seconds",
];

/// Rows per batch read from a stored file.
pub(crate) const READ_BATCH_ROWS: usize = 1024;

/// The writer settings of the data contract: zstd, page statistics, the schema
/// version in the footer's key-value metadata, row groups of at most `row_group_rows`,
/// dictionaries where values repeat ([`PLAIN_COLUMNS`]).
/// Timestamps are written as INT64 TIMESTAMP(MILLIS, adjusted to UTC) because the
/// Arrow type is `Timestamp(ms, "UTC")`.
pub(crate) fn properties(
    schema: &SchemaRef,
    row_group_rows: usize,
) -> Result<WriterProperties, BoxError> {
    let kv = schema
        .metadata()
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    let mut builder = WriterProperties::builder();
    for name in PLAIN_COLUMNS {
        if schema.column_with_name(name).is_some() {
            builder = builder.set_column_dictionary_enabled(ColumnPath::from(name), false);
        }
    }
    Ok(builder
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_key_value_metadata(Some(kv))
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_created_by(concat!("appflow-export ", env!("CARGO_PKG_VERSION")).to_string())
        .build())
}

/// Encodes a batch as one Parquet file in memory (the flows table; tests).
pub fn encode(batch: &RecordBatch) -> Result<Bytes, BoxError> {
    let props = properties(&batch.schema(), ROW_GROUP_ROWS)?;
    let mut out = Vec::with_capacity(64 * 1024);
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(Bytes::from(out))
}

/// A Parquet file being written to a local temporary file, batch by batch.
pub(crate) struct FileSink {
    writer: ArrowWriter<BufWriter<File>>,
}

impl FileSink {
    pub(crate) fn create(
        path: &Path,
        schema: &SchemaRef,
        row_group_rows: usize,
    ) -> Result<Self, BoxError> {
        let file = File::create(path)?;
        let props = properties(schema, row_group_rows)?;
        let writer = ArrowWriter::try_new(BufWriter::new(file), schema.clone(), Some(props))?;
        Ok(FileSink { writer })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), BoxError> {
        Ok(self.writer.write(batch)?)
    }

    /// Writes the footer and flushes the file.
    pub(crate) fn finish(self) -> Result<(), BoxError> {
        let mut out = self.writer.into_inner()?;
        out.flush()?;
        Ok(())
    }
}

/// The batches of a Parquet file, each with exactly `schema`'s columns (see [`fit`]),
/// read `batch_rows` at a time: memory holds a batch and the pages it comes from,
/// never the file.
pub(crate) struct Reader {
    batches: ParquetRecordBatchReader,
    schema: SchemaRef,
    rows: i64,
}

impl Reader {
    /// A reader of `input` (a local file, or bytes in memory). A file whose footer
    /// names a schema version newer than this release's is refused (a newer-version
    /// error): merging it would drop the columns this release does not know.
    pub(crate) fn new<R: ChunkReader + 'static>(
        input: R,
        schema: &SchemaRef,
        batch_rows: usize,
    ) -> Result<Self, BoxError> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(input)?;
        let found = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|e| e.key == SCHEMA_VERSION_KEY))
            .and_then(|e| e.value.as_deref());
        check_version(found, SCHEMA_VERSION.parse()?)?;
        // (The version first: a newer release's file says to upgrade, whatever its
        // codec.) A file another tool rewrote (a compaction job, say) may use any codec: one
        // this build cannot decompress is named, not reported as a broken file.
        let codecs = builder
            .metadata()
            .row_groups()
            .iter()
            .flat_map(|g| g.columns().iter().map(|c| c.compression()));
        if let Some(codec) = codecs.into_iter().find(|c| !readable(*c)) {
            // `BROTLI(BrotliLevel(1))`: the codec's name is enough.
            let name = codec.to_string();
            let name = name.split('(').next().unwrap_or_default().to_string();
            return Err(Box::new(UnreadableCodec { codec: name }));
        }
        let rows = builder.metadata().file_metadata().num_rows();
        Ok(Reader {
            batches: builder.with_batch_size(batch_rows.max(1)).build()?,
            schema: schema.clone(),
            rows,
        })
    }

    /// The file's rows, as its footer counts them.
    pub(crate) fn rows(&self) -> i64 {
        self.rows
    }
}

impl Iterator for Reader {
    type Item = Result<RecordBatch, BoxError>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = self.batches.next()?;
        Some(
            batch
                .map_err(BoxError::from)
                .and_then(|b| fit(&b, &self.schema)),
        )
    }
}

/// The rows of `batch` with exactly `schema`'s columns: a nullable column missing
/// from an older file is filled with nulls; anything else that does not fit is an
/// error.
fn fit(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, BoxError> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(col) if col.data_type() == field.data_type() => Ok(col.clone()),
            Some(col) => Err(format!(
                "column {} is {}, expected {}",
                field.name(),
                col.data_type(),
                field.data_type()
            )),
            None if field.is_nullable() => Ok(new_null_array(field.data_type(), batch.num_rows())),
            None => Err(format!("column {} is missing", field.name())),
        })
        .collect::<Result<Vec<ArrayRef>, String>>()?;
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

/// Decodes a Parquet file in memory into one batch with exactly `schema`'s columns
/// (the flows table; tests). See [`Reader`].
pub fn decode(bytes: Bytes, schema: &SchemaRef) -> Result<RecordBatch, BoxError> {
    let batches = Reader::new(bytes, schema, 64 * 1024)?.collect::<Result<Vec<_>, _>>()?;
    Ok(arrow::compute::concat_batches(schema, &batches)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use appflow_model::ExecutionRecord;
    use appflow_model::testkit::flow;
    use appflow_transform::{executions_schema, to_batches};

    fn batch() -> RecordBatch {
        let rec = ExecutionRecord {
            max_page_size: Some(1000),
            ..ExecutionRecord::new("e1", 5)
        };
        to_batches(&flow("f"), &[rec], 9).unwrap().executions
    }

    #[test]
    fn round_trips_exactly() {
        let b = batch();
        assert_eq!(
            decode(encode(&b).unwrap(), &executions_schema()).unwrap(),
            b
        );
    }

    #[test]
    fn a_file_of_a_newer_schema_version_is_refused_as_newer() {
        let b = batch();
        let mut meta = b.schema().metadata().clone();
        meta.insert(SCHEMA_VERSION_KEY.to_string(), "99".to_string());
        let schema = Arc::new(b.schema().as_ref().clone().with_metadata(meta));
        let newer = RecordBatch::try_new(schema, b.columns().to_vec()).unwrap();
        let err = decode(encode(&newer).unwrap(), &executions_schema()).unwrap_err();
        let newer = err.downcast_ref::<crate::update::NewerVersion>();
        assert!(
            newer.is_some_and(|n| (n.found.as_str(), n.known) == ("99", 1)),
            "{err}"
        );
    }

    #[test]
    fn a_file_whose_schema_version_is_not_a_number_is_refused_as_another_release_s() {
        let b = batch();
        let mut meta = b.schema().metadata().clone();
        meta.insert(SCHEMA_VERSION_KEY.to_string(), "2.1".to_string());
        let schema = Arc::new(b.schema().as_ref().clone().with_metadata(meta));
        let odd = RecordBatch::try_new(schema, b.columns().to_vec()).unwrap();
        let err = decode(encode(&odd).unwrap(), &executions_schema()).unwrap_err();
        let newer = err.downcast_ref::<crate::update::NewerVersion>();
        assert!(newer.is_some_and(|n| n.found == "2.1"), "{err}");
    }

    #[test]
    fn an_older_file_without_a_nullable_column_reads_with_nulls() {
        let b = batch();
        let older = b
            .project(
                &(0..b.num_columns())
                    .filter(|&i| b.schema().field(i).name() != "max_page_size")
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        let read = decode(encode(&older).unwrap(), &executions_schema()).unwrap();
        assert_eq!(read.num_columns(), b.num_columns());
        assert!(read.column_by_name("max_page_size").unwrap().is_null(0));
    }

    #[test]
    fn a_file_without_a_required_column_is_refused_by_name() {
        let b = batch();
        let broken = b
            .project(&(1..b.num_columns()).collect::<Vec<_>>())
            .unwrap();
        let err = decode(encode(&broken).unwrap(), &executions_schema())
            .unwrap_err()
            .to_string();
        assert!(err.contains("account_id"), "{err}");
    }
}
