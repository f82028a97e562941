//! The extractor against the AppFlow emulator, started in-process on loopback.

use appflow_emulator::{Emulator, Faults, GenConfig, RunningEmulator, loopback};
use appflow_extract::{ExtractJob, Extractor, FlowInfo, FlowSelection};
use aws_config::{BehaviorVersion, Region, retry::RetryConfig};
use aws_sdk_appflow::config::Credentials;
use futures::StreamExt;

async fn start(flows: usize, runs: usize) -> (Emulator, RunningEmulator, Extractor) {
    let cfg = GenConfig {
        flows,
        runs_per_flow: runs,
        ..GenConfig::small(3)
    };
    let emu = Emulator::generate(&cfg);
    let running = emu.serve(loopback(0)).await.expect("serve");
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("t", "t", None, None, "test"))
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(8)
                .with_initial_backoff(std::time::Duration::from_millis(5)),
        )
        .load()
        .await;
    let client = aws_sdk_appflow::Client::from_conf(
        aws_sdk_appflow::config::Builder::from(&sdk)
            .endpoint_url(running.endpoint())
            .build(),
    );
    (emu, running, Extractor::new(client, "us-east-1"))
}

fn job(flow: &FlowInfo, cutoff: Option<i64>) -> ExtractJob {
    ExtractJob {
        flow: flow.clone(),
        cutoff,
        full_scan: false,
    }
}

#[tokio::test]
async fn reads_every_run_of_every_flow() {
    let (emu, _running, ex) = start(4, 230).await;
    let listing = ex.list_flows(&FlowSelection::All).await.unwrap();
    assert_eq!(listing.flows.len(), 4);
    let jobs = listing.flows.iter().map(|f| job(f, None)).collect();
    let results: Vec<_> = ex.extract(jobs, 3).collect().await;
    for flow in emu.snapshot() {
        let (_, result) = results
            .iter()
            .find(|(j, _)| j.flow.name == flow.definition.flow_name)
            .unwrap();
        let got = result.as_ref().unwrap();
        let ids: Vec<_> = got
            .records
            .iter()
            .map(|r| r.execution_id.as_str())
            .collect();
        let want: Vec<_> = flow
            .records
            .iter()
            .map(|r| r.execution_id.as_str())
            .collect();
        assert_eq!(ids, want);
        assert_eq!(got.pages, 3, "230 runs in pages of 100");
        assert!(got.pages_sorted);
        let started: Vec<_> = got.records.iter().map(|r| r.started_at).collect();
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
async fn stops_after_the_page_that_reaches_the_cutoff_and_keeps_it_inclusive() {
    let (emu, _running, ex) = start(1, 450).await;
    let flow = &ex.list_flows(&FlowSelection::All).await.unwrap().flows[0];
    let records = &emu.snapshot()[0].records;
    let cutoff = records[150].started_at.0; // on the second page
    let got = ex.extract_flow(job(flow, Some(cutoff))).await.unwrap();
    assert_eq!(got.pages, 2);
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
    assert!(!got.pages_sorted);
    assert_eq!(got.pages, 5, "read to the end");
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
    let results: Vec<_> = ex
        .extract(listing.flows.iter().map(|f| job(f, None)).collect(), 3)
        .collect()
        .await;
    assert!(
        results
            .iter()
            .all(|(_, r)| r.as_ref().is_ok_and(|x| x.records.len() == 250))
    );
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
