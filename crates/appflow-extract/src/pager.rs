//! Paging `DescribeFlowExecutionRecords` for many flows at once.

use aws_sdk_appflow::Client;
use aws_sdk_appflow::error::DisplayErrorContext;
use futures::stream::{self, Stream, StreamExt};

use crate::error::{Error, Result};
use crate::flows::{FlowDetails, FlowInfo, FlowSelection};
use crate::record::ExecutionRecord;

/// The page size asked for: the API's maximum.
const PAGE_SIZE: i32 = 100;

/// Reads flows and their runs through one AppFlow client.
#[derive(Clone, Debug)]
pub struct Extractor {
    client: Client,
    region: String,
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
    /// Page to the end even when the cutoff is passed (the flow's pages were not
    /// newest-first last time, so an early stop could miss runs).
    pub full_scan: bool,
}

/// What was read of one flow.
#[derive(Debug)]
pub struct FlowExtract {
    pub job: ExtractJob,
    /// Runs at or after the cutoff, in the order the API returned them.
    pub records: Vec<ExecutionRecord>,
    /// `DescribeFlowExecutionRecords` pages received.
    pub pages: u64,
    /// Whether every page read came newest-first (by `startedAt`); when one did not,
    /// the read went on to the end of the history.
    pub pages_sorted: bool,
}

impl Extractor {
    /// An extractor using `client` (configured with retry, timeout and endpoint).
    /// `region` is only used in messages.
    pub fn new(client: Client, region: impl Into<String>) -> Self {
        Extractor {
            client,
            region: region.into(),
        }
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
            let page =
                page.map_err(|e| Error::ListFlows(DisplayErrorContext(e).to_string().into()))?;
            for def in page.flows() {
                let (Some(name), Some(arn)) = (def.flow_name(), def.flow_arn()) else {
                    continue;
                };
                let info = FlowInfo::from_arn(name, arn);
                if let Ok(flow) = &info {
                    details.push(FlowDetails::from_sdk(flow.clone(), def));
                }
                if selection.matches(name) {
                    match info {
                        Ok(flow) => found.push(flow),
                        Err(e) => problems.push(e),
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

    /// Reads the jobs, at most `concurrency` flows at a time, yielding each flow's
    /// result as soon as it is complete (never a partial flow). Each flow is a task
    /// of its own, so paging goes on while the caller processes finished flows.
    pub fn extract(
        &self,
        jobs: Vec<ExtractJob>,
        concurrency: usize,
    ) -> impl Stream<Item = (ExtractJob, Result<FlowExtract>)> + use<> {
        let this = self.clone();
        stream::iter(jobs)
            .map(move |job| {
                // buffer_unordered asks for the next job only when there is room,
                // so at most `concurrency` tasks exist at once.
                let task = tokio::spawn({
                    let (this, job) = (this.clone(), job.clone());
                    async move { this.extract_flow(job).await }
                });
                async move {
                    let result = task.await.unwrap_or_else(|e| {
                        Err(Error::Describe {
                            flow: job.flow.name.clone(),
                            source: e.to_string().into(),
                        })
                    });
                    (job, result)
                }
            })
            .buffer_unordered(concurrency.max(1))
    }

    /// Pages one flow newest-first and stops after the first page that reaches past
    /// the cutoff, unless the order is broken (then it reads to the end).
    pub async fn extract_flow(&self, job: ExtractJob) -> Result<FlowExtract> {
        let flow = job.flow.name.clone();
        let mut pages = self
            .client
            .describe_flow_execution_records()
            .flow_name(&flow)
            .max_results(PAGE_SIZE)
            .into_paginator()
            .send();
        let mut out = FlowExtract {
            job,
            records: Vec::new(),
            pages: 0,
            pages_sorted: true,
        };
        let cutoff = out.job.cutoff.unwrap_or(i64::MIN);
        let mut previous: Option<i64> = None;
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Error::Describe {
                flow: flow.clone(),
                source: DisplayErrorContext(e).to_string().into(),
            })?;
            out.pages += 1;
            let mut oldest_on_page = None;
            for raw in page.flow_executions() {
                let rec = ExecutionRecord::from_sdk(&flow, raw)?;
                if previous.is_some_and(|p| rec.started_at > p) && out.pages_sorted {
                    tracing::warn!(flow = %flow, "runs are not newest-first; reading the whole history of this flow");
                    out.pages_sorted = false;
                }
                previous = Some(rec.started_at);
                oldest_on_page =
                    Some(oldest_on_page.map_or(rec.started_at, |o: i64| o.min(rec.started_at)));
                if rec.started_at >= cutoff {
                    out.records.push(rec);
                }
            }
            let passed_cutoff = oldest_on_page.is_some_and(|o| o < cutoff);
            if passed_cutoff && out.pages_sorted && !out.job.full_scan {
                break;
            }
        }
        dedupe(&mut out.records);
        tracing::debug!(flow = %flow, pages = out.pages, records = out.records.len(), "flow read");
        Ok(out)
    }
}

/// Keeps one record per execution id (the newest `lastUpdatedAt`; the later one read
/// on a tie), in first-seen order: pages that shift while they are read may return
/// a run twice.
fn dedupe(records: &mut Vec<ExecutionRecord>) {
    let mut seen: std::collections::HashMap<String, usize> =
        std::collections::HashMap::with_capacity(records.len());
    let mut kept: Vec<ExecutionRecord> = Vec::with_capacity(records.len());
    for rec in records.drain(..) {
        match seen.get(&rec.execution_id) {
            Some(&i) if rec.last_updated_at >= kept[i].last_updated_at => kept[i] = rec,
            Some(_) => {}
            None => {
                seen.insert(rec.execution_id.clone(), kept.len());
                kept.push(rec);
            }
        }
    }
    *records = kept;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_read_twice_is_kept_once_in_its_newest_version() {
        let rec = |id: &str, updated: i64| ExecutionRecord {
            last_updated_at: Some(updated),
            ..ExecutionRecord::new(id, 1)
        };
        let mut records = vec![rec("a", 5), rec("b", 1), rec("a", 9), rec("a", 7)];
        dedupe(&mut records);
        let got: Vec<_> = records
            .iter()
            .map(|r| (r.execution_id.as_str(), r.last_updated_at))
            .collect();
        assert_eq!(got, [("a", Some(9)), ("b", Some(1))]);
    }
}
