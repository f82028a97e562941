//! A round: read flows until the queue is empty or a backfill's checkpoint is due,
//! then commit what was read, in the commit order. An incremental run is one round.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Instant;

use appflow_extract::{
    ExtractJob, FlowEvent, FlowSummary, Reading, Resume, RetentionGap, retention_gap,
};
use appflow_load::{AddId, BackfilledFlow, FlowRead, FlowRun, FlowUpdate, GapWindow, Stage};
use appflow_model::{FlowInfo, LastRun};
use futures::StreamExt;

use crate::Pipeline;
use crate::error::{Error, Result};
use crate::observer::Observer;
use crate::plan::Plan;
use crate::report::RunReport;
use crate::time::{iso, now_ms};

/// The flows still to read, shared by the rounds of one run.
pub(crate) type Queue = Arc<Mutex<VecDeque<ExtractJob>>>;

/// The flows one round read to their end, and their staged rows.
pub(crate) struct Round {
    stage: Stage,
    /// Each flow read whole, in the order they ended.
    pub flows: Vec<ReadFlow>,
}

/// A flow read to its end: what the read found, what this run's listing showed of
/// it, and the runs AWS no longer returns that no export read.
pub(crate) struct ReadFlow {
    flow: FlowInfo,
    summary: FlowSummary,
    listed: Option<LastRun>,
    gap: Option<RetentionGap>,
    /// The flow's reads in the state the run started from ([`Resume::reads`]).
    reads_before: u64,
}

/// Sets its flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Pipeline {
    /// Reads flows from `queue` until it is empty or, in a backfill, the round has
    /// lasted `--checkpoint-every` (then no flow is started and those in flight end).
    /// A flow's pages are staged as they come; a flow that fails half-way has its
    /// pages discarded, so nothing of it is committed. A flow read to its end is
    /// checked for a retention gap against what it resumed from (`resumes`).
    pub(crate) async fn read_round(
        &self,
        plan: &Plan,
        queue: &Queue,
        resumes: &HashMap<FlowInfo, Resume>,
        report: &mut RunReport,
        observer: &dyn Observer,
    ) -> Result<Round> {
        let now = report.started_ms;
        let started = Instant::now();
        // The round takes jobs until the queue is empty or, in a backfill, it has
        // lasted --checkpoint-every (it always takes one). It also takes none once
        // this function returns, early or not: no flow is started that nobody reads.
        let stop = Arc::new(AtomicBool::new(false));
        let _stop_on_return = StopOnDrop(stop.clone());
        let checkpoint = plan.backfill.as_ref().map(|b| b.checkpoint_every);
        // The flows taken and not yet ended: what a stop gives up.
        let in_flight: Arc<Mutex<HashMap<FlowInfo, ExtractJob>>> = Arc::default();
        let jobs = futures::stream::poll_fn({
            let (queue, stop, in_flight) = (queue.clone(), stop.clone(), in_flight.clone());
            let mut taken = 0_usize;
            let asked = self.stop.clone();
            move |_| {
                let due = taken > 0 && checkpoint.is_some_and(|every| started.elapsed() >= every);
                if due || stop.load(Ordering::Relaxed) || asked.requested().is_some() {
                    return Poll::Ready(None);
                }
                let job = queue.lock().ok().and_then(|mut q| q.pop_front());
                if let (Some(job), Ok(mut flying)) = (&job, in_flight.lock()) {
                    flying.insert(job.flow.clone(), job.clone());
                }
                taken += usize::from(job.is_some());
                Poll::Ready(job)
            }
        });
        let ended = |flow: &FlowInfo| {
            if let Ok(mut flying) = in_flight.lock() {
                flying.remove(flow);
            }
        };
        // The staging folder first: one that cannot be made fails before any read.
        let mut round = Round {
            stage: self.stage()?,
            flows: Vec::new(),
        };
        let mut events = self.extractor.extract(jobs);
        // The adds of each flow being read; a flow whose page could not be converted
        // or staged is failed at once and its later events ignored.
        let mut reading: HashMap<FlowInfo, (Reading, Vec<AddId>)> = HashMap::new();
        let mut failed: HashSet<FlowInfo> = HashSet::new();
        // Once a stop is asked for, no flow is started (above) and those in flight
        // have the stop timeout to end.
        let grace_over = self.stop.grace_over(plan.stop_timeout);
        tokio::pin!(grace_over);
        loop {
            let next = tokio::select! {
                next = events.next() => next,
                () = &mut grace_over => break,
            };
            let Some((job, event)) = next else { break };
            let flow = &job.flow;
            let fail = match event {
                _ if failed.contains(flow) => None,
                FlowEvent::Page(records) => {
                    observer.page(records.len() as u64);
                    match appflow_transform::to_batches(flow, &records, now) {
                        Ok(batches) => match round.stage.add(&batches) {
                            Ok(id) => {
                                reading
                                    .entry(flow.clone())
                                    .or_insert_with(|| (job.clone(), Vec::new()))
                                    .1
                                    .push(id);
                                None
                            }
                            // A staging failure (the local temporary disk, or a bug)
                            // leaves the stage unusable: stop before this round's data
                            // or state is written. (Extract already refused start
                            // times no day can hold.)
                            Err(e) => {
                                return Err(Error::Staging {
                                    flow: Some(flow.name.clone()),
                                    source: e,
                                });
                            }
                        },
                        Err(e) => Some(format!("flow '{}': {}", flow.name, chain(&e))),
                    }
                }
                FlowEvent::Done(summary) => {
                    reading.remove(flow);
                    ended(flow);
                    let resume = resumes.get(flow);
                    let gap = resume.and_then(|r| retention_gap(r, summary.oldest_returned));
                    if let Some(gap) = gap {
                        tracing::warn!(
                            flow = %flow.name,
                            account = %flow.account_id,
                            region = %flow.region,
                            after = %iso(gap.after_ms),
                            before = %iso(gap.before_ms),
                            "retention gap: AWS no longer returns the newest run exported from flow '{}'; runs started after {} and before {} were never exported and may be lost",
                            flow.name,
                            iso(gap.after_ms),
                            iso(gap.before_ms)
                        );
                    }
                    report.flows_exported += 1;
                    report.describe_pages += summary.pages;
                    report.records += summary.records;
                    report.flows.push(FlowRun {
                        describe_calls: summary.pages,
                        records: summary.records,
                        retention_gap: gap.map(|g| GapWindow {
                            after: iso(g.after_ms),
                            before: iso(g.before_ms),
                        }),
                        ..flow_run(&job)
                    });
                    round.flows.push(ReadFlow {
                        flow: flow.clone(),
                        summary,
                        listed: resume.and_then(|r| r.last_run_listed.clone()),
                        gap,
                        reads_before: resume.map_or(0, |r| r.reads),
                    });
                    observer.flow_done();
                    None
                }
                FlowEvent::Failed(e) => Some(chain(&e)),
            };
            if let Some(message) = fail {
                // Its later pages would be dropped: stop paging it (a no-op once it ended).
                job.cancel();
                ended(flow);
                round
                    .stage
                    .discard(reading.remove(flow).map(|r| r.1).unwrap_or_default());
                tracing::error!(flow = %flow.name, error = %message, "flow not exported");
                report.failures.push(message.clone());
                report.flows.push(FlowRun {
                    error: Some(message),
                    ..flow_run(&job)
                });
                failed.insert(flow.clone());
                observer.flow_done();
            }
        }
        // Flows still being read when the stop timeout ran out: given up whole (their
        // readers stop at their next page: nobody listens any more).
        drop(events);
        let given_up: Vec<ExtractJob> = in_flight
            .lock()
            .map(|mut flying| flying.drain().map(|(_, job)| job).collect())
            .unwrap_or_default();
        if !given_up.is_empty() {
            tracing::warn!(
                flows = given_up.len(),
                seconds = plan.stop_timeout.as_secs_f64(),
                "flows still being read when the stop timeout ran out are not exported (the next run reads them)"
            );
        }
        for job in given_up {
            if let Some((_, adds)) = reading.remove(&job.flow) {
                round.stage.discard(adds);
            }
            report.flows.push(FlowRun {
                interrupted: true,
                ..flow_run(&job)
            });
        }
        Ok(round)
    }

    /// Commits a round: its day files first, then its flows' watermarks, then (in a
    /// backfill) that those flows are done. A crash in between only means redoing work.
    pub(crate) async fn commit_round(
        &self,
        plan: &Plan,
        round: &mut Round,
        report: &mut RunReport,
        observer: &dyn Observer,
    ) -> Result<()> {
        let now = report.started_ms;
        let committing = Instant::now();
        observer.merging();
        // Counted as they are written: a failed commit's report says what it wrote.
        let written_before = report.commit.files_written;
        self.loader
            .commit_with(
                &mut round.stage,
                &|key, total| observer.day(key, total),
                &mut report.commit,
            )
            .await?;
        tracing::info!(
            seconds = committing.elapsed().as_secs_f64(),
            files_written = report.commit.files_written - written_before,
            "day files committed"
        );
        let mut updates: BTreeMap<(String, String), BTreeMap<String, FlowUpdate>> = BTreeMap::new();
        for read in &round.flows {
            let flow = &read.flow;
            updates
                .entry((flow.account_id.clone(), flow.region.clone()))
                .or_default()
                .insert(
                    flow.name.clone(),
                    update_of(read, now, plan.backfill.is_some()),
                );
        }
        for ((account, region), flows) in &updates {
            let conflicts = self
                .loader
                .update_state(account, region, flows, now)
                .await?;
            report.commit.conflicts += u64::from(conflicts);
        }
        // The flows' rows and state are written: they are exported, whatever happens
        // to the backfill's progress below (a rerun of the backfill reads them again).
        report.flows_committed = report.flows.len();
        // Counted once their state records them: a gap found by a run that fails
        // before this is found again by the next one; a lag, the same.
        report.retention_gaps += round.flows.iter().filter(|r| r.gap.is_some()).count();
        for (name, update) in updates.values().flatten() {
            if let Some(at) = update.current_to_ms() {
                let current = report.current_to.entry(name.clone()).or_insert(at);
                *current = (*current).max(at);
            }
        }
        if let Some(backfill) = &plan.backfill {
            let completed_ms = now_ms();
            for ((account, region), flows) in &updates {
                let done = flows
                    .iter()
                    .map(|(name, u)| {
                        let flow = BackfilledFlow {
                            completed_ms,
                            records: u.records_read,
                            run_id: report.run_id.clone(),
                            ..BackfilledFlow::default()
                        };
                        (name.clone(), flow)
                    })
                    .collect();
                let conflicts = self
                    .loader
                    .record_backfill(&backfill.id, account, region, &done, None)
                    .await?;
                report.commit.conflicts += u64::from(conflicts);
            }
        }
        Ok(())
    }
}

/// An error and its causes on one line, as `{:#}` of anyhow shows them.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A flow's line in the run manifest, before it is read.
pub(crate) fn flow_run(job: &ExtractJob) -> FlowRun {
    FlowRun {
        account_id: job.flow.account_id.clone(),
        region: job.flow.region.clone(),
        flow_name: job.flow.name.clone(),
        cutoff: job.cutoff.map(iso),
        ..Default::default()
    }
}

/// What this run learned of a flow; `now` is when the run started, before it read.
/// A backfill (whose window may end in the past) moves the watermark only forwards,
/// as any run does, and adds the runs it saw open to those the state holds, without
/// replacing any incremental run's read nor dating one.
fn update_of(read: &ReadFlow, now: i64, backfill: bool) -> FlowUpdate {
    let summary = &read.summary;
    FlowUpdate {
        flow_arn: read.flow.arn.clone(),
        newest_started_ms: summary.newest_started,
        records_read: summary.records,
        retention_gap: read.gap.map(|g| (g.after_ms, g.before_ms)),
        read: FlowRead {
            reads_before: (!backfill).then_some(read.reads_before),
            started_ms: (!backfill).then_some(now),
            oldest_open_ms: summary.oldest_open,
            pages_sorted: summary.pages_sorted,
            listed_run: read.listed.clone().filter(|_| !backfill),
        },
    }
}
