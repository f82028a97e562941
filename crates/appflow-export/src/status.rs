//! `appflow-export status`: where each flow of an export stands, how far backfills
//! got, and what the last runs did, from `_state/` (the watermarks, the backfills'
//! progress and the run manifests). Reads only.

use std::time::Duration;

use anyhow::anyhow;
use appflow_load::{Destination, Loader, RunManifest};
use serde::Serialize;

use crate::cli::{StatusArgs, StatusFormat};
use crate::run::s3_options;
use crate::{EXIT_DESTINATION, EXIT_USAGE, Failure, aws};
use appflow_pipeline::{iso, now_ms};

/// One flow's line.
#[derive(Debug, Serialize)]
struct FlowStatus {
    account_id: String,
    region: String,
    flow_name: String,
    /// The newest `started_at` exported.
    watermark: Option<String>,
    /// The oldest run that was still open at the last export.
    oldest_open: Option<String>,
    last_export: String,
    /// Execution records read from AppFlow for this flow, over all runs.
    records_read: u64,
    /// Whether its pages came newest-first in the last run (else the next run reads
    /// the whole history).
    pages_sorted: bool,
    /// Now minus when the flow's export was last known complete (its watermark, or
    /// the start of the last run that read it to its end if later), in seconds.
    lag_seconds: Option<i64>,
    /// Retention gaps found in this flow's history (runs AWS dropped before any
    /// export read them), over all runs.
    retention_gaps: u64,
    /// The newest of them.
    last_retention_gap: Option<GapStatus>,
}

/// A retention gap: runs started after `after` and before `before` may be lost.
#[derive(Debug, Serialize)]
struct GapStatus {
    after: String,
    before: String,
    /// When the run that found it started.
    found: String,
}

/// One backfill's progress in one account and region.
#[derive(Debug, Serialize)]
struct BackfillStatus {
    since: String,
    until: Option<String>,
    account_id: String,
    region: String,
    /// Flows it completed (since its last `--restart`): a rerun skips them.
    flows_completed: usize,
    /// When it last completed a flow.
    last_completed: Option<String>,
}

#[derive(Debug, Serialize)]
struct Status {
    dest: String,
    now: String,
    flows: Vec<FlowStatus>,
    backfills: Vec<BackfillStatus>,
    /// The newest run manifests, newest first.
    runs: Vec<RunManifest>,
}

pub async fn command(args: StatusArgs) -> Result<(), Failure> {
    let dest = Destination::parse(&args.dest).map_err(|e| Failure::new(EXIT_USAGE, e))?;
    // A local folder needs no AWS configuration (and no credential or region lookup).
    let sdk = match dest {
        Destination::S3 { .. } => aws::from_env(3, args.region.clone()).await,
        Destination::Local(_) => aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build(),
    };
    let loader = Loader::new(dest.connect(&sdk, &s3_options(&args.s3)?).await);
    let dest_failure = |e: appflow_load::Error| Failure::new(EXIT_DESTINATION, e);
    let states = loader.states().await.map_err(dest_failure)?;
    let runs = loader.manifests(args.runs).await.map_err(dest_failure)?;
    let backfills = loader
        .backfills()
        .await
        .map_err(dest_failure)?
        .into_iter()
        .map(|(account, region, p)| {
            let done: Vec<i64> = p
                .flows
                .iter()
                .filter(|(name, _)| p.completed(name))
                .map(|(_, f)| f.completed_ms)
                .collect();
            BackfillStatus {
                since: p.since.clone(),
                until: p.until.clone(),
                account_id: account,
                region,
                flows_completed: done.len(),
                last_completed: done.iter().max().copied().map(iso),
            }
        })
        .collect();
    if states.is_empty() && runs.is_empty() {
        return Err(Failure::new(
            EXIT_DESTINATION,
            anyhow!(
                "{} holds no export: no watermarks under _state/flows/ and no run manifests under _state/runs/",
                args.dest
            ),
        ));
    }
    let now = now_ms();
    let flows = states
        .into_iter()
        .flat_map(|(account, region, state)| {
            state.flows.into_iter().map(move |(name, f)| FlowStatus {
                account_id: account.clone(),
                region: region.clone(),
                flow_name: name,
                watermark: f.watermark_ms.map(iso),
                oldest_open: f.oldest_open_ms.map(iso),
                last_export: iso(f.last_export_ms),
                records_read: f.records_read,
                pages_sorted: f.pages_sorted,
                lag_seconds: f.current_to_ms().map(|at| (now - at) / 1000),
                retention_gaps: f.retention_gaps,
                last_retention_gap: f.last_retention_gap.map(|g| GapStatus {
                    after: iso(g.after_ms),
                    before: iso(g.before_ms),
                    found: iso(g.found_ms),
                }),
            })
        })
        .collect();
    let status = Status {
        dest: args.dest.clone(),
        now: iso(now),
        flows,
        backfills,
        runs,
    };
    match args.format {
        StatusFormat::Json => {
            let text = serde_json::to_string_pretty(&status)
                .map_err(|e| Failure::new(EXIT_DESTINATION, e))?;
            println!("{text}");
        }
        StatusFormat::Table => print!("{}", table(&status)),
    }
    Ok(())
}

/// A header and rows as columns padded to the widest cell.
fn columns(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let rows: Vec<Vec<String>> = std::iter::once(header).chain(rows).collect();
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str("  ");
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn table(status: &Status) -> String {
    let dash = || "-".to_string();
    let flows = columns(
        &[
            "ACCOUNT",
            "REGION",
            "FLOW",
            "WATERMARK",
            "LAG",
            "OLDEST OPEN",
            "LAST EXPORT",
            "RECORDS",
            "SORTED",
            "RETENTION GAP",
        ],
        status.flows.iter().map(|f| {
            vec![
                f.account_id.clone(),
                f.region.clone(),
                f.flow_name.clone(),
                f.watermark.clone().unwrap_or_else(dash),
                f.lag_seconds.map_or_else(dash, |s| {
                    humantime::format_duration(Duration::from_secs(s.max(0) as u64 / 60 * 60))
                        .to_string()
                }),
                f.oldest_open.clone().unwrap_or_else(dash),
                f.last_export.clone(),
                f.records_read.to_string(),
                if f.pages_sorted { "yes" } else { "no" }.to_string(),
                f.last_retention_gap.as_ref().map_or_else(dash, |g| {
                    let more = f.retention_gaps.saturating_sub(1);
                    let more = if more > 0 {
                        format!(" (+{more} earlier)")
                    } else {
                        String::new()
                    };
                    format!("{} .. {}{more}", g.after, g.before)
                }),
            ]
        }),
    );
    let runs = columns(
        &[
            "RUN",
            "ACCOUNT",
            "REGION",
            "EXIT",
            "SECONDS",
            "FLOWS",
            "FAILED",
            "SKIPPED",
            "GAPS",
            "RECORDS",
            "WRITTEN",
            "UNCHANGED",
            "ARGUMENTS",
        ],
        status.runs.iter().map(|r| {
            let failed = r.flows.iter().filter(|f| f.error.is_some()).count();
            let skipped = r.flows.iter().filter(|f| f.skipped).count();
            let given_up = r.flows.iter().filter(|f| f.interrupted).count();
            vec![
                r.run_id.clone(),
                r.account_id.clone().unwrap_or_else(|| "-".into()),
                r.region.clone().unwrap_or_else(|| "-".into()),
                r.exit_code.to_string(),
                format!("{:.1}", r.duration_seconds),
                (r.flows.len() - failed - skipped - given_up).to_string(),
                failed.to_string(),
                skipped.to_string(),
                r.retention_gaps.to_string(),
                r.records.to_string(),
                r.files_written.to_string(),
                r.files_unchanged.to_string(),
                r.arguments.join(" "),
            ]
        }),
    );
    let backfills = if status.backfills.is_empty() {
        String::new()
    } else {
        let rows = status.backfills.iter().map(|b| {
            vec![
                b.since.clone(),
                b.until.clone().unwrap_or_else(|| "(no end)".to_string()),
                b.account_id.clone(),
                b.region.clone(),
                b.flows_completed.to_string(),
                b.last_completed.clone().unwrap_or_else(dash),
            ]
        });
        let header = [
            "SINCE",
            "UNTIL",
            "ACCOUNT",
            "REGION",
            "FLOWS DONE",
            "LAST DONE",
        ];
        format!(
            "\nbackfills ({}; a rerun skips the flows done)\n{}",
            status.backfills.len(),
            columns(&header, rows)
        )
    };
    format!(
        "{} at {}\n\nflows ({})\n{}{backfills}\nlast runs ({}, newest first)\n{}",
        status.dest,
        status.now,
        status.flows.len(),
        flows,
        status.runs.len(),
        runs,
    )
}
