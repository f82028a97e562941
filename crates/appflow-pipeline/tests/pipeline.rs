//! The pipeline's run invariants (ARCHITECTURE.md), against the AppFlow emulator on
//! loopback and the in-memory store: what a run leaves in the store is what users
//! and the next run see.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use appflow_emulator::{AddRuns, Emulator, Faults, GenConfig, RunningEmulator, loopback};
use appflow_extract::Extractor;
use appflow_load::{BackfillId, Intercepted, Loader, MemoryStore, ObjectStore, PutHook, decode};
use appflow_pipeline::{
    Backfill, ErrorKind, Observer, Pipeline, Plan, Quiet, RunReport, Staging, Status, Stop,
};
use appflow_transform::{Table, schema_for};
use arrow::array::AsArray;

/// The emulator's history, served on loopback.
async fn emulator(flows: usize, runs: usize) -> (Emulator, RunningEmulator) {
    let emu = Emulator::generate(&GenConfig {
        flows,
        runs_per_flow: runs,
        ..GenConfig::small(7)
    });
    let running = emu.serve(loopback(0)).await.expect("serve the emulator");
    (emu, running)
}

async fn pipeline(running: &RunningEmulator, store: Arc<dyn ObjectStore>) -> Pipeline {
    pipeline_of(running, store, appflow_extract::DEFAULT_CONCURRENCY).await
}

/// A pipeline with at most `concurrency` AppFlow calls in flight.
async fn pipeline_of(
    running: &RunningEmulator,
    store: Arc<dyn ObjectStore>,
    concurrency: usize,
) -> Pipeline {
    let sdk = appflow_emulator::client::sdk_config(running).await;
    let extractor = Extractor::new(aws_sdk_appflow::Client::new(&sdk), "us-east-1")
        .with_concurrency(concurrency)
        .with_sts(aws_sdk_sts::Client::new(&sdk));
    Pipeline::new(extractor, Loader::new(store))
}

fn plan() -> Plan {
    Plan::new("memory://", "test")
}

fn backfill(since_ms: i64, until_ms: i64) -> Plan {
    Plan {
        backfill: Some(Backfill {
            since_ms,
            until_ms,
            id: BackfillId {
                since: "2020-01-01".into(),
                until: None,
            },
            checkpoint_every: Duration::from_secs(300),
            restart: false,
        }),
        ..plan()
    }
}

fn code(status: Status) -> u8 {
    match status {
        Status::Exported => 0,
        Status::FlowsFailed => 1,
        Status::Failed(kind) => 10 + kind as u8,
        Status::Interrupted => 143,
    }
}

async fn run(p: &Pipeline, plan: &Plan) -> (RunReport, appflow_pipeline::Result<()>) {
    p.run_recorded(plan, &Quiet, code).await
}

/// `(flow, execution_id)` of every row of every executions day file, with repeats.
async fn exported(store: &dyn ObjectStore) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for key in store.list("executions/").await.unwrap() {
        let body = store.get(&key).await.unwrap().unwrap().body;
        let batch = decode(body, &schema_for(Table::Executions)).unwrap();
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .clone()
        };
        let (flows, ids) = (col("flow_name"), col("execution_id"));
        for i in 0..batch.num_rows() {
            out.push((flows.value(i).to_string(), ids.value(i).to_string()));
        }
    }
    out.sort();
    out
}

/// Every run the emulator holds, as `(flow, execution_id)`.
fn history(emu: &Emulator) -> Vec<(String, String)> {
    let mut out: Vec<_> = emu
        .snapshot()
        .iter()
        .flat_map(|f| {
            f.records
                .iter()
                .map(|r| (f.definition.flow_name.clone(), r.execution_id.clone()))
        })
        .collect();
    out.sort();
    out
}

fn names(emu: &Emulator) -> Vec<String> {
    emu.snapshot()
        .iter()
        .map(|f| f.definition.flow_name.clone())
        .collect()
}

/// The watermark of each flow in the state.
async fn watermarks(loader: &Loader) -> BTreeMap<String, Option<i64>> {
    let mut out = BTreeMap::new();
    for (_, _, state) in loader.states().await.unwrap() {
        for (name, flow) in state.flows {
            out.insert(name, flow.watermark_ms);
        }
    }
    out
}

#[tokio::test]
async fn a_run_exports_every_run_once_and_a_rerun_writes_no_file() {
    let (emu, running) = emulator(3, 150).await;
    let store = Arc::new(MemoryStore::new());
    let p = pipeline(&running, store.clone()).await;
    let (report, result) = run(&p, &plan()).await;
    result.unwrap();
    assert_eq!((report.flows_exported, report.failures.len()), (3, 0));
    assert_eq!(exported(store.as_ref()).await, history(&emu));

    let (again, result) = run(&p, &plan()).await;
    result.unwrap();
    assert_eq!(again.commit.files_written, 0, "{:?}", again.commit);
    assert!(again.commit.files_unchanged > 0, "{:?}", again.commit);
    assert_eq!(
        again.flows_table.files_written, 0,
        "{:?}",
        again.flows_table
    );
    assert_eq!(exported(store.as_ref()).await, history(&emu));
    let manifests = p.loader().manifests(10).await.unwrap();
    assert_eq!(manifests.len(), 2);
    assert!(
        manifests
            .iter()
            .all(|m| m.exit_code == 0 && m.version == "test")
    );
}

#[tokio::test]
async fn a_flow_that_fails_half_way_leaves_no_row_and_no_watermark() {
    let (emu, running) = emulator(3, 250).await;
    let bad = names(&emu)[1].clone();
    emu.set_faults(Faults {
        malformed_flows: vec![bad.clone()],
        ..Faults::default()
    });
    let store = Arc::new(MemoryStore::new());
    let p = pipeline(&running, store.clone()).await;
    let (report, result) = run(&p, &plan()).await;
    result.unwrap();
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert!(report.failures[0].contains(&bad), "{:?}", report.failures);
    let want: Vec<_> = history(&emu)
        .into_iter()
        .filter(|(f, _)| *f != bad)
        .collect();
    assert_eq!(exported(store.as_ref()).await, want, "none of its rows");
    let marks = watermarks(p.loader()).await;
    assert!(!marks.contains_key(&bad), "no watermark for it: {marks:?}");
    assert_eq!(marks.len(), 2);
    let manifest = &p.loader().manifests(1).await.unwrap()[0];
    assert_eq!(manifest.exit_code, code(Status::FlowsFailed));
}

/// A memory store whose puts under `prefix` are refused (as S3 refuses a denied
/// put: an error naming the key), or panic.
fn refusing(inner: Arc<MemoryStore>, prefix: &'static str, panic: bool) -> Arc<Intercepted> {
    let location = inner.location("");
    let hook: PutHook = Arc::new(move |key, _| {
        let location = location.clone();
        Box::pin(async move {
            if !key.starts_with(prefix) {
                return Ok(None);
            }
            assert!(!panic, "a bug while writing {key}");
            Err(appflow_load::Error::Write {
                location: format!("{location}{key}"),
                source: "AccessDenied".into(),
            })
        })
    });
    Arc::new(Intercepted::new(inner, hook))
}

#[tokio::test]
async fn data_is_committed_before_state_and_a_failed_commit_advances_no_watermark() {
    let (emu, running) = emulator(3, 150).await;
    let inner = Arc::new(MemoryStore::new());
    let p = pipeline(
        &running,
        refusing(inner.clone(), "catalog_registrations/", false),
    )
    .await;
    let (report, result) = run(&p, &plan()).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Destination, "{err}");
    assert_eq!(report.flows_exported, 0, "nothing counts as exported");
    assert!(
        report.current_to.is_empty(),
        "no flow is current: none was committed"
    );
    // Each flow read is a failure, by name (what FlowsFailed and the summary count).
    let failed: BTreeSet<String> = names(&emu)
        .into_iter()
        .filter(|n| {
            report
                .failures
                .iter()
                .any(|f| f.contains(&format!("'{n}'")))
        })
        .collect();
    assert_eq!(
        (report.failures.len(), failed.len()),
        (3, 3),
        "{:?}",
        report.failures
    );
    assert!(
        !inner.list("executions/").await.unwrap().is_empty(),
        "some day files were written before the refusal"
    );
    assert!(
        inner.list("_state/flows/").await.unwrap().is_empty(),
        "no watermark is written before every day file is"
    );
    // The next run, against a destination that takes every write, heals it exactly.
    let healthy = pipeline(&running, inner.clone()).await;
    run(&healthy, &plan()).await.1.unwrap();
    assert_eq!(exported(inner.as_ref()).await, history(&emu));
}

#[tokio::test]
async fn a_retention_gap_counts_once_its_state_is_committed() {
    let (emu, running) = emulator(2, 150).await;
    let inner = Arc::new(MemoryStore::new());
    let healthy = pipeline(&running, inner.clone()).await;
    run(&healthy, &plan()).await.1.unwrap();
    // One flow runs on and AWS drops its history up to the second new run.
    let flow = names(&emu)[0].clone();
    let added = emu.add_runs(&AddRuns {
        count: 3,
        flows: vec![flow.clone()],
        status: Some("Successful".into()),
        start: Some(appflow_pipeline::now_ms() + 60_000),
    });
    let second = emu.snapshot()[0]
        .records
        .iter()
        .find(|r| r.execution_id == added[1].1)
        .map(|r| r.started_at.0)
        .unwrap();
    assert!(emu.drop_runs_before(second, std::slice::from_ref(&flow)) > 0);
    // A run whose state cannot be written found the gap, but does not count it.
    let refused = pipeline(&running, refusing(inner.clone(), "_state/flows/", false)).await;
    let (report, result) = run(&refused, &plan()).await;
    assert_eq!(result.unwrap_err().kind(), ErrorKind::Destination);
    assert_eq!(
        report.retention_gaps, 0,
        "counted before its state was written"
    );
    let found = report.flows.iter().filter(|f| f.retention_gap.is_some());
    assert_eq!(found.count(), 1, "{:?}", report.flows);
    // The next run finds it again (its watermark did not move) and counts it.
    let (report, result) = run(&healthy, &plan()).await;
    result.unwrap();
    assert_eq!(report.retention_gaps, 1);
    assert_eq!(run(&healthy, &plan()).await.0.retention_gaps, 0);
}

#[tokio::test]
async fn a_panic_while_writing_a_day_file_is_a_bug_and_writes_no_state() {
    let (_emu, running) = emulator(2, 50).await;
    let inner = Arc::new(MemoryStore::new());
    let p = pipeline(
        &running,
        refusing(inner.clone(), "catalog_registrations/", true),
    )
    .await;
    let (_, result) = run(&p, &plan()).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Bug, "{err}");
    assert!(!inner.list("executions/").await.unwrap().is_empty());
    assert!(inner.list("_state/flows/").await.unwrap().is_empty());
    let manifest = &Loader::new(inner).manifests(1).await.unwrap()[0];
    assert_eq!(manifest.exit_code, code(Status::Failed(ErrorKind::Bug)));
}

#[tokio::test]
async fn a_staging_folder_that_cannot_be_made_stops_the_run_before_any_read() {
    let (emu, running) = emulator(2, 150).await;
    let store = Arc::new(MemoryStore::new());
    let p = pipeline(&running, store.clone())
        .await
        .with_staging(Staging {
            dir: Some("/nonexistent/appflow-export-test".into()),
            memory_budget: None,
        });
    let (_, result) = run(&p, &plan()).await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Staging, "{err}");
    assert!(
        err.to_string().contains("/nonexistent/appflow-export-test")
            || format!("{err:?}").contains("/nonexistent/appflow-export-test"),
        "{err:?}"
    );
    assert!(
        emu.counters().describe_calls_by_flow.is_empty(),
        "no flow was read"
    );
    assert!(store.list("executions/").await.unwrap().is_empty());
    assert!(store.list("_state/flows/").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staging_folder_lost_part_way_stops_the_run_and_names_the_flow() {
    let (emu, running) = emulator(1, 150).await;
    emu.set_faults(Faults {
        latency_ms: 200,
        ..Faults::default()
    });
    let parent = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let p = pipeline(&running, store.clone())
        .await
        .with_staging(Staging {
            dir: Some(parent.path().to_path_buf()),
            memory_budget: Some(1),
        });
    // The run makes its staging folder before it reads; the first page takes 200 ms
    // to come, and by then the folder is gone (a full or wiped disk).
    let watched = parent.path().to_path_buf();
    let wiper = tokio::spawn(async move {
        for _ in 0..2000 {
            if let Some(Ok(entry)) = std::fs::read_dir(&watched).unwrap().next() {
                std::fs::remove_dir_all(entry.path()).unwrap();
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    });
    let (_, result) = run(&p, &plan()).await;
    assert!(wiper.await.unwrap(), "the staging folder was made");
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Staging, "{err}");
    assert!(err.to_string().contains(&names(&emu)[0]), "{err}");
    assert!(store.list("executions/").await.unwrap().is_empty());
    assert!(store.list("_state/flows/").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_watermark_never_moves_backwards() {
    let (emu, running) = emulator(3, 150).await;
    let store = Arc::new(MemoryStore::new());
    let p = pipeline(&running, store.clone()).await;
    run(&p, &plan()).await.1.unwrap();
    let before = watermarks(p.loader()).await;
    assert_eq!(before.len(), 3);
    // A backfill of the oldest runs only: its newest start is far below each watermark.
    let oldest = emu
        .snapshot()
        .iter()
        .flat_map(|f| f.records.iter().map(|r| r.started_at.0))
        .min()
        .unwrap();
    let (report, result) = run(&p, &backfill(oldest, oldest + 3_600_000)).await;
    result.unwrap();
    assert_eq!(report.flows_exported, 3);
    assert_eq!(watermarks(p.loader()).await, before);
}

#[tokio::test]
async fn a_backfill_rerun_reads_exactly_the_flows_it_had_not_completed() {
    let (emu, running) = emulator(3, 250).await;
    let bad = names(&emu)[2].clone();
    emu.set_faults(Faults {
        malformed_flows: vec![bad.clone()],
        ..Faults::default()
    });
    let store = Arc::new(MemoryStore::new());
    let p = pipeline(&running, store.clone()).await;
    let all = backfill(0, i64::MAX);
    let (first, result) = run(&p, &all).await;
    result.unwrap();
    assert_eq!((first.flows_exported, first.failures.len()), (2, 1));

    emu.set_faults(Faults::default());
    emu.reset_counters();
    let (second, result) = run(&p, &all).await;
    result.unwrap();
    let read: BTreeSet<_> = emu.counters().describe_calls_by_flow.into_keys().collect();
    assert_eq!(read, BTreeSet::from([bad]), "only the flow not completed");
    assert_eq!(second.flows_already_backfilled, 2);
    assert_eq!(exported(store.as_ref()).await, history(&emu));

    emu.reset_counters();
    let (third, result) = run(&p, &all).await;
    result.unwrap();
    assert!(
        emu.counters().describe_calls_by_flow.is_empty(),
        "nothing left to read"
    );
    assert_eq!(third.flows_already_backfilled, 3);
}

/// A history with no open run, exported once: the emulator, the flow whose runs the
/// test opens, the store and the pipeline that exported it.
async fn exported_without_open_runs() -> (
    Emulator,
    RunningEmulator,
    String,
    Arc<MemoryStore>,
    Pipeline,
) {
    let (emu, running) = emulator(2, 40).await;
    let flow = names(&emu)[0].clone();
    let store = Arc::new(MemoryStore::new());
    let p = pipeline(&running, store.clone()).await;
    emu.finish_open_runs(&[]);
    run(&p, &plan()).await.1.unwrap();
    (emu, running, flow, store, p)
}

/// The oldest open run the state holds for `flow`.
async fn oldest_open(p: &Pipeline, flow: &str) -> Option<i64> {
    p.loader().states().await.unwrap()[0].2.flows[flow].oldest_open_ms
}

/// A run of `flow` starts now and stays open.
fn open_a_run(emu: &Emulator, flow: &str) {
    emu.add_runs(&AddRuns {
        count: 1,
        flows: vec![flow.to_string()],
        status: Some("InProgress".into()),
        start: None,
    });
}

/// Holds a run after it has read every flow, before it commits: tells `held` when it
/// gets there and waits for `release`.
struct HoldBeforeCommit {
    held: std::sync::mpsc::Sender<()>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Observer for HoldBeforeCommit {
    fn reading_done(&self) {
        let _ = self.held.send(());
        // The worker's other tasks move to another thread while it waits.
        tokio::task::block_in_place(|| {
            if let Ok(release) = self.release.lock() {
                let _ = release.recv();
            }
        });
    }
}

/// Starts a run of `p` whose clock reads `started_ms`, reads every flow and holds
/// before its commit; the returned sender releases it.
fn run_held(
    p: Pipeline,
    started_ms: i64,
) -> (
    std::sync::mpsc::Sender<()>,
    tokio::task::JoinHandle<appflow_pipeline::Result<()>>,
) {
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let observer = HoldBeforeCommit {
        held: held_tx,
        release: std::sync::Mutex::new(release_rx),
    };
    let handle = tokio::spawn(async move {
        let mut report = RunReport::start(&plan());
        report.started_ms = started_ms;
        p.execute(&plan(), &mut report, &observer).await
    });
    held_rx.recv().expect("the held run reads every flow");
    (release_tx, handle)
}

/// Releases a run [`run_held`] holds and waits for its commit.
async fn commit_held(
    (release, held): (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<appflow_pipeline::Result<()>>,
    ),
) {
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
}

/// Which of two overlapping runs' view of an open run is kept is decided by what they
/// read, not by their hosts' clocks: a run that read after every committed read
/// replaces it, two that overlapped keep what either saw open.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn overlapping_runs_keep_what_either_saw_open_and_a_later_read_replaces_it_whatever_the_clocks()
 {
    let (emu, running, flow, store, p) = exported_without_open_runs().await;
    let oldest_open = || oldest_open(&p, &flow);
    assert_eq!(oldest_open().await, None);

    // A run on a host whose clock is slow reads nothing open and holds; meanwhile a
    // run opens and a run that started later sees it. The slow one commits last.
    let slow = RunReport::start(&plan()).started_ms - 3_600_000;
    let (release, held) = run_held(pipeline(&running, store.clone()).await, slow);
    open_a_run(&emu, &flow);
    run(&p, &plan()).await.1.unwrap();
    let seen = oldest_open().await;
    assert!(seen.is_some());
    commit_held((release, held)).await;
    assert_eq!(
        oldest_open().await,
        seen,
        "the slower run forgot the open run"
    );

    // A run on a host whose clock is a day ahead reads the run open and holds; the
    // run ends and a run on a right clock reads it ended, then the fast one commits.
    let ahead = RunReport::start(&plan()).started_ms + 86_400_000;
    let (release, held) = run_held(pipeline(&running, store.clone()).await, ahead);
    emu.finish_open_runs(&[]);
    run(&p, &plan()).await.1.unwrap();
    assert_eq!(oldest_open().await, None);
    commit_held((release, held)).await;
    assert_eq!(
        oldest_open().await,
        seen,
        "overlapping: what either saw open is kept"
    );

    // The next run reads after both: its view replaces theirs, whatever the clock
    // ahead wrote.
    run(&p, &plan()).await.1.unwrap();
    assert_eq!(oldest_open().await, None, "frozen by a clock ahead");
}

/// Runs longer than the schedule's interval: each reads the state before the one
/// before it commits. A run two of them saw open, which has ended, is let go two
/// commits after the last read that saw it.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn runs_that_overlap_steadily_let_an_ended_run_go() {
    let (emu, running, flow, store, p) = exported_without_open_runs().await;
    let oldest_open = || oldest_open(&p, &flow);
    open_a_run(&emu, &flow);
    let now = || RunReport::start(&plan()).started_ms;
    let held = |at| {
        let store = store.clone();
        let running = &running;
        async move { run_held(pipeline(running, store).await, at) }
    };
    // Each run starts reading before the one before it commits. Runs 1 and 2 read
    // the run open; it ends before run 3 reads.
    let mut in_flight = held(now()).await;
    let mut seen = Vec::new();
    for n in 2..=5 {
        if n == 3 {
            emu.finish_open_runs(&[]);
        }
        let next = held(now()).await;
        commit_held(std::mem::replace(&mut in_flight, next)).await;
        seen.push(oldest_open().await.is_some());
    }
    commit_held(in_flight).await;
    seen.push(oldest_open().await.is_some());
    // Held after runs 1, 2 and 3 commit (run 3's read overlapped run 2's, which saw it
    // open); let go from run 4's commit on, whatever runs overlap.
    assert_eq!(
        seen,
        [true, true, true, false, false],
        "open run held after each commit"
    );
}

/// Asks the run to stop when the `after`-th flow ends.
struct StopAfter {
    stop: Stop,
    after: usize,
    done: std::sync::atomic::AtomicUsize,
}

impl Observer for StopAfter {
    fn flow_done(&self) {
        let done = self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if done == self.after {
            self.stop.request("test");
        }
    }
}

#[tokio::test]
async fn a_stopped_run_commits_exactly_the_flows_it_read_to_their_end() {
    let (emu, running) = emulator(8, 400).await;
    // One long flow (24 pages) among short ones (4): it is in flight when the second
    // short flow ends, and slow pages keep it reading.
    let long = names(&emu)[0].clone();
    emu.add_runs(&AddRuns {
        count: 2000,
        flows: vec![long.clone()],
        status: Some("Successful".into()),
        start: None,
    });
    emu.set_faults(Faults {
        latency_ms: 20,
        ..Faults::default()
    });
    let store = Arc::new(MemoryStore::new());
    let stop = Stop::default();
    // One call in flight: FLOWS_PER_SLOT flows read at once, fewer than the 8.
    let p = pipeline_of(&running, store.clone(), 1)
        .await
        .with_stop(stop.clone());
    let observer = StopAfter {
        stop: stop.clone(),
        after: 2,
        done: Default::default(),
    };
    let stopping = Plan {
        stop_timeout: Duration::ZERO,
        ..plan()
    };
    let (report, result) = p.run_recorded(&stopping, &observer, code).await;
    result.unwrap();
    assert_eq!(report.interrupted.as_deref(), Some("test"));
    let done: BTreeSet<String> = report
        .flows
        .iter()
        .filter(|f| f.error.is_none() && !f.interrupted)
        .map(|f| f.flow_name.clone())
        .collect();
    assert_eq!(done.len(), report.flows_exported);
    assert!(
        (2..8).contains(&done.len()),
        "{} flows read to the end",
        done.len()
    );
    assert!(
        report
            .flows
            .iter()
            .any(|f| f.interrupted && f.flow_name == long),
        "the long flow was not given up: {:?}",
        report.flows
    );
    assert_eq!(report.flows_not_read, 8 - done.len());
    // Only the flows read to their end have rows and watermarks, and all their rows.
    let wanted: Vec<_> = history(&emu)
        .into_iter()
        .filter(|(flow, _)| done.contains(flow))
        .collect();
    assert_eq!(exported(store.as_ref()).await, wanted);
    let marked: BTreeSet<String> = watermarks(p.loader()).await.into_keys().collect();
    assert_eq!(marked, done);
    let manifest = p.loader().manifests(1).await.unwrap().remove(0);
    assert_eq!(
        (manifest.interrupted.as_deref(), manifest.exit_code),
        (Some("test"), 143)
    );

    // The next run reads the rest and the export is whole.
    let p = pipeline(&running, store.clone()).await;
    let (_, result) = run(&p, &plan()).await;
    result.unwrap();
    assert_eq!(exported(store.as_ref()).await, history(&emu));
}

/// Asks the run to stop when it starts committing.
struct StopAtCommit(Stop);

impl Observer for StopAtCommit {
    fn merging(&self) {
        self.0.request("test");
    }
}

#[tokio::test]
async fn a_stop_asked_once_every_flow_was_read_gives_up_nothing() {
    let (emu, running) = emulator(3, 150).await;
    let store = Arc::new(MemoryStore::new());
    let stop = Stop::default();
    let p = pipeline(&running, store.clone())
        .await
        .with_stop(stop.clone());
    let (report, result) = p
        .run_recorded(&plan(), &StopAtCommit(stop.clone()), code)
        .await;
    result.unwrap();
    assert_eq!(stop.requested().as_deref(), Some("test"));
    assert_eq!(report.interrupted, None, "nothing was left to give up");
    assert_eq!((report.flows_exported, report.flows_not_read), (3, 0));
    assert_eq!(
        report.flows_table.files_written, 1,
        "the flows table is written"
    );
    let manifest = &Loader::new(store.clone()).manifests(1).await.unwrap()[0];
    assert_eq!(manifest.exit_code, code(Status::Exported));
    assert_eq!(exported(store.as_ref()).await, history(&emu));
}
