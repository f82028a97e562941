//! Staging: every flow's rows of a run, kept in local temporary Arrow IPC files and
//! indexed by (account, region, day), so memory stays bounded by one flow's rows
//! while reading and one day's rows while merging.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::{SchemaRef, TimestampMillisecondType};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
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

impl PartitionKey {
    /// `executions/dt=2026-11-25/123456789012_us-east-1.parquet`.
    pub fn object_key(&self, table: Table) -> String {
        format!(
            "{}/dt={}/{}_{}.parquet",
            table.name(),
            self.day,
            self.account_id,
            self.region
        )
    }
}

/// The UTC date of an epoch-millisecond timestamp.
pub(crate) fn day_of(millis: i64) -> Result<String> {
    DateTime::from_timestamp_millis(millis)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .ok_or(Error::BadTimestamp { millis })
}

/// Where one slice of rows is: file number and batch index per table.
#[derive(Clone, Copy, Debug)]
struct Slice {
    file: usize,
    executions: usize,
    catalog: usize,
}

/// The rows of a run, waiting to be merged into their day files.
#[derive(Debug)]
pub struct Stage {
    dir: tempfile::TempDir,
    files: usize,
    slices: BTreeMap<PartitionKey, Vec<Slice>>,
    rows: u64,
}

fn stage_err<E: Into<Box<dyn std::error::Error + Send + Sync>>>(e: E) -> Error {
    Error::stage(e)
}

/// Groups the rows of `batch` by partition (as computed from its `account_id`,
/// `region` and `started_at` columns), in first-seen order.
fn group(batch: &RecordBatch) -> Result<BTreeMap<PartitionKey, Vec<u32>>> {
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| stage_err(format!("no column {name}")))
    };
    let account = col("account_id")?.as_string::<i32>();
    let region = col("region")?.as_string::<i32>();
    let started = col("started_at")?.as_primitive::<TimestampMillisecondType>();
    let mut groups: BTreeMap<PartitionKey, Vec<u32>> = BTreeMap::new();
    let mut last: Option<(i64, PartitionKey)> = None;
    for i in 0..batch.num_rows() {
        let ms = started.value(i);
        // Consecutive rows are usually on the same day: reuse the last key.
        let day_start = ms.div_euclid(86_400_000);
        let key = match &last {
            Some((d, k))
                if *d == day_start
                    && k.account_id == account.value(i)
                    && k.region == region.value(i) =>
            {
                k.clone()
            }
            _ => {
                let k = PartitionKey {
                    account_id: account.value(i).to_string(),
                    region: region.value(i).to_string(),
                    day: day_of(ms)?,
                };
                last = Some((day_start, k.clone()));
                k
            }
        };
        groups.entry(key).or_default().push(i as u32);
    }
    Ok(groups)
}

fn writer(path: &PathBuf, schema: &SchemaRef) -> Result<FileWriter<BufWriter<File>>> {
    let file = File::create(path).map_err(stage_err)?;
    FileWriter::try_new(BufWriter::new(file), schema).map_err(stage_err)
}

impl Stage {
    /// A stage in a new temporary folder (removed when the stage is dropped).
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("appflow-export-stage-")
            .tempdir()
            .map_err(stage_err)?;
        Ok(Stage {
            dir,
            files: 0,
            slices: BTreeMap::new(),
            rows: 0,
        })
    }

    fn path(&self, file: usize, table: Table) -> PathBuf {
        self.dir
            .path()
            .join(format!("{file:06}-{}.arrow", table.name()))
    }

    /// Adds the rows of some runs (typically one flow's), split by partition.
    pub fn add(&mut self, batches: &Batches) -> Result<()> {
        if batches.executions.num_rows() == 0 {
            return Ok(());
        }
        let file = self.files;
        self.files += 1;
        let exec_groups = group(&batches.executions)?;
        let cat_groups = group(&batches.catalog_registrations)?;
        if let Some(orphan) = cat_groups.keys().find(|k| !exec_groups.contains_key(*k)) {
            return Err(stage_err(format!(
                "catalog rows of day {} have no execution rows",
                orphan.day
            )));
        }
        let mut exec_writer = writer(
            &self.path(file, Table::Executions),
            &schema_for(Table::Executions),
        )?;
        let mut cat_writer = writer(
            &self.path(file, Table::CatalogRegistrations),
            &schema_for(Table::CatalogRegistrations),
        )?;
        for (n, (key, rows)) in exec_groups.iter().enumerate() {
            let slice = take_record_batch(&batches.executions, &UInt32Array::from(rows.clone()))
                .map_err(stage_err)?;
            exec_writer.write(&slice).map_err(stage_err)?;
            let cat_rows = cat_groups.get(key).cloned().unwrap_or_default();
            let cat =
                take_record_batch(&batches.catalog_registrations, &UInt32Array::from(cat_rows))
                    .map_err(stage_err)?;
            cat_writer.write(&cat).map_err(stage_err)?;
            self.slices.entry(key.clone()).or_default().push(Slice {
                file,
                executions: n,
                catalog: n,
            });
        }
        exec_writer.finish().map_err(stage_err)?;
        cat_writer.finish().map_err(stage_err)?;
        self.rows += batches.executions.num_rows() as u64;
        Ok(())
    }

    /// Execution rows staged so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The partitions that have rows, in order.
    pub fn partitions(&self) -> impl Iterator<Item = &PartitionKey> {
        self.slices.keys()
    }

    /// Every staged row of one partition: (executions, catalog_registrations).
    pub fn read(&self, key: &PartitionKey) -> Result<Batches> {
        let slices = self.slices.get(key).map(Vec::as_slice).unwrap_or_default();
        let read_table = |table: Table, index: fn(&Slice) -> usize| -> Result<RecordBatch> {
            let schema = schema_for(table);
            let mut parts = Vec::with_capacity(slices.len());
            for s in slices {
                let file = File::open(self.path(s.file, table)).map_err(stage_err)?;
                let mut reader =
                    FileReader::try_new(BufReader::new(file), None).map_err(stage_err)?;
                reader.set_index(index(s)).map_err(stage_err)?;
                match reader.next() {
                    Some(batch) => parts.push(batch.map_err(stage_err)?),
                    None => return Err(stage_err("a staged batch is missing")),
                }
            }
            concat_batches(&schema, &parts).map_err(stage_err)
        };
        Ok(Batches {
            executions: read_table(Table::Executions, |s| s.executions)?,
            catalog_registrations: read_table(Table::CatalogRegistrations, |s| s.catalog)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(day_of(0).unwrap(), "1970-01-01");
        assert_eq!(day_of(1_795_553_667_564).unwrap(), "2026-11-24");
        assert_eq!(day_of(86_400_000 - 1).unwrap(), "1970-01-01");
        assert_eq!(day_of(-1).unwrap(), "1969-12-31");
        assert!(day_of(i64::MAX).is_err());
    }
}
