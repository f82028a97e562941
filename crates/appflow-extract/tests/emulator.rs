//! The extractor against the AppFlow emulator, started in-process on loopback.

use appflow_emulator::{Emulator, Faults, GenConfig, RunningEmulator, loopback};
use std::collections::BTreeMap;

use appflow_extract::{
    ExecutionRecord, ExtractJob, Extractor, FlowEvent, FlowInfo, FlowSelection, FlowSummary,
};
use futures::{StreamExt, stream};

async fn start(flows: usize, runs: usize) -> (Emulator, RunningEmulator, Extractor) {
    let cfg = GenConfig {
        flows,
        runs_per_flow: runs,
        ..GenConfig::small(3)
    };
    let emu = Emulator::generate(&cfg);
    let running = emu.serve(loopback(0)).await.expect("serve");
    let sdk = appflow_emulator::client::sdk_config(&running).await;
    let client = aws_sdk_appflow::Client::new(&sdk);
    (emu, running, Extractor::new(client, "us-east-1"))
}

fn job(flow: &FlowInfo, cutoff: Option<i64>) -> ExtractJob {
    ExtractJob {
        flow: flow.clone(),
        cutoff,
        until: None,
        full_scan: false,
        open_since: None,
    }
}

/// Every flow's pages (concatenated) and its end, by flow name, from `extract`.
type Streamed = BTreeMap<String, (Vec<ExecutionRecord>, Option<Result<FlowSummary, String>>)>;

async fn extract_all(ex: &Extractor, jobs: Vec<ExtractJob>, concurrency: usize) -> Streamed {
    let mut out = Streamed::new();
    let mut events = ex
        .clone()
        .with_concurrency(concurrency)
        .extract(stream::iter(jobs));
    while let Some((job, event)) = events.next().await {
        let (records, end) = out.entry(job.flow.name.clone()).or_default();
        assert!(
            end.is_none(),
            "{}: an event after the flow's end",
            job.flow.name
        );
        match event {
            FlowEvent::Page(page) => records.extend(page),
            FlowEvent::Done(summary) => *end = Some(Ok(summary)),
            FlowEvent::Failed(e) => *end = Some(Err(e.to_string())),
        }
    }
    out
}

#[tokio::test]
async fn reads_every_run_of_every_flow() {
    let (emu, _running, ex) = start(4, 230).await;
    let listing = ex.list_flows(&FlowSelection::All).await.unwrap();
    assert_eq!(listing.flows.len(), 4);
    let jobs = listing.flows.iter().map(|f| job(f, None)).collect();
    let results = extract_all(&ex, jobs, 3).await;
    assert_eq!(results.len(), 4);
    for flow in emu.snapshot() {
        let (records, end) = &results[&flow.definition.flow_name];
        let ids: Vec<_> = records.iter().map(|r| r.execution_id.as_str()).collect();
        let want: Vec<_> = flow
            .records
            .iter()
            .map(|r| r.execution_id.as_str())
            .collect();
        assert_eq!(ids, want);
        let summary = end.clone().unwrap().unwrap();
        assert_eq!(summary.pages, 3, "230 runs in pages of 100");
        assert!(summary.pages_sorted);
        assert_eq!(summary.records, 230);
        assert_eq!(summary.newest_started, Some(flow.records[0].started_at.0));
        let started: Vec<_> = records.iter().map(|r| r.started_at).collect();
        assert_eq!(
            started,
            flow.records
                .iter()
                .map(|r| r.started_at.0)
                .collect::<Vec<_>>(),
            "exact milliseconds"
        );
    }
}

#[tokio::test]
async fn until_keeps_only_the_runs_started_before_it() {
    let (emu, _running, ex) = start(1, 250).await;
    let flow = &ex.list_flows(&FlowSelection::All).await.unwrap().flows[0];
    let records = &emu.snapshot()[0].records;
    let (until, since) = (records[40].started_at.0, records[180].started_at.0);
    let got = ex
        .extract_flow(ExtractJob {
            until: Some(until),
            full_scan: true,
            ..job(flow, Some(since))
        })
        .await
        .unwrap();
    let ids: Vec<_> = got.records.iter().map(|r| r.execution_id.clone()).collect();
    let want: Vec<_> = records[41..=180]
        .iter()
        .map(|r| r.execution_id.clone())
        .collect();
    assert_eq!(ids, want, "since inclusive, until exclusive");
    assert_eq!(got.summary.pages, 3, "a full scan reads to the end");
    assert_eq!(got.summary.newest_started, Some(records[41].started_at.0));
}

#[tokio::test]
async fn stops_after_the_page_that_reaches_the_cutoff_and_keeps_it_inclusive() {
    let (emu, _running, ex) = start(1, 450).await;
    let flow = &ex.list_flows(&FlowSelection::All).await.unwrap().flows[0];
    let records = &emu.snapshot()[0].records;
    let cutoff = records[150].started_at.0; // on the second page
    let got = ex.extract_flow(job(flow, Some(cutoff))).await.unwrap();
    assert_eq!(got.summary.pages, 2);
    assert_eq!(
        got.records.len(),
        151,
        "runs newer than the cutoff and the one exactly at it"
    );
    assert_eq!(got.records.last().unwrap().started_at, cutoff);
}

#[tokio::test]
async fn shuffled_pages_fall_back_to_a_full_scan() {
    let (emu, _running, ex) = start(1, 450).await;
    emu.set_faults(Faults {
        shuffled: true,
        ..Faults::default()
    });
    let flow = &ex.list_flows(&FlowSelection::All).await.unwrap().flows[0];
    let records = &emu.snapshot()[0].records;
    let cutoff = records[150].started_at.0;
    let got = ex.extract_flow(job(flow, Some(cutoff))).await.unwrap();
    assert!(!got.summary.pages_sorted);
    assert_eq!(got.summary.pages, 5, "read to the end");
    let mut ids: Vec<_> = got.records.iter().map(|r| r.execution_id.clone()).collect();
    let mut want: Vec<_> = records[..=150]
        .iter()
        .map(|r| r.execution_id.clone())
        .collect();
    ids.sort();
    want.sort();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried() {
    let (emu, _running, ex) = start(3, 250).await;
    emu.set_faults(Faults {
        throttle_fraction: 0.3,
        fail_next: 2,
        ..Faults::default()
    });
    let listing = ex.list_flows(&FlowSelection::All).await.unwrap();
    let jobs = listing.flows.iter().map(|f| job(f, None)).collect();
    let results = extract_all(&ex, jobs, 3).await;
    assert_eq!(results.len(), 3);
    for (name, (records, end)) in &results {
        assert_eq!(records.len(), 250, "{name}");
        assert_eq!(end.clone().unwrap().unwrap().records, 250, "{name}");
    }
    let c = emu.counters();
    let describe = &c.operations["DescribeFlowExecutionRecords"];
    assert!(describe.throttled > 0, "{c:?}");
    assert_eq!(c.operations.values().map(|o| o.failed).sum::<u64>(), 2);
}

#[tokio::test]
async fn a_malformed_page_fails_the_flow_by_name() {
    let (emu, _running, ex) = start(2, 150).await;
    let listing = ex.list_flows(&FlowSelection::All).await.unwrap();
    let bad = listing.flows[0].name.clone();
    emu.set_faults(Faults {
        malformed_flows: vec![bad.clone()],
        ..Faults::default()
    });
    let err = ex
        .extract_flow(job(&listing.flows[0], None))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("'{bad}'")), "{err}");
    // Streamed, the good first page comes before the failure: the caller must drop it.
    let jobs = listing.flows.iter().map(|f| job(f, None)).collect();
    let results = extract_all(&ex, jobs, 2).await;
    let (pages, end) = &results[&bad];
    assert_eq!(pages.len(), 100, "the first page, before the malformed one");
    assert!(
        end.clone()
            .unwrap()
            .unwrap_err()
            .contains(&format!("'{bad}'"))
    );
    assert!(results[&listing.flows[1].name].1.clone().unwrap().is_ok());
    assert_eq!(
        ex.extract_flow(job(&listing.flows[1], None))
            .await
            .unwrap()
            .records
            .len(),
        150
    );
}

#[tokio::test]
async fn unknown_names_are_reported_and_the_rest_listed() {
    let (emu, _running, ex) = start(3, 5).await;
    let known = emu.snapshot()[1].definition.flow_name.clone();
    let sel = FlowSelection::Names(vec![known.clone(), "does-not-exist".into()]);
    let listing = ex.list_flows(&sel).await.unwrap();
    assert_eq!(
        listing
            .flows
            .iter()
            .map(|f| f.name.clone())
            .collect::<Vec<_>>(),
        vec![known]
    );
    assert_eq!(listing.problems.len(), 1);
    assert!(listing.problems[0].to_string().contains("'does-not-exist'"));
}

#[tokio::test]
async fn a_cancelled_flow_is_read_no_further() {
    let (emu, _running, ex) = start(1, 450).await;
    emu.set_faults(Faults {
        latency_ms: 50,
        ..Faults::default()
    });
    let listing = ex.list_flows(&FlowSelection::All).await.unwrap();
    let name = listing.flows[0].name.clone();
    let ex = ex.with_concurrency(1);
    let mut events = ex.extract(stream::iter([job(&listing.flows[0], None)]));
    let mut pages = 0;
    while let Some((reading, event)) = events.next().await {
        match event {
            FlowEvent::Page(_) => {
                pages += 1;
                reading.cancel();
            }
            other => panic!("no end is reported for a cancelled flow: {other:?}"),
        }
    }
    let calls = emu.counters().describe_calls_by_flow[&name];
    assert!(
        (1..=2).contains(&pages) && calls <= 2,
        "{pages} pages and {calls} calls of 5 after cancelling on the first page"
    );
}
