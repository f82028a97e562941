//! The in-process stages of an export, each alone (`make bench`, criterion): the
//! transform of pages into Arrow batches, the Parquet encode of prebuilt batches with
//! the data contract's writer settings, and both together. 100,000 runs of 100 flows
//! in pages of 100, with values shaped like AppFlow's (ids, ARNs, statuses, messages).

use appflow_model::ExecutionRecord;
use appflow_model::testkit::{flow, glue};
use appflow_transform::{Batches, executions_schema, to_batches};
use arrow::array::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const FLOWS: usize = 100;
const RUNS: usize = 1000;
const PAGE: usize = 100;
const T0: i64 = 1_790_000_000_000;

/// One flow's runs, newest first (as AppFlow pages them).
fn records(f: usize) -> Vec<ExecutionRecord> {
    let statuses = [
        "Successful",
        "Successful",
        "Successful",
        "Error",
        "InProgress",
    ];
    (0..RUNS)
        .rev()
        .map(|i| {
            let started = T0 + (i as i64) * 60_000 + f as i64;
            let status = statuses[(i + f) % statuses.len()];
            ExecutionRecord {
                bytes_processed: Some((i * 7919 % 100_000) as i64),
                bytes_written: Some((i * 104_729 % 100_000) as i64),
                records_processed: Some((i % 5000) as i64),
                num_parallel_processes: Some(1),
                max_page_size: Some(1000),
                put_failures_count: (status == "Error").then_some(1),
                execution_message: (status == "Error").then(|| {
                    format!(
                        "Salesforce API call failed: INVALID_FIELD on object {}",
                        i % 17
                    )
                }),
                data_pull_start_time: Some(started),
                data_pull_end_time: Some(started + 20_000),
                catalog_details: if i % 10 == 0 {
                    vec![glue(format!("table_{f}"), Some("SUCCESSFUL"))]
                } else {
                    vec![]
                },
                ..appflow_model::testkit::run(
                    &format!("{:08x}-5e1f-4b2a-9c3d-{:012x}", f, i),
                    started,
                    status,
                    started + 35_000,
                )
            }
        })
        .collect()
}

fn pages() -> Vec<(appflow_model::FlowInfo, Vec<ExecutionRecord>)> {
    (0..FLOWS)
        .flat_map(|f| {
            let info = flow(&format!("salesforce-to-s3-{f:04}"));
            let recs = records(f);
            recs.chunks(PAGE)
                .map(|p| (info.clone(), p.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn transform(pages: &[(appflow_model::FlowInfo, Vec<ExecutionRecord>)]) -> Vec<Batches> {
    pages
        .iter()
        .map(|(f, p)| to_batches(f, p, T0).expect("transform"))
        .collect()
}

/// The executions of a day file: one batch, in the order of the data contract.
fn day_file(batches: &[Batches]) -> RecordBatch {
    let all: Vec<RecordBatch> = batches.iter().map(|b| b.executions.clone()).collect();
    let batch = arrow::compute::concat_batches(&executions_schema(), &all).expect("concat");
    let cols = ["flow_name", "started_at", "execution_id"]
        .iter()
        .map(|c| arrow::compute::SortColumn {
            values: batch.column_by_name(c).expect("column").clone(),
            options: None,
        })
        .collect::<Vec<_>>();
    let order = arrow::compute::lexsort_to_indices(&cols, None).expect("sort");
    arrow::compute::take_record_batch(&batch, &order).expect("take")
}

fn stages(c: &mut Criterion) {
    let pages = pages();
    let batches = transform(&pages);
    let day = day_file(&batches);
    let mut g = c.benchmark_group("stages");
    g.throughput(Throughput::Elements((FLOWS * RUNS) as u64));
    g.sample_size(10);
    g.bench_function("transform alone", |b| b.iter(|| transform(&pages)));
    g.bench_function("encode alone", |b| {
        b.iter(|| appflow_load::encode(&day).expect("encode"))
    });
    g.bench_function("transform + encode", |b| {
        b.iter(|| appflow_load::encode(&day_file(&transform(&pages))).expect("encode"))
    });
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
