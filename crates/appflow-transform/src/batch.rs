//! Records to batches.

use std::sync::Arc;

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use appflow_model::{ExecutionRecord, FlowInfo, RegistrationOutput, is_finished, supersedes};
use arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::record_batch::RecordBatch;

use crate::schema::{catalog_schema, executions_schema};
use crate::{Error, Result};

/// The rows of both tables for some runs.
#[derive(Clone, Debug)]
pub struct Batches {
    pub executions: RecordBatch,
    pub catalog_registrations: RecordBatch,
}

/// A timestamp column of `n` rows. Every builder is sized to its rows: a page's batch
/// then holds what its rows need, not a builder's default capacity (the stage counts
/// what batches hold).
fn ts(n: usize) -> TimestampMillisecondBuilder {
    TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC")
}

/// Flattens one flow's runs into rows, `exported_at` (epoch ms) stamped on each.
pub fn to_batches(
    flow: &FlowInfo,
    records: &[ExecutionRecord],
    exported_at: i64,
) -> Result<Batches> {
    let once = each_run_once(records);
    let records = once.as_deref().unwrap_or(records);
    let n = records.len();
    let constant = |v: &str| {
        let mut b = StringBuilder::with_capacity(n, n * v.len());
        (0..n).for_each(|_| b.append_value(v));
        Arc::new(b.finish()) as ArrayRef
    };
    let strings = |f: &dyn Fn(&ExecutionRecord) -> Option<&str>| {
        Arc::new(records.iter().map(f).collect::<arrow::array::StringArray>()) as ArrayRef
    };
    let ints = |f: &dyn Fn(&ExecutionRecord) -> Option<i64>| {
        let mut b = Int64Builder::with_capacity(n);
        records.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let times = |f: &dyn Fn(&ExecutionRecord) -> Option<i64>| {
        let mut b = ts(n);
        records.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let mut duration = Float64Builder::with_capacity(n);
    let mut catalog_count = Int32Builder::with_capacity(n);
    for r in records {
        let finished = is_finished(r.execution_status.as_deref());
        duration.append_option(
            r.last_updated_at
                .filter(|_| finished)
                .map(|u| (u - r.started_at) as f64 / 1000.0),
        );
        catalog_count.append_value(i32::try_from(r.catalog_details.len()).unwrap_or(i32::MAX));
    }
    let columns: Vec<ArrayRef> = vec![
        constant(&flow.account_id),
        constant(&flow.region),
        constant(&flow.name),
        constant(&flow.arn),
        strings(&|r| Some(r.execution_id.as_str())),
        strings(&|r| r.execution_status.as_deref()),
        times(&|r| Some(r.started_at)),
        times(&|r| r.last_updated_at),
        times(&|r| r.data_pull_start_time),
        times(&|r| r.data_pull_end_time),
        ints(&|r| r.bytes_processed),
        ints(&|r| r.bytes_written),
        ints(&|r| r.records_processed),
        ints(&|r| r.num_parallel_processes),
        ints(&|r| r.max_page_size),
        ints(&|r| r.put_failures_count),
        strings(&|r| r.execution_message.as_deref()),
        Arc::new(duration.finish()),
        Arc::new(catalog_count.finish()),
        times(&|_| Some(exported_at)),
    ];
    let executions =
        RecordBatch::try_new(executions_schema(), columns).map_err(|source| Error::Arrow {
            table: "executions",
            source,
        })?;
    Ok(Batches {
        executions,
        catalog_registrations: catalog_batch(flow, records)?,
    })
}

/// A page's records with each run once, or `None` when every run is listed once (the
/// usual case). A page that lists a run twice keeps the version that supersedes the
/// other (on a tie, the later one): otherwise both versions' catalog rows would be
/// staged under one run, and a day file would hold them twice.
fn each_run_once(records: &[ExecutionRecord]) -> Option<Vec<ExecutionRecord>> {
    let mut kept: HashMap<(&str, i64), usize> = HashMap::with_capacity(records.len());
    let mut dropped: Vec<bool> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        match kept.entry((r.execution_id.as_str(), r.started_at)) {
            Entry::Vacant(v) => {
                v.insert(i);
            }
            Entry::Occupied(mut o) => {
                dropped.resize(records.len(), false);
                let earlier = *o.get();
                if supersedes(r.last_updated_at, records[earlier].last_updated_at) {
                    dropped[earlier] = true;
                    o.insert(i);
                } else {
                    dropped[i] = true;
                }
            }
        }
    }
    if dropped.is_empty() {
        return None;
    }
    Some(
        records
            .iter()
            .zip(dropped)
            .filter(|(_, d)| !d)
            .map(|(r, _)| r.clone())
            .collect(),
    )
}

fn catalog_batch(flow: &FlowInfo, records: &[ExecutionRecord]) -> Result<RecordBatch> {
    let n: usize = records.iter().map(|r| r.catalog_details.len()).sum();
    let mut account = StringBuilder::with_capacity(n, 0);
    let mut region = StringBuilder::with_capacity(n, 0);
    let mut flow_name = StringBuilder::with_capacity(n, 0);
    let mut execution_id = StringBuilder::with_capacity(n, 0);
    let mut started_at = ts(n);
    let mut ordinal = Int32Builder::with_capacity(n);
    let mut catalog_type = StringBuilder::with_capacity(n, 0);
    let mut table_name = StringBuilder::with_capacity(n, 0);
    let mut reg: [StringBuilder; 6] = std::array::from_fn(|_| StringBuilder::with_capacity(n, 0));
    for r in records {
        for (i, d) in r.catalog_details.iter().enumerate() {
            account.append_value(&flow.account_id);
            region.append_value(&flow.region);
            flow_name.append_value(&flow.name);
            execution_id.append_value(&r.execution_id);
            started_at.append_value(r.started_at);
            ordinal.append_value(i32::try_from(i).unwrap_or(i32::MAX));
            catalog_type.append_option(d.catalog_type.as_deref());
            table_name.append_option(d.table_name.as_deref());
            for (k, out) in [&d.table_registration, &d.partition_registration]
                .into_iter()
                .enumerate()
            {
                let o = out.as_ref();
                let field =
                    |f: fn(&RegistrationOutput) -> &Option<String>| o.and_then(|o| f(o).as_deref());
                reg[3 * k].append_option(field(|o| &o.status));
                reg[3 * k + 1].append_option(field(|o| &o.message));
                reg[3 * k + 2].append_option(field(|o| &o.result));
            }
        }
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(account.finish()),
        Arc::new(region.finish()),
        Arc::new(flow_name.finish()),
        Arc::new(execution_id.finish()),
        Arc::new(started_at.finish()),
        Arc::new(ordinal.finish()),
        Arc::new(catalog_type.finish()),
        Arc::new(table_name.finish()),
    ];
    columns.extend(reg.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    RecordBatch::try_new(catalog_schema(), columns).map_err(|source| Error::Arrow {
        table: "catalog_registrations",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use appflow_model::CatalogDetail;
    use appflow_model::testkit::{flow_in, run};
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int32Type, Int64Type, TimestampMillisecondType};

    fn flow() -> FlowInfo {
        flow_in("f.1@x", "210987654321", "eu-west-1")
    }

    fn record(id: &str, status: &str, started: i64, updated: i64) -> ExecutionRecord {
        ExecutionRecord {
            data_pull_end_time: Some(started),
            bytes_processed: Some(9_007_199_254_740_993),
            records_processed: Some(3),
            put_failures_count: Some(2),
            execution_message: Some("boom".into()),
            ..run(id, started, status, updated)
        }
    }

    #[test]
    fn a_page_that_lists_a_run_twice_yields_its_newest_version_once() {
        let detail = |table: &str| CatalogDetail {
            catalog_type: Some("GLUE".into()),
            table_name: Some(table.into()),
            table_registration: None,
            partition_registration: None,
        };
        let mut old = record("e1", "InProgress", 1_000, 2_000);
        old.catalog_details = vec![detail("old"), detail("old")];
        let mut new = record("e1", "Successful", 1_000, 3_000);
        new.catalog_details = vec![detail("new"), detail("new")];
        for page in [
            vec![old.clone(), record("e2", "Queued", 5, 6), new.clone()],
            vec![new.clone(), record("e2", "Queued", 5, 6), old.clone()],
        ] {
            let b = to_batches(&flow(), &page, 99).unwrap();
            let e = &b.executions;
            let ids = e.column_by_name("execution_id").unwrap().as_string::<i32>();
            let status = e
                .column_by_name("execution_status")
                .unwrap()
                .as_string::<i32>();
            let rows: Vec<(&str, &str)> = (0..e.num_rows())
                .map(|i| (ids.value(i), status.value(i)))
                .collect();
            assert!(rows.contains(&("e1", "Successful")) && rows.contains(&("e2", "Queued")));
            assert_eq!(rows.len(), 2, "{rows:?}");
            let c = &b.catalog_registrations;
            let tables = c.column_by_name("table_name").unwrap().as_string::<i32>();
            let tables: Vec<&str> = (0..c.num_rows()).map(|i| tables.value(i)).collect();
            assert_eq!(tables, ["new", "new"]);
        }
    }

    #[test]
    fn flattens_every_field() {
        let mut r = record("e1", "Error", 1_000, 61_500);
        r.catalog_details = vec![
            CatalogDetail {
                catalog_type: Some("GLUE".into()),
                table_name: Some("t".into()),
                table_registration: Some(RegistrationOutput {
                    status: Some("Error".into()),
                    message: Some("denied".into()),
                    result: None
                }),
                partition_registration: None,
            };
            2
        ];
        let b = to_batches(
            &flow(),
            &[
                r,
                record("e2", "Queued", 5, 6),
                record("e3", "InProgress", 7, 8),
            ],
            99,
        )
        .unwrap();
        let e = &b.executions;
        assert_eq!(e.num_rows(), 3);
        let col = |name: &str| e.column_by_name(name).unwrap().clone();
        assert_eq!(
            col("account_id").as_string::<i32>().value(0),
            "210987654321"
        );
        assert_eq!(
            col("execution_status").as_string::<i32>().value(1),
            "Queued"
        );
        assert_eq!(
            col("bytes_processed").as_primitive::<Int64Type>().value(0),
            9_007_199_254_740_993
        );
        assert!(col("bytes_written").is_null(0));
        let duration = col("duration_seconds");
        let duration = duration.as_primitive::<Float64Type>();
        assert_eq!(duration.value(0), 60.5);
        assert!(
            duration.is_null(1) && duration.is_null(2),
            "unknown and open statuses have no duration"
        );
        assert_eq!(
            col("catalog_registration_count")
                .as_primitive::<Int32Type>()
                .values(),
            &[2, 0, 0]
        );
        assert_eq!(
            col("exported_at")
                .as_primitive::<TimestampMillisecondType>()
                .value(2),
            99
        );
        let c = &b.catalog_registrations;
        assert_eq!(c.num_rows(), 2);
        assert_eq!(
            c.column_by_name("ordinal")
                .unwrap()
                .as_primitive::<Int32Type>()
                .values(),
            &[0, 1]
        );
        assert_eq!(
            c.column_by_name("table_registration_message")
                .unwrap()
                .as_string::<i32>()
                .value(1),
            "denied"
        );
        assert!(
            c.column_by_name("partition_registration_status")
                .unwrap()
                .is_null(0)
        );
    }
}
