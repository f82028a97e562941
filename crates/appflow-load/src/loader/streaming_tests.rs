//! What the streaming day-file merge can get wrong: files of many row groups, days
//! staged in several sorted runs, runs read more than once, writers racing on a
//! large file, a write stopped between its temporary file and its put.

use std::collections::BTreeMap;

use super::*;
use crate::parquet_io::decode;
use crate::store::{Intercepted, MemoryStore, PutHook};
use appflow_model::ExecutionRecord;
use appflow_model::testkit::{flow, glue};
use appflow_transform::{schema_for, to_batches};
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::TimestampMillisecondType;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const DAY: i64 = 86_400_000;
const T0: i64 = 1_790_000_000_000 - 1_790_000_000_000 % DAY;

fn run(id: &str, started: i64, status: &str, updated: i64, catalog: usize) -> ExecutionRecord {
    ExecutionRecord {
        catalog_details: (0..catalog)
            .map(|i| glue(format!("{status}-{i}"), Some(status)))
            .collect(),
        ..appflow_model::testkit::run(id, started, status, updated)
    }
}

/// `n` finished runs of flow `name`, a second apart from `T0 + offset` ms.
fn runs(name: &str, n: i64, offset: i64) -> Vec<ExecutionRecord> {
    (0..n)
        .map(|i| {
            let t = T0 + offset + i * 1000;
            run(
                &format!("{name}-{i:05}"),
                t,
                "Successful",
                t + 500,
                (i % 3 == 0) as usize,
            )
        })
        .collect()
}

fn key(day: i64) -> PartitionKey {
    PartitionKey {
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        day: crate::stage::day_of(day).unwrap(),
    }
}

async fn stored_bytes(store: &Arc<dyn ObjectStore>, table: Table, day: i64) -> Bytes {
    store
        .get(&layout::day_file(table, &key(day)))
        .await
        .unwrap()
        .expect("day file")
        .body
}

async fn read(store: &Arc<dyn ObjectStore>, table: Table, day: i64) -> RecordBatch {
    decode(stored_bytes(store, table, day).await, &schema_for(table)).unwrap()
}

fn strings(b: &RecordBatch, col: &str) -> Vec<String> {
    b.column_by_name(col)
        .unwrap()
        .as_string::<i32>()
        .iter()
        .map(|v| v.unwrap_or("-").to_string())
        .collect()
}

fn millis(b: &RecordBatch, col: &str) -> Vec<i64> {
    b.column_by_name(col)
        .unwrap()
        .as_primitive::<TimestampMillisecondType>()
        .values()
        .to_vec()
}

/// (flow, started_at, execution_id) of every row: the order of the data contract.
fn keys_of(b: &RecordBatch) -> Vec<(String, i64, String)> {
    let (f, s, e) = (
        strings(b, "flow_name"),
        millis(b, "started_at"),
        strings(b, "execution_id"),
    );
    f.into_iter()
        .zip(s)
        .zip(e)
        .map(|((f, s), e)| (f, s, e))
        .collect()
}

fn assert_sorted_and_unique(b: &RecordBatch) {
    let keys = keys_of(b);
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "rows are sorted by (flow, started_at, execution_id), each once"
    );
}

async fn row_groups(store: &Arc<dyn ObjectStore>, table: Table, day: i64) -> usize {
    let bytes = stored_bytes(store, table, day).await;
    ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .metadata()
        .num_row_groups()
}

async fn commit_with(loader: &Loader, stage: Stage) -> Result<CommitReport> {
    let mut stage = stage;
    loader.commit(&mut stage).await
}

fn stage_of(flows: &[(&str, Vec<ExecutionRecord>)], exported_at: i64) -> Stage {
    let mut stage = Stage::new().unwrap();
    for (name, records) in flows {
        for page in records.chunks(100) {
            stage
                .add(&to_batches(&flow(name), page, exported_at).unwrap())
                .unwrap();
        }
    }
    stage
}

#[tokio::test]
async fn a_run_updated_in_place_in_a_file_of_many_row_groups_changes_only_that_row() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let l = Loader::new(store.clone()).with_row_group_rows(100);
    let mut a = runs("a", 1000, 0);
    a[537] = run("a-00537", T0 + 537_000, "InProgress", T0 + 537_100, 1);
    let b = runs("b", 500, 0);
    commit_with(&l, stage_of(&[("a", a.clone()), ("b", b.clone())], 7))
        .await
        .unwrap();
    assert_eq!(row_groups(&store, Table::Executions, T0).await, 15);
    let before = read(&store, Table::Executions, T0).await;

    // The open run ends; the run also reads a few unchanged runs around it again.
    let again: Vec<_> = (530..545)
        .map(|i| {
            if i == 537 {
                run("a-00537", T0 + 537_000, "Successful", T0 + 600_000, 2)
            } else {
                a[i].clone()
            }
        })
        .collect();
    let r = commit_with(&l, stage_of(&[("a", again)], 9)).await.unwrap();
    assert_eq!((r.files_written, r.files_unchanged), (2, 0), "{r:?}");

    let after = read(&store, Table::Executions, T0).await;
    assert_eq!(after.num_rows(), 1500);
    assert_eq!(
        keys_of(&after),
        keys_of(&before),
        "the same rows in the same order"
    );
    assert_sorted_and_unique(&after);
    let (status, exported) = (
        strings(&after, "execution_status"),
        millis(&after, "exported_at"),
    );
    for i in 0..after.num_rows() {
        if i == 537 {
            assert_eq!((status[i].as_str(), exported[i]), ("Successful", 9));
        } else {
            assert_eq!(exported[i], 7, "row {i} keeps its exported_at");
        }
    }
    // The rows before and after it are byte for byte the stored ones.
    assert_eq!(before.slice(0, 537), after.slice(0, 537));
    assert_eq!(before.slice(538, 962), after.slice(538, 962));
    assert_eq!(row_groups(&store, Table::Executions, T0).await, 15);
    let cat = read(&store, Table::CatalogRegistrations, T0).await;
    let of_537: Vec<_> = strings(&cat, "execution_id")
        .into_iter()
        .zip(strings(&cat, "table_name"))
        .filter(|(id, _)| id == "a-00537")
        .map(|(_, t)| t)
        .collect();
    assert_eq!(
        of_537,
        ["Successful-0", "Successful-1"],
        "the new version's catalog rows only"
    );
    assert_eq!(cat.num_rows(), 334 + 167 - 1 + 2);
}

/// A stage that writes a segment (a sorted run of each day) every `budget` bytes.
fn small_stage(budget: usize) -> Stage {
    Stage::with_memory_budget(budget)
}

#[tokio::test]
async fn a_day_staged_in_several_sorted_runs_is_one_sorted_file_with_each_run_once() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let l = Loader::new(store.clone()).with_row_group_rows(500);
    let mut stage = small_stage(256 * 1024);
    // Three flows over two days, paged newest first (as AppFlow pages), interleaved.
    let flows: Vec<(String, Vec<ExecutionRecord>)> = ["c", "a", "b"]
        .iter()
        .map(|f| {
            let mut r = runs(f, 1800, DAY - 900_000);
            r.reverse();
            (f.to_string(), r)
        })
        .collect();
    let mut newest: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for page in 0..18 {
        for (name, records) in &flows {
            let chunk = &records[page * 100..(page + 1) * 100];
            stage
                .add(&to_batches(&flow(name), chunk, 7).unwrap())
                .unwrap();
        }
        // Runs read again in a later page: an update, and a stale copy of an older
        // version (pages that shifted while they were read).
        if page % 5 == 4 {
            let t = T0 + DAY - 900_000 + (page as i64) * 7_000;
            let id = format!("a-{:05}", (t - T0 - DAY + 900_000) / 1000);
            let done = run(&id, t, "Failed", t + 90_000, 3);
            let stale = run(&id, t, "InProgress", t + 10, 1);
            stage
                .add(&to_batches(&flow("a"), &[done], 8).unwrap())
                .unwrap();
            stage
                .add(&to_batches(&flow("a"), &[stale], 8).unwrap())
                .unwrap();
            newest.insert(id, ("Failed".into(), 3));
        }
    }
    let segments = stage.segments();
    assert!(
        segments >= 4,
        "the day is staged in several runs: {segments}"
    );
    let r = l.commit(&mut stage).await.unwrap();
    assert_eq!(r.files_written, 4);

    let mut total = 0;
    for day in [T0, T0 + DAY] {
        let b = read(&store, Table::Executions, day).await;
        assert_sorted_and_unique(&b);
        total += b.num_rows();
        let cat = read(&store, Table::CatalogRegistrations, day).await;
        let ids = strings(&b, "execution_id");
        let status = strings(&b, "execution_status");
        for (id, (want, n)) in &newest {
            if let Some(i) = ids.iter().position(|x| x == id) {
                assert_eq!(&status[i], want, "{id}: its newest version");
                let rows = strings(&cat, "execution_id")
                    .iter()
                    .filter(|x| *x == id)
                    .count();
                assert_eq!(rows, *n, "{id}: the catalog rows of its newest version");
            }
        }
    }
    assert_eq!(total, 3 * 1800);
    assert_eq!(newest.len(), 3);
}

#[tokio::test]
async fn the_same_rows_staged_in_several_runs_change_nothing_stored() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let l = Loader::new(store.clone()).with_row_group_rows(300);
    let a = runs("a", 2000, 0);
    commit_with(&l, stage_of(&[("a", a.clone())], 7))
        .await
        .unwrap();
    let before = stored_bytes(&store, Table::Executions, T0).await;
    let mut stage = small_stage(128 * 1024);
    for page in a.chunks(100).rev() {
        stage
            .add(&to_batches(&flow("a"), page, 9).unwrap())
            .unwrap();
    }
    assert!(stage.segments() >= 3);
    let r = l.commit(&mut stage).await.unwrap();
    assert_eq!((r.files_written, r.files_unchanged), (0, 2), "{r:?}");
    assert_eq!(stored_bytes(&store, Table::Executions, T0).await, before);
}

/// A store in which writer B commits `rows` in full just before writer A's first
/// executions put, which then loses its condition.
fn b_commits_first(inner: Arc<MemoryStore>, rows: Vec<ExecutionRecord>) -> Intercepted {
    let other = Arc::new(tokio::sync::Mutex::new(Some(rows)));
    let b_store = inner.clone();
    let hook: PutHook = Arc::new(move |key, _| {
        let (inner, other) = (b_store.clone(), other.clone());
        Box::pin(async move {
            if key.starts_with("executions/")
                && let Some(rows) = other.lock().await.take()
            {
                let b = Loader::new(inner).with_row_group_rows(250);
                commit_with(&b, stage_of(&[("shared", rows)], 20))
                    .await
                    .unwrap();
            }
            Ok(None)
        })
    });
    Intercepted::new(inner, hook)
}

#[tokio::test]
async fn two_writers_racing_on_a_large_day_file_keep_every_row_and_the_newest_versions() {
    let inner = Arc::new(MemoryStore::new());
    let store: Arc<dyn ObjectStore> = inner.clone();
    // The day file exists: 3,000 runs of flow "old".
    commit_with(
        &Loader::new(store.clone()).with_row_group_rows(250),
        stage_of(&[("old", runs("old", 3000, 0))], 1),
    )
    .await
    .unwrap();
    // Writer B: 2,000 runs of "shared", 100 of them still open.
    let mut b_rows = runs("shared", 2000, 0);
    for r in b_rows.iter_mut().take(1000).skip(900) {
        *r = run(
            &r.execution_id,
            r.started_at,
            "InProgress",
            r.started_at + 1,
            0,
        );
    }
    // Writer A: 2,500 runs of "mine", and the 100 "shared" runs finished (newer).
    let finished: Vec<_> = (900..1000)
        .map(|i| {
            let t = T0 + i * 1000;
            run(&format!("shared-{i:05}"), t, "Successful", t + 5_000, 1)
        })
        .collect();
    let a = Loader::new(Arc::new(b_commits_first(inner, b_rows))).with_row_group_rows(250);
    let r = commit_with(
        &a,
        stage_of(&[("mine", runs("mine", 2500, 0)), ("shared", finished)], 30),
    )
    .await
    .unwrap();
    assert_eq!(r.conflicts, 1, "{r:?}");

    let b = read(&store, Table::Executions, T0).await;
    assert_sorted_and_unique(&b);
    assert_eq!(b.num_rows(), 3000 + 2000 + 2500);
    let (ids, status) = (strings(&b, "execution_id"), strings(&b, "execution_status"));
    let open = ids
        .iter()
        .zip(&status)
        .filter(|(id, s)| id.starts_with("shared-") && *s != "Successful")
        .count();
    assert_eq!(open, 0, "A's finished versions replace B's open ones");
    let cat = read(&store, Table::CatalogRegistrations, T0).await;
    let shared_cat = strings(&cat, "execution_id")
        .iter()
        .filter(|id| id.starts_with("shared-"))
        .count();
    // B's 2,000 runs: 667 with a catalog row of their own, of which the 34 among the
    // 100 open ones had none; A's 100 finished versions bring one each.
    let b_catalog = (0..2000)
        .filter(|i| i % 3 == 0 && !(900..1000).contains(i))
        .count();
    assert_eq!(shared_cat, b_catalog + 100);
}

#[tokio::test]
async fn a_write_stopped_between_its_temporary_file_and_its_put_leaves_the_stored_file() {
    let inner = Arc::new(MemoryStore::new());
    let store: Arc<dyn ObjectStore> = inner.clone();
    let l = Loader::new(store.clone()).with_row_group_rows(200);
    commit_with(&l, stage_of(&[("a", runs("a", 1000, 0))], 7))
        .await
        .unwrap();
    let before = stored_bytes(&store, Table::Executions, T0).await;
    // The next run's put of the executions file fails as a crash would stop it:
    // after the merged file was written to disk, before any byte reached the store.
    let hook: PutHook = Arc::new(|key, body| {
        Box::pin(async move {
            assert!(!body.is_empty(), "the merged file is complete on disk");
            if key.starts_with("executions/") {
                return Err(Error::write(key, "the process stopped here"));
            }
            Ok(None)
        })
    });
    let crashing = Loader::new(Arc::new(Intercepted::new(inner, hook)));
    let stage = stage_of(&[("b", runs("b", 700, 0))], 9);
    let scratch = {
        let mut stage = stage;
        let dir = stage.scratch_dir().unwrap();
        let err = crashing.commit(&mut stage).await.unwrap_err();
        assert!(err.to_string().contains("executions/"), "{err}");
        assert!(dir.exists());
        dir
    };
    assert!(!scratch.exists(), "the temporary files go with the stage");
    assert_eq!(stored_bytes(&store, Table::Executions, T0).await, before);
    // The next run redoes the work: every row once.
    let r = commit_with(&l, stage_of(&[("b", runs("b", 700, 0))], 11))
        .await
        .unwrap();
    assert_eq!(r.files_written, 2);
    let after = read(&store, Table::Executions, T0).await;
    assert_sorted_and_unique(&after);
    assert_eq!(after.num_rows(), 1700);
}

#[tokio::test]
async fn a_stored_file_out_of_order_is_an_error_naming_it_and_is_left_as_it_is() {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let mut rows = runs("a", 10, 0);
    rows.reverse();
    let unsorted = to_batches(&flow("a"), &rows, 7).unwrap().executions;
    let body = crate::parquet_io::encode(&unsorted).unwrap();
    let k = layout::day_file(Table::Executions, &key(T0));
    store
        .put(&k, body.clone(), crate::store::PutMode::Create)
        .await
        .unwrap();
    let l = Loader::new(store.clone());
    let err = commit_with(&l, stage_of(&[("b", runs("b", 3, 0))], 9))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(text.contains(&k) && text.contains("not sorted"), "{text}");
    assert_eq!(stored_bytes(&store, Table::Executions, T0).await, body);
}
