//! Unit tests of `loader.rs`.

use super::*;
use crate::parquet_io::decode;
use crate::reads::FlowRead;
use crate::store::{Intercepted, MemoryStore, PutHook, PutMode, PutOutcome};
use appflow_model::ExecutionRecord;
use appflow_model::testkit::{flow, glue};
use appflow_transform::schema_for;
use appflow_transform::to_batches;
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, TimestampMillisecondType};
use bytes::Bytes;

const DAY: i64 = 86_400_000;
const T0: i64 = 1_790_000_000_000 - 1_790_000_000_000 % DAY;

fn run(id: &str, started: i64, status: &str, updated: i64, catalog: usize) -> ExecutionRecord {
    ExecutionRecord {
        bytes_processed: Some(10),
        bytes_written: Some(10),
        records_processed: Some(1),
        catalog_details: (0..catalog)
            .map(|i| glue(format!("t{i}"), Some(status)))
            .collect(),
        ..appflow_model::testkit::run(id, started, status, updated)
    }
}

async fn commit(
    loader: &Loader,
    flows: &[(&str, Vec<ExecutionRecord>)],
    exported_at: i64,
) -> CommitReport {
    let mut stage = Stage::new().unwrap();
    for (name, records) in flows {
        stage
            .add(&to_batches(&flow(name), records, exported_at).unwrap())
            .unwrap();
    }
    loader.commit(&mut stage).await.unwrap()
}

async fn read(loader: &Loader, table: Table, day: i64) -> RecordBatch {
    let key = PartitionKey {
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        day: crate::stage::day_of(day).unwrap(),
    };
    let obj = loader
        .store()
        .get(&layout::day_file(table, &key))
        .await
        .unwrap()
        .expect("day file");
    decode(obj.body, &schema_for(table)).unwrap()
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

fn loader() -> Loader {
    Loader::new(Arc::new(MemoryStore::new()))
}

#[tokio::test]
async fn a_day_of_discarded_rows_only_writes_no_file() {
    let l = loader();
    let mut stage = Stage::new().unwrap();
    let kept = vec![run("a1", T0 + 1000, "Successful", T0 + 2000, 1)];
    stage
        .add(&to_batches(&flow("a"), &kept, 7).unwrap())
        .unwrap();
    // A flow that failed after a page of another day was staged.
    let failed = vec![run("b1", T0 - DAY, "Successful", T0, 2)];
    let id = stage
        .add(&to_batches(&flow("b"), &failed, 7).unwrap())
        .unwrap();
    stage.discard([id]);
    let r = l.commit(&mut stage).await.unwrap();
    assert_eq!(r.files_written, 2, "the kept day's two files only");
    let mut keys = l.store().list("").await.unwrap();
    keys.sort();
    let day = crate::stage::day_of(T0).unwrap();
    assert_eq!(
        keys,
        [
            format!("catalog_registrations/dt={day}/123456789012_us-east-1.parquet"),
            format!("executions/dt={day}/123456789012_us-east-1.parquet"),
        ]
    );
}

#[tokio::test]
async fn writes_one_sorted_file_per_day_and_table() {
    let l = loader();
    let a = vec![
        run("a2", T0 + 2000, "Successful", T0 + 3000, 1),
        run("a1", T0 + 1000, "Error", T0 + 1500, 2),
        run("a0", T0 - 5, "Successful", T0, 0),
    ];
    let b = vec![run("b1", T0 + 1500, "Successful", T0 + 1600, 0)];
    let r = commit(&l, &[("flow-b", b), ("flow-a", a)], 7).await;
    // Both days have both files; the day before has no catalog rows.
    assert_eq!(
        r,
        CommitReport {
            files_written: 4,
            files_unchanged: 0,
            conflicts: 0
        }
    );
    assert_eq!(
        read(&l, Table::CatalogRegistrations, T0 - 1)
            .await
            .num_rows(),
        0
    );
    let day = read(&l, Table::Executions, T0).await;
    assert_eq!(strings(&day, "execution_id"), ["a1", "a2", "b1"]);
    assert_eq!(
        strings(&read(&l, Table::Executions, T0 - 1).await, "execution_id"),
        ["a0"]
    );
    let cat = read(&l, Table::CatalogRegistrations, T0).await;
    assert_eq!(strings(&cat, "execution_id"), ["a1", "a1", "a2"]);
    assert_eq!(
        cat.column_by_name("ordinal")
            .unwrap()
            .as_primitive::<Int32Type>()
            .values(),
        &[0, 1, 0]
    );
}

#[tokio::test]
async fn the_same_rows_again_change_nothing() {
    let l = loader();
    let rows = vec![run("a1", T0 + 1000, "Successful", T0 + 1500, 2)];
    commit(&l, &[("f", rows.clone())], 7).await;
    let before = l.store().list("").await.unwrap();
    let etags: Vec<_> = futures::future::join_all(before.iter().map(|k| l.store().get(k)))
        .await
        .into_iter()
        .map(|o| o.unwrap().unwrap().etag)
        .collect();
    let r = commit(&l, &[("f", rows)], 99).await;
    assert_eq!((r.files_written, r.files_unchanged), (0, 2));
    let after: Vec<_> = futures::future::join_all(before.iter().map(|k| l.store().get(k)))
        .await
        .into_iter()
        .map(|o| o.unwrap().unwrap().etag)
        .collect();
    assert_eq!(etags, after);
    assert_eq!(
        millis(&read(&l, Table::Executions, T0).await, "exported_at"),
        [7]
    );
}

#[tokio::test]
async fn a_finished_run_replaces_its_open_version_in_place() {
    let l = loader();
    commit(
        &l,
        &[(
            "f",
            vec![
                run("a1", T0 + 1000, "InProgress", T0 + 1100, 0),
                run("a2", T0 + 5000, "Successful", T0 + 6000, 0),
            ],
        )],
        7,
    )
    .await;
    commit(
        &l,
        &[(
            "f",
            vec![
                run("a1", T0 + 1000, "Successful", T0 + 9000, 2),
                run("a2", T0 + 5000, "Successful", T0 + 6000, 0),
            ],
        )],
        8,
    )
    .await;
    let day = read(&l, Table::Executions, T0).await;
    assert_eq!(strings(&day, "execution_id"), ["a1", "a2"]);
    assert_eq!(
        strings(&day, "execution_status"),
        ["Successful", "Successful"]
    );
    assert_eq!(
        millis(&day, "exported_at"),
        [8, 7],
        "only the changed row gets a new exported_at"
    );
    assert_eq!(
        strings(
            &read(&l, Table::CatalogRegistrations, T0).await,
            "execution_id"
        ),
        ["a1", "a1"]
    );
}

#[tokio::test]
async fn an_older_version_never_wins() {
    let l = loader();
    commit(
        &l,
        &[("f", vec![run("a1", T0 + 1000, "Successful", T0 + 9000, 1)])],
        7,
    )
    .await;
    let r = commit(
        &l,
        &[("f", vec![run("a1", T0 + 1000, "InProgress", T0 + 1100, 0)])],
        8,
    )
    .await;
    assert_eq!(r.files_written, 0);
    assert_eq!(
        strings(&read(&l, Table::Executions, T0).await, "execution_status"),
        ["Successful"]
    );
    assert_eq!(
        read(&l, Table::CatalogRegistrations, T0).await.num_rows(),
        1,
        "catalog rows of the newer version stay"
    );
}

#[tokio::test]
async fn flows_sharing_a_day_file_keep_each_other_s_rows() {
    let l = loader();
    commit(
        &l,
        &[("a", vec![run("a1", T0 + 1000, "Successful", T0 + 1100, 1)])],
        7,
    )
    .await;
    commit(
        &l,
        &[("b", vec![run("b1", T0 + 500, "Successful", T0 + 600, 1)])],
        8,
    )
    .await;
    assert_eq!(
        strings(&read(&l, Table::Executions, T0).await, "flow_name"),
        ["a", "b"]
    );
    assert_eq!(
        strings(
            &read(&l, Table::CatalogRegistrations, T0).await,
            "execution_id"
        ),
        ["a1", "b1"]
    );
}

#[tokio::test]
async fn catalog_rows_missing_after_a_crash_are_written_on_the_next_run() {
    let l = loader();
    let rows = vec![run("a1", T0 + 1000, "Successful", T0 + 1100, 2)];
    commit(&l, &[("f", rows.clone())], 7).await;
    // Simulate a crash between the two writes: only the executions file exists.
    let mem = Arc::new(MemoryStore::new());
    let key = PartitionKey {
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        day: crate::stage::day_of(T0).unwrap(),
    };
    let exec = l
        .store()
        .get(&layout::day_file(Table::Executions, &key))
        .await
        .unwrap()
        .unwrap();
    mem.put(
        &layout::day_file(Table::Executions, &key),
        exec.body,
        PutMode::Create,
    )
    .await
    .unwrap();
    let l2 = Loader::new(mem);
    let r = commit(&l2, &[("f", rows)], 9).await;
    assert_eq!((r.files_written, r.files_unchanged), (1, 1));
    assert_eq!(
        read(&l2, Table::CatalogRegistrations, T0).await.num_rows(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_lose_no_rows() {
    let l = loader();
    let tasks = (0..6).map(|w| {
        let l = l.clone();
        tokio::spawn(async move {
            let name = format!("flow-{w}");
            let rows: Vec<_> = (0..20)
                .map(|i| {
                    run(
                        &format!("{w}-{i}"),
                        T0 + i * 3_600_000,
                        "Successful",
                        T0 + i * 3_600_000 + 5,
                        1,
                    )
                })
                .collect();
            commit(&l, &[(name.as_str(), rows)], w).await
        })
    });
    for t in futures::future::join_all(tasks).await {
        t.unwrap();
    }
    let day = read(&l, Table::Executions, T0).await;
    assert_eq!(day.num_rows(), 6 * 20);
    assert_eq!(
        read(&l, Table::CatalogRegistrations, T0).await.num_rows(),
        6 * 20
    );
}

/// A store that lets another writer commit `rows` just before this writer's
/// first catalog put, which then conflicts.
fn interleaved(inner: Arc<MemoryStore>, rows: Vec<ExecutionRecord>) -> Intercepted {
    let other_writer = Arc::new(tokio::sync::Mutex::new(Some(rows)));
    let hook: PutHook = Arc::new({
        let inner = inner.clone();
        move |key, _| {
            let (inner, other_writer) = (inner.clone(), other_writer.clone());
            Box::pin(async move {
                if key.starts_with("catalog_registrations/")
                    && let Some(rows) = other_writer.lock().await.take()
                {
                    commit(&Loader::new(inner), &[("f", rows)], 50).await;
                }
                Ok(None)
            })
        }
    });
    Intercepted::new(inner, hook)
}

#[tokio::test]
async fn a_newer_version_written_meanwhile_keeps_its_catalog_rows() {
    let inner = Arc::new(MemoryStore::new());
    let newer = vec![run("a1", T0 + 1000, "Successful", T0 + 9000, 2)];
    let l = Loader::new(Arc::new(interleaved(inner.clone(), newer)));
    // This writer read the run while it was open, with one catalog detail.
    let r = commit(
        &l,
        &[("f", vec![run("a1", T0 + 1000, "InProgress", T0 + 1100, 1)])],
        7,
    )
    .await;
    assert_eq!(r.conflicts, 1, "the interleaving happened once: {r:?}");
    let check = Loader::new(inner);
    assert_eq!(
        strings(
            &read(&check, Table::Executions, T0).await,
            "execution_status"
        ),
        ["Successful"]
    );
    let cat = read(&check, Table::CatalogRegistrations, T0).await;
    assert_eq!(
        strings(&cat, "table_registration_status"),
        ["Successful", "Successful"],
        "the newer version's catalog rows"
    );
}

#[tokio::test]
async fn only_the_newest_manifests_are_kept() {
    let l = loader();
    for i in 0..5 {
        let m = RunManifest {
            run_id: crate::manifest::run_id(T0 + i * 1000),
            records: i as u64,
            ..Default::default()
        };
        l.write_manifest(&m).await.unwrap();
        let removed = l.prune_manifests(3).await.unwrap();
        assert_eq!(removed, usize::from(i >= 3));
        assert!(
            l.write_manifest(&m).await.is_err(),
            "a run id is written once"
        );
    }
    // A file that is not a manifest is neither counted nor removed.
    l.store()
        .put(
            "_state/runs/notes.txt",
            Bytes::from_static(b"x"),
            PutMode::Create,
        )
        .await
        .unwrap();
    let kept: Vec<u64> = l
        .manifests(10)
        .await
        .unwrap()
        .iter()
        .map(|m| m.records)
        .collect();
    assert_eq!(kept, [4, 3, 2], "newest first");
    assert_eq!(l.store().list(layout::RUNS_PREFIX).await.unwrap().len(), 4);
}

#[tokio::test]
async fn a_corrupt_day_file_is_an_error_naming_it() {
    let l = loader();
    let key = PartitionKey {
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        day: crate::stage::day_of(T0).unwrap(),
    };
    l.store()
        .put(
            &layout::day_file(Table::Executions, &key),
            Bytes::from_static(b"not parquet"),
            PutMode::Create,
        )
        .await
        .unwrap();
    let mut stage = Stage::new().unwrap();
    stage
        .add(&to_batches(&flow("f"), &[run("a1", T0, "Successful", T0 + 1, 0)], 1).unwrap())
        .unwrap();
    let err = l.commit(&mut stage).await.unwrap_err().to_string();
    assert!(
        err.contains(&layout::day_file(Table::Executions, &key)),
        "{err}"
    );
    let obj = l
        .store()
        .get(&layout::day_file(Table::Executions, &key))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(obj.body.as_ref(), b"not parquet", "nothing overwritten");
}

#[tokio::test]
async fn a_state_update_whose_answer_was_lost_under_another_writer_counts_once() {
    // Our put lands, its answer is lost, and another writer's update lands on top
    // before we read back: we cannot tell our write is in, and apply our change again.
    let inner = Arc::new(MemoryStore::new());
    let other = Loader::new(inner.clone());
    let first = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let hook: PutHook = Arc::new({
        let inner = inner.clone();
        move |key, body| {
            let (inner, first, other) = (inner.clone(), first.clone(), other.clone());
            Box::pin(async move {
                if first.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 0 {
                    return Ok(None);
                }
                inner.put(&key, body, PutMode::Create).await?;
                other
                    .update_state("111111111111", "eu-west-1", &flow_update("g", 3), T0)
                    .await
                    .map_err(|e| Error::stage(e.to_string()))?;
                Ok(Some(PutOutcome::Conflict))
            })
        }
    });
    let loader = Loader::new(Arc::new(Intercepted::new(inner, hook)));
    loader
        .update_state("111111111111", "eu-west-1", &flow_update("f", 7), T0)
        .await
        .unwrap();
    let state = loader
        .read_state("111111111111", "eu-west-1")
        .await
        .unwrap();
    assert_eq!(state.flows["f"].records_read, 7, "counted once");
    assert_eq!(state.flows["f"].retention_gaps, 1, "counted once");
    assert_eq!(
        state.flows["g"].records_read, 3,
        "the other writer's update is kept"
    );
}

fn flow_update(name: &str, records: u64) -> BTreeMap<String, FlowUpdate> {
    BTreeMap::from([(
        name.to_string(),
        FlowUpdate {
            flow_arn: format!("arn:{name}"),
            newest_started_ms: Some(T0),
            records_read: records,
            retention_gap: Some((T0 - DAY, T0)),
            read: FlowRead {
                reads_before: Some(0),
                started_ms: Some(T0),
                oldest_open_ms: None,
                pages_sorted: true,
                listed_run: None,
            },
        },
    )])
}
