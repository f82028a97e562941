//! Unit tests of `stage.rs`.

use super::*;
use appflow_model::testkit::{flow, glue, run};
use appflow_model::{CatalogDetail, ExecutionRecord};

fn flow_rows(name: &str, n: i64) -> Batches {
    let records: Vec<ExecutionRecord> = (0..n)
        .map(|i| ExecutionRecord {
            execution_status: Some("Successful".into()),
            bytes_processed: Some(i),
            catalog_details: vec![
                CatalogDetail {
                    catalog_type: Some("GLUE".into()),
                    table_name: None,
                    table_registration: None,
                    partition_registration: None
                };
                (i % 3) as usize
            ],
            ..ExecutionRecord::new(format!("{name}-{i}"), 1_790_000_000_000 + i * 7_200_000)
        })
        .collect();
    appflow_transform::to_batches(&flow(name), &records, 1).unwrap()
}

fn staged(budget: usize) -> (Stage, Vec<PartitionKey>) {
    let mut stage = Stage::with_memory_budget(budget);
    for f in ["a", "b", "c"] {
        stage.add(&flow_rows(f, 40)).unwrap();
    }
    let keys = stage.partitions().unwrap();
    (stage, keys)
}

#[test]
fn spilled_segments_read_back_the_same_rows_as_memory() {
    let (memory, keys) = staged(usize::MAX);
    let (spilled, spilled_keys) = staged(1);
    assert!(memory.dir.is_none(), "nothing written under the budget");
    assert_eq!(spilled.segments, 3, "one segment per add past the budget");
    assert_eq!(keys, spilled_keys);
    assert_eq!(keys.len(), 4, "40 runs two hours apart span four days");
    let mut rows = 0;
    for key in &keys {
        let (m, s) = (memory.read(key).unwrap(), spilled.read(key).unwrap());
        assert_eq!(m.executions, s.executions, "{key:?}");
        assert_eq!(m.catalog_registrations, s.catalog_registrations, "{key:?}");
        rows += m.executions.num_rows();
    }
    assert_eq!(rows, 120);
}

fn version(id: &str, status: &str, updated: i64, catalog: usize) -> ExecutionRecord {
    ExecutionRecord {
        catalog_details: (0..catalog)
            .map(|i| glue(format!("{status}-{i}"), None))
            .collect(),
        ..run(id, 1_790_000_000_000, status, updated)
    }
}

fn page(records: &[ExecutionRecord]) -> Batches {
    appflow_transform::to_batches(&flow("f"), records, 1).unwrap()
}

fn strings(batch: &RecordBatch, column: &str) -> Vec<String> {
    let col = batch.column_by_name(column).unwrap().as_string::<i32>();
    col.iter().map(|v| v.unwrap_or("-").to_string()).collect()
}

/// `execution_id=column` of every row, sorted.
fn pairs(batch: &RecordBatch, column: &str) -> Vec<String> {
    let mut out: Vec<_> = strings(batch, "execution_id")
        .into_iter()
        .zip(strings(batch, column))
        .map(|(id, value)| format!("{id}={value}"))
        .collect();
    out.sort();
    out
}

fn read_only_partition(stage: &mut Stage) -> Batches {
    let keys = stage.partitions().unwrap();
    assert_eq!(keys.len(), 1);
    stage.read(&keys[0]).unwrap()
}

#[test]
fn a_run_staged_twice_is_read_once_with_the_catalog_rows_of_its_newest_version() {
    for budget in [usize::MAX, 1] {
        let mut stage = Stage::with_memory_budget(budget);
        // Page 1 has run a open and run b; page 2, read after runs were added at
        // the front, repeats them: a finished (newer) with other catalog rows, b
        // unchanged. A third page brings an older version of a again.
        stage
            .add(&page(&[
                version("a", "InProgress", 10, 2),
                version("b", "Successful", 5, 1),
            ]))
            .unwrap();
        stage
            .add(&page(&[
                version("a", "Successful", 20, 1),
                version("b", "Successful", 5, 1),
            ]))
            .unwrap();
        stage
            .add(&page(&[version("a", "InProgress", 10, 2)]))
            .unwrap();
        let got = read_only_partition(&mut stage);
        assert_eq!(
            pairs(&got.executions, "execution_status"),
            ["a=Successful", "b=Successful"],
            "budget {budget}"
        );
        assert_eq!(
            pairs(&got.catalog_registrations, "table_name"),
            ["a=Successful-0", "b=Successful-0"],
            "budget {budget}: the catalog rows of the version kept, once"
        );
        assert_eq!(got.executions.schema(), schema_for(Table::Executions));
        assert_eq!(
            got.catalog_registrations.schema(),
            schema_for(Table::CatalogRegistrations)
        );
    }
}

#[test]
fn discarded_adds_are_never_read() {
    for budget in [usize::MAX, 1] {
        let mut stage = Stage::with_memory_budget(budget);
        let kept = stage
            .add(&page(&[version("a", "Successful", 5, 1)]))
            .unwrap();
        let failed = [
            stage.add(&page(&[version("b", "Error", 6, 2)])).unwrap(),
            stage.add(&page(&[version("a", "Error", 9, 1)])).unwrap(),
        ];
        assert!(failed.iter().all(|f| *f != kept));
        stage.discard(failed);
        let got = read_only_partition(&mut stage);
        assert_eq!(strings(&got.executions, "execution_id"), ["a"]);
        assert_eq!(strings(&got.executions, "execution_status"), ["Successful"]);
        assert_eq!(
            strings(&got.catalog_registrations, "table_name"),
            ["Successful-0"]
        );

        let mut only_failed = Stage::with_memory_budget(budget);
        let id = only_failed
            .add(&page(&[version("b", "Error", 6, 2)]))
            .unwrap();
        only_failed.discard([id]);
        let got = read_only_partition(&mut only_failed);
        assert_eq!(
            (
                got.executions.num_rows(),
                got.catalog_registrations.num_rows()
            ),
            (0, 0)
        );
    }
}

#[test]
fn days_are_utc_dates() {
    assert_eq!(day_of(0).unwrap(), "1970-01-01");
    assert_eq!(day_of(1_795_553_667_564).unwrap(), "2026-11-24");
    assert_eq!(day_of(86_400_000 - 1).unwrap(), "1970-01-01");
    assert_eq!(day_of(-1).unwrap(), "1969-12-31");
    assert!(day_of(i64::MAX).is_err());
}

#[test]
fn past_the_most_runs_segments_are_merged_and_read_back_the_same_rows() {
    // Each add spills (budget 1): a segment written from memory each. The first day
    // is in every add: its runs are merged FAN_IN at a time into runs of level 1, and
    // FAN_IN of those into one of level 2; the last day is in one add only.
    let fill = |budget: usize| {
        let mut stage = Stage::with_memory_budget(budget);
        let mut ids = Vec::new();
        for i in 0..FAN_IN * FAN_IN {
            let name = ["a", "b", "c"][i % 3];
            ids.push(stage.add(&flow_rows(name, 12 + i as i64)).unwrap());
            // The same runs again, a newer version with other catalog rows.
            if i % 7 == 0 {
                let mut again = flow_rows(name, 3);
                let status = Arc::new(arrow::array::StringArray::from(vec!["Failed"; 3]));
                let col = again
                    .executions
                    .schema()
                    .index_of("execution_status")
                    .unwrap();
                let mut cols = again.executions.columns().to_vec();
                cols[col] = status;
                again.executions = RecordBatch::try_new(again.executions.schema(), cols).unwrap();
                ids.push(stage.add(&again).unwrap());
            }
        }
        // One add reaches a day no other add does.
        ids.push(
            stage
                .add(&flow_rows("a", 12 * FAN_IN as i64 * FAN_IN as i64))
                .unwrap(),
        );
        // A flow that failed: its adds are left out wherever they were staged.
        stage.discard([ids[4], ids[20], ids[37], ids[70]]);
        let keys = stage.partitions().unwrap();
        (stage, keys)
    };
    let (memory, keys) = fill(usize::MAX);
    let (spilled, spilled_keys) = fill(1);
    assert_eq!(keys, spilled_keys);
    let runs = |key: &PartitionKey, level: u32| {
        spilled.slices[key]
            .iter()
            .filter(|s| s.level == level)
            .count()
    };
    assert!(
        runs(&keys[0], 2) > 0,
        "the first day, in every add, reaches level 2"
    );
    // The last day is in fewer adds than the first: some day's runs, fewer than
    // FAN_IN, were never merged (rewritten), however many segments were merged.
    assert!(
        keys.iter()
            .any(|k| spilled.slices[k].iter().all(|s| s.level == 0)),
        "a day staged in few runs is never rewritten"
    );
    for key in &keys {
        for level in 0..4 {
            let n = runs(key, level);
            assert!(n < FAN_IN, "{key:?} holds {n} runs of level {level}");
        }
    }
    let live: std::collections::BTreeSet<usize> = spilled
        .slices
        .values()
        .flatten()
        .map(|s| s.segment)
        .collect();
    let files = std::fs::read_dir(spilled.dir.as_ref().unwrap().path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "arrow")
        })
        .count();
    assert_eq!(files, 2 * live.len(), "merged segments' files are removed");
    for key in &keys {
        let (m, s) = (memory.read(key).unwrap(), spilled.read(key).unwrap());
        assert_eq!(m.executions, s.executions, "{key:?}");
        assert_eq!(m.catalog_registrations, s.catalog_registrations, "{key:?}");
    }
}

/// Rows of several places and flows, pages newest-first and shuffled between flows,
/// with ties in `started_at`: `by_partition` orders them as Arrow's lexicographic sort
/// of (account, region, day, the day file's key[, ordinal]) does.
#[test]
fn rows_are_split_by_partition_in_the_order_of_a_lexicographic_sort() {
    use appflow_model::testkit::flow_in;
    use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
    let mut pages = Vec::new();
    for (account, region, name) in [
        ("2", "eu", "b"),
        ("1", "us", "b"),
        ("1", "eu", "a"),
        ("1", "eu", "ab"),
    ] {
        let records: Vec<ExecutionRecord> = (0..30_i64)
            .rev() // newest first, as pages come
            .map(|i| ExecutionRecord {
                catalog_details: (0..(i % 3) as usize)
                    .map(|c| glue(format!("t{c}"), None))
                    .collect(),
                // Pairs of runs that start in the same millisecond, ids in either order.
                ..run(
                    &format!("{}{name}", 9 - i % 2 * 9 + i / 2),
                    1_790_000_000_000 + (i / 2) * 9_000_000,
                    "Successful",
                    1,
                )
            })
            .collect();
        pages.push(
            appflow_transform::to_batches(&flow_in(name, account, region), &records, 1).unwrap(),
        );
    }
    for table in [Table::Executions, Table::CatalogRegistrations] {
        // Catalog rows come in ordinal order within a run: reversed here, so that
        // only the sort puts them back.
        let reversed = |b: &RecordBatch| {
            let back = arrow::array::UInt32Array::from_iter_values((0..b.num_rows() as u32).rev());
            take_record_batch(b, &back).unwrap()
        };
        let parts: Vec<RecordBatch> = pages
            .iter()
            .map(|b| match table {
                Table::CatalogRegistrations => reversed(&b.catalog_registrations),
                _ => b.executions.clone(),
            })
            .collect();
        let all = concat_batches(&schema_for(table), &parts).unwrap();
        let got = segment::by_partition(table, &parts).unwrap();
        let got = concat_batches(&schema_for(table), got.iter().map(|(_, b)| b)).unwrap();
        let started = all
            .column_by_name("started_at")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        let days: arrow::array::Int64Array =
            arrow::compute::kernels::arity::unary(started, |ms| ms.div_euclid(86_400_000));
        let mut by = vec![
            all.column_by_name("account_id").unwrap().clone(),
            all.column_by_name("region").unwrap().clone(),
            Arc::new(days),
        ];
        by.extend(
            crate::sorted::order_of(table)
                .iter()
                .map(|k| all.column_by_name(k).unwrap().clone()),
        );
        let by: Vec<SortColumn> = by
            .into_iter()
            .map(|values| SortColumn {
                values,
                options: None,
            })
            .collect();
        let expected = take_record_batch(&all, &lexsort_to_indices(&by, None).unwrap()).unwrap();
        assert_eq!(got, expected, "{table:?}");
    }
}
