//! Paging `DescribeFlowExecutionRecords` for many flows at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use appflow_aws::{CallGate, Calls, Service, explain};
use aws_sdk_appflow::Client;
use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};

use appflow_model::{ExecutionRecord, FlowDetails, FlowInfo, supersedes};

use crate::error::{Error, Result};
use crate::flows::{FlowSelection, details_from_sdk};
use crate::record::record_from_sdk;

/// The page size asked for: the API's maximum.
const PAGE_SIZE: i32 = 100;

/// AppFlow calls in flight at most, unless [`Extractor::with_concurrency`] says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// Flows read at once for each call that may be in flight: a flow waiting out the
/// backoff of a throttled call holds no slot, and others use it meanwhile (with one
/// flow a slot, AWS throttling 10% of calls at random left slots idle a third of the
/// time; BENCHMARKS.md).
pub const FLOWS_PER_SLOT: usize = 4;

/// Reads flows and their runs through one AppFlow client, every call through the
/// extractor's [`CallGate`] (the account and region's limit of calls in flight).
#[derive(Clone, Debug)]
pub struct Extractor {
    /// The client as given, without the gate.
    config: aws_sdk_appflow::Config,
    /// The same client, its requests sent through `gate`.
    client: Client,
    gate: CallGate,
    region: String,
    /// Names the account when `ListFlows` returns no flow (no ARN to read it from).
    sts: Option<aws_sdk_sts::Client>,
}

/// The flows `ListFlows` returned that were selected.
#[derive(Debug, Default)]
pub struct FlowListing {
    pub flows: Vec<FlowInfo>,
    /// Every flow listed, selected or not (the `flows` table), in `FlowInfo` order,
    /// one per name; flows whose ARN cannot be used are left out.
    pub details: Vec<FlowDetails>,
    /// Selected names that do not exist, or flows whose ARN cannot be used.
    pub problems: Vec<Error>,
    /// `ListFlows` pages received.
    pub pages: u64,
}

/// One flow to read, and from where.
#[derive(Clone, Debug)]
pub struct ExtractJob {
    pub flow: FlowInfo,
    /// Keep runs with `startedAt >= cutoff` (epoch ms); `None` keeps every run.
    pub cutoff: Option<i64>,
    /// Keep only runs with `startedAt < until` (a backfill's window); `None`: no end.
    pub until: Option<i64>,
    /// Page to the end even when the cutoff is passed (the flow's pages were not
    /// newest-first last time, so an early stop could miss runs; or a backfill).
    pub full_scan: bool,
    /// Open runs started before this (epoch ms) are stuck (open longer than
    /// `--max-open-age`): they do not count as the flow's oldest open run, so they hold
    /// no later read back, while a newer open run still does. `None`: every open run counts.
    pub open_since: Option<i64>,
}

/// A flow being read by [`Extractor::extract`]: its job, and a way to stop reading it.
#[derive(Clone, Debug)]
pub struct Reading {
    job: Arc<ExtractJob>,
    cancelled: Arc<AtomicBool>,
}

impl Reading {
    /// Stops reading the flow: no page after the one being read, and no end event.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }
}

impl std::ops::Deref for Reading {
    type Target = ExtractJob;

    fn deref(&self) -> &ExtractJob {
        &self.job
    }
}

/// What the reading of one flow yields, in this order: its pages, then its end.
#[derive(Debug)]
pub enum FlowEvent {
    /// The runs of one page that the job keeps, in the order the API returned them.
    /// A run may come again on a later page (pages shift while runs start), in the
    /// same or a newer version.
    Page(Vec<ExecutionRecord>),
    /// The flow was read to its end or its cutoff: nothing more comes.
    Done(FlowSummary),
    /// The flow could not be read: nothing more comes, and the pages it yielded
    /// must not be used (a flow is exported whole or not at all).
    Failed(Error),
}

/// What was read of one flow, folded page by page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowSummary {
    /// `DescribeFlowExecutionRecords` pages received.
    pub pages: u64,
    /// Whether every page read came newest-first (by `startedAt`); when one did not,
    /// the read went on to the end of the history.
    pub pages_sorted: bool,
    /// Runs kept (a run read twice counts twice).
    pub records: u64,
    /// The newest `startedAt` kept.
    pub newest_started: Option<i64>,
    /// The oldest `startedAt` of a kept run that is still open in its newest version.
    pub oldest_open: Option<i64>,
    /// The oldest `startedAt` of any run the pages returned, kept or not: at the end of
    /// the history, the oldest run AWS still holds ([`crate::retention_gap`]).
    pub oldest_returned: Option<i64>,
}

/// A whole flow, read into memory (for tests and small reads; `run` streams).
#[derive(Debug)]
pub struct FlowExtract {
    pub job: ExtractJob,
    /// Runs kept, in the order read (a run read twice is here twice).
    pub records: Vec<ExecutionRecord>,
    pub summary: FlowSummary,
}

/// The summary of a flow being read. Open runs are tracked by id, so a run read
/// open and then again finished (a later page, a newer version) is not open. Runs
/// first read finished are not tracked (that would hold every id of the history): an
/// older, open version read after the finished one would count as open, which only
/// holds the next cutoff back (AWS answers each page with its current versions, so a
/// later page does not bring an older one).
#[derive(Debug)]
struct Fold {
    summary: FlowSummary,
    /// Runs seen open: id -> (last updated, started, open in the newest version).
    open: HashMap<String, (Option<i64>, i64, bool)>,
}

impl Fold {
    fn new() -> Self {
        Fold {
            summary: FlowSummary {
                pages_sorted: true,
                ..FlowSummary::default()
            },
            open: HashMap::new(),
        }
    }

    fn kept(&mut self, rec: &ExecutionRecord) {
        let s = &mut self.summary;
        s.records += 1;
        s.newest_started = s.newest_started.max(Some(rec.started_at));
        match self.open.get_mut(&rec.execution_id) {
            Some(seen) if supersedes(rec.last_updated_at, seen.0) => {
                *seen = (rec.last_updated_at, rec.started_at, rec.is_open());
            }
            Some(_) => {}
            None if rec.is_open() => {
                self.open.insert(
                    rec.execution_id.clone(),
                    (rec.last_updated_at, rec.started_at, true),
                );
            }
            None => {}
        }
    }

    /// The summary; the oldest open run is the oldest started at or after `open_since`.
    fn finish(mut self, open_since: Option<i64>) -> FlowSummary {
        let since = open_since.unwrap_or(i64::MIN);
        self.summary.oldest_open = self
            .open
            .values()
            .filter(|(_, started, open)| *open && *started >= since)
            .map(|(_, started, _)| *started)
            .min();
        self.summary
    }
}

impl Extractor {
    /// An extractor using `client` (configured with retry, timeout and endpoint) for
    /// the flows of `region`: named in messages, and the region of the account that
    /// [`Extractor::caller_account`] names. Its calls go through a [`CallGate`] of
    /// [`DEFAULT_CONCURRENCY`] slots, wrapped around the client's HTTP client.
    pub fn new(client: Client, region: impl Into<String>) -> Self {
        let config = client.config().clone();
        let gate = CallGate::new(DEFAULT_CONCURRENCY);
        Extractor {
            client: gated(&config, &gate),
            config,
            gate,
            region: region.into(),
            sts: None,
        }
    }

    /// The extractor with at most `concurrency` AppFlow calls in flight (the ceiling of
    /// its adaptive limit, `--concurrency`), reading [`FLOWS_PER_SLOT`] times as many
    /// flows at once.
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.gate = CallGate::new(concurrency);
        self.client = gated(&self.config, &self.gate);
        self
    }

    /// AppFlow attempts and throttled attempts so far, and the lowest and highest
    /// limit of calls in flight since the previous `take_calls`, which this one
    /// starts afresh (see [`CallGate::take_calls`]).
    pub fn take_calls(&self) -> Calls {
        self.gate.take_calls()
    }

    /// The extractor with an STS client (of the same credentials) to name the
    /// account by [`Extractor::caller_account`].
    pub fn with_sts(mut self, sts: aws_sdk_sts::Client) -> Self {
        self.sts = Some(sts);
        self
    }

    /// The region this extractor reads.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The account of the credentials in use (STS `GetCallerIdentity`, which needs
    /// no IAM permission).
    pub async fn caller_account(&self) -> Result<String> {
        let Some(sts) = &self.sts else {
            return Err(Error::Identity("no STS client was configured".into()));
        };
        let identity = sts.get_caller_identity().send().await.map_err(|e| {
            Error::Identity(explain(Service::Sts, "sts:GetCallerIdentity", &e).into())
        })?;
        identity
            .account()
            .map(str::to_string)
            .ok_or_else(|| Error::Identity("GetCallerIdentity returned no account".into()))
    }

    /// Lists the flows selected by `selection`. A name in [`FlowSelection::Names`]
    /// that ListFlows does not return is reported in `problems`, not fatal.
    pub async fn list_flows(&self, selection: &FlowSelection) -> Result<FlowListing> {
        let mut pages = self
            .client
            .list_flows()
            .max_results(PAGE_SIZE)
            .into_paginator()
            .send();
        let mut found = Vec::new();
        let mut details = Vec::new();
        let mut problems = Vec::new();
        let mut count = 0;
        while let Some(page) = pages.next().await {
            count += 1;
            let page = page.map_err(|e| {
                Error::ListFlows(explain(Service::AppFlow, "appflow:ListFlows", &e).into())
            })?;
            for def in page.flows() {
                let (Some(name), Some(arn)) = (def.flow_name(), def.flow_arn()) else {
                    continue;
                };
                let info = FlowInfo::from_arn(name, arn);
                if let Ok(flow) = &info {
                    details.push(details_from_sdk(flow.clone(), def));
                }
                if selection.matches(name) {
                    match info {
                        Ok(flow) => found.push(flow),
                        Err(e) => problems.push(e.into()),
                    }
                }
            }
        }
        if let FlowSelection::Names(names) = selection {
            for name in names {
                if !found.iter().any(|f| &f.name == name) {
                    problems.push(Error::UnknownFlow {
                        flow: name.clone(),
                        region: self.region.clone(),
                    });
                }
            }
        }
        found.sort();
        found.dedup_by(|a, b| a.name == b.name);
        details.sort_by(|a, b| a.flow.cmp(&b.flow));
        details.dedup_by(|a, b| a.flow.name == b.flow.name);
        Ok(FlowListing {
            flows: found,
            details,
            problems,
            pages: count,
        })
    }

    /// Reads the jobs, [`FLOWS_PER_SLOT`] flows at a time for each call the gate may
    /// let through, each in a task of its own, yielding every flow's pages as they
    /// arrive and then its end ([`FlowEvent`]). Jobs are taken from `jobs` only when a
    /// flow finishes, so a caller can stop feeding it (end the stream) and see the
    /// flows in flight end. Paging pauses while the caller is busy: at most the
    /// ceiling plus one page a flow being read wait for it (a page is at most 100 runs).
    pub fn extract(
        &self,
        jobs: impl Stream<Item = ExtractJob> + Send + 'static,
    ) -> mpsc::Receiver<(Reading, FlowEvent)> {
        let slots = self.gate.ceiling();
        let concurrency = slots * FLOWS_PER_SLOT;
        let (tx, rx) = mpsc::channel(slots);
        let this = self.clone();
        tokio::spawn(jobs.for_each_concurrent(concurrency, move |job| {
            let (this, mut tx) = (this.clone(), tx.clone());
            async move {
                if tx.is_closed() {
                    return; // the caller stopped listening: read no more flows
                }
                let job = Reading {
                    job: Arc::new(job),
                    cancelled: Arc::new(AtomicBool::new(false)),
                };
                let task = tokio::spawn({
                    let (job, mut tx) = (job.clone(), tx.clone());
                    async move {
                        let mut reader = this.reader(&job);
                        let end = loop {
                            if tx.is_closed() || job.cancelled.load(Ordering::Relaxed) {
                                return;
                            }
                            match reader.next_page().await {
                                Ok(Some(page)) => {
                                    let page = (job.clone(), FlowEvent::Page(page));
                                    if tx.send(page).await.is_err() {
                                        return; // the caller stopped listening
                                    }
                                }
                                Ok(None) => break FlowEvent::Done(reader.summary()),
                                Err(e) => break FlowEvent::Failed(e),
                            }
                        };
                        let _ = tx.send((job, end)).await;
                    }
                });
                if let Err(e) = task.await {
                    let (flow, source) = (job.flow.name.clone(), e.to_string().into());
                    let failed = FlowEvent::Failed(if e.is_panic() {
                        Error::Bug { flow, source }
                    } else {
                        Error::Describe { flow, source }
                    });
                    let _ = tx.send((job, failed)).await;
                }
            }
        }));
        rx
    }

    /// Reads one whole flow into memory.
    pub async fn extract_flow(&self, job: ExtractJob) -> Result<FlowExtract> {
        let mut reader = self.reader(&job);
        let mut records = Vec::new();
        while let Some(page) = reader.next_page().await? {
            records.extend(page);
        }
        Ok(FlowExtract {
            summary: reader.summary(),
            job,
            records,
        })
    }

    /// A reader of one flow's pages.
    pub fn reader(&self, job: &ExtractJob) -> FlowReader {
        FlowReader {
            client: self.client.clone(),
            flow: job.flow.name.clone(),
            cutoff: job.cutoff.unwrap_or(i64::MIN),
            until: job.until.unwrap_or(i64::MAX),
            full_scan: job.full_scan,
            open_since: job.open_since,
            token: None,
            finished: false,
            previous: None,
            fold: Fold::new(),
        }
    }
}

/// `config`'s client with its requests sent through `gate`. An attempt's wait for a
/// slot is part of the attempt as the SDK times it, and waiting for the limit is not a
/// timeout: the client has no attempt timeout (a silent endpoint still fails by the
/// connector's connect and read timeouts, which start once the request is sent).
fn gated(config: &aws_sdk_appflow::Config, gate: &CallGate) -> Client {
    let inner = config
        .http_client()
        .unwrap_or_else(appflow_aws::default_http_client);
    let timeouts = config
        .timeout_config()
        .map(|t| t.to_builder())
        .unwrap_or_default()
        .disable_operation_attempt_timeout()
        .build();
    let config = config
        .to_builder()
        .http_client(gate.http_client(inner))
        .timeout_config(timeouts);
    Client::from_conf(config.build())
}

/// Pages one flow newest-first, one page per [`FlowReader::next_page`], and stops
/// after the first page that reaches past the cutoff, unless the order is broken or
/// the job asks for a full scan (then it reads to the end).
#[derive(Debug)]
pub struct FlowReader {
    client: Client,
    flow: String,
    cutoff: i64,
    until: i64,
    full_scan: bool,
    open_since: Option<i64>,
    /// The next page's token (`None` before the first page).
    token: Option<String>,
    finished: bool,
    /// The `startedAt` of the last run read, to check the order.
    previous: Option<i64>,
    fold: Fold,
}

impl FlowReader {
    /// The runs of the next page that the job keeps (pages that keep none are
    /// skipped); `None` once the flow is read.
    pub async fn next_page(&mut self) -> Result<Option<Vec<ExecutionRecord>>> {
        while !self.finished {
            let response = self
                .client
                .describe_flow_execution_records()
                .flow_name(&self.flow)
                .max_results(PAGE_SIZE)
                .set_next_token(self.token.clone())
                .send()
                .await
                .map_err(|e| Error::Describe {
                    flow: self.flow.clone(),
                    source: explain(Service::AppFlow, "appflow:DescribeFlowExecutionRecords", &e)
                        .into(),
                })?;
            self.fold.summary.pages += 1;
            let mut oldest_on_page: Option<i64> = None;
            let mut kept = Vec::with_capacity(response.flow_executions().len());
            for raw in response.flow_executions() {
                let rec = record_from_sdk(&self.flow, raw)?;
                if self.previous.is_some_and(|p| rec.started_at > p)
                    && self.fold.summary.pages_sorted
                {
                    tracing::warn!(flow = %self.flow, "runs are not newest-first; reading the whole history of this flow");
                    self.fold.summary.pages_sorted = false;
                }
                self.previous = Some(rec.started_at);
                oldest_on_page =
                    Some(oldest_on_page.map_or(rec.started_at, |o| o.min(rec.started_at)));
                if (self.cutoff..self.until).contains(&rec.started_at) {
                    self.fold.kept(&rec);
                    kept.push(rec);
                }
            }
            let s = &mut self.fold.summary;
            s.oldest_returned = match (s.oldest_returned, oldest_on_page) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            // As the SDK's paginators do, a token equal to the last one ends the
            // read rather than looping on one page.
            let next = response.next_token().filter(|t| !t.is_empty());
            let passed_cutoff = oldest_on_page.is_some_and(|o| o < self.cutoff);
            self.finished = next.is_none()
                || next == self.token.as_deref()
                || (passed_cutoff && self.fold.summary.pages_sorted && !self.full_scan);
            self.token = next.map(str::to_string);
            if !kept.is_empty() {
                return Ok(Some(kept));
            }
        }
        Ok(None)
    }

    /// What was read (call once [`FlowReader::next_page`] returned `None`).
    pub fn summary(self) -> FlowSummary {
        let summary = self.fold.finish(self.open_since);
        tracing::debug!(flow = %self.flow, pages = summary.pages, records = summary.records, "flow read");
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appflow_model::testkit::run;
    use aws_config::timeout::TimeoutConfig;
    use std::time::Duration;

    #[test]
    fn the_gated_client_times_connections_and_reads_but_not_the_wait_for_a_slot() {
        let secs = Duration::from_secs;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(secs(5))
            .read_timeout(secs(60))
            .operation_attempt_timeout(secs(90))
            .build();
        let config = aws_sdk_appflow::Config::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("eu-west-2"))
            .timeout_config(timeouts)
            .build();
        let extractor = Extractor::new(Client::from_conf(config), "eu-west-2");
        let gated = extractor.client.config().timeout_config().cloned();
        let gated = gated.expect("the timeouts are kept");
        assert_eq!(gated.connect_timeout(), Some(secs(5)));
        assert_eq!(gated.read_timeout(), Some(secs(60)));
        assert_eq!(gated.operation_attempt_timeout(), None);
        assert!(extractor.client.config().http_client().is_some());
    }

    #[test]
    fn an_open_run_stuck_before_open_since_is_not_the_oldest_open_run() {
        let fold = || {
            let mut fold = Fold::new();
            fold.kept(&run("recent", 900, "InProgress", 910));
            fold.kept(&run("stuck", 100, "InProgress", 110));
            fold
        };
        assert_eq!(fold().finish(None).oldest_open, Some(100));
        assert_eq!(fold().finish(Some(500)).oldest_open, Some(900));
        assert_eq!(fold().finish(Some(950)).oldest_open, None);
    }

    #[test]
    fn a_run_read_open_and_again_finished_is_not_open() {
        let mut fold = Fold::new();
        for rec in [
            run("a", 300, "InProgress", 310),
            run("b", 200, "InProgress", 210),
            run("c", 100, "Successful", 110),
            // A later page repeats a and b: a finished meanwhile, b did not.
            run("a", 300, "Successful", 400),
            run("b", 200, "InProgress", 210),
            // An older version of a read after its newer one changes nothing.
            run("a", 300, "InProgress", 310),
        ] {
            fold.kept(&rec);
        }
        let s = fold.finish(None);
        assert_eq!(
            (s.records, s.newest_started, s.oldest_open),
            (6, Some(300), Some(200))
        );
        let mut none_open = Fold::new();
        none_open.kept(&run("a", 300, "InProgress", 310));
        none_open.kept(&run("a", 300, "Error", 320));
        assert_eq!(none_open.finish(None).oldest_open, None);
    }
}
