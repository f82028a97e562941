//! `--metrics emf`: CloudWatch Embedded Metric Format lines on stdout, one per
//! (account, region) exported and one for the whole run, for alarms (failed flows,
//! retention gaps, no successful run). CloudWatch Logs turns each line into metrics
//! in the namespace [`NAMESPACE`] when it receives it (the awslogs driver of ECS and
//! AWS Batch, the CloudWatch agent); a line is one JSON object, so it never mixes
//! with the summary's text lines.

use std::collections::BTreeMap;

use appflow_pipeline::{RunReport, now_ms};
use serde_json::{Map, Value, json};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "AppFlowExport";

/// Every metric a line carries, its unit, and how it is read from a run's report
/// (`None`: not known, so left out of the line rather than sent as 0).
#[allow(clippy::type_complexity)]
const METRICS: [(&str, &str, fn(&RunReport) -> Option<f64>); 14] = [
    ("RunsSucceeded", "Count", |r| {
        Some(f64::from(u8::from(succeeded(r))))
    }),
    ("FlowsExported", "Count", |r| Some(r.flows_exported as f64)),
    ("FlowsFailed", "Count", |r| Some(r.failures.len() as f64)),
    ("FlowsSkipped", "Count", |r| Some(r.flows_skipped as f64)),
    ("RecordsRead", "Count", |r| Some(r.records as f64)),
    ("DataFilesWritten", "Count", |r| {
        Some(r.commit.files_written as f64)
    }),
    ("ApiCalls", "Count", |r| Some(r.appflow_attempts as f64)),
    ("ThrottledCalls", "Count", |r| Some(r.throttled as f64)),
    // The adaptive limit of AppFlow calls in flight: how low AWS's throttling pushed
    // it, and how high it was (`--concurrency` when nothing held it back).
    ("ConcurrencyLimitLowest", "Count", |r| {
        Some(r.limit_lowest as f64)
    }),
    ("ConcurrencyLimitHighest", "Count", |r| {
        Some(r.limit_highest as f64)
    }),
    ("WriteConflicts", "Count", |r| Some(r.conflicts() as f64)),
    ("RetentionGaps", "Count", |r| Some(r.retention_gaps as f64)),
    // A run that never got to its flows (ListFlows refused, say) knows no lag: 0
    // would tell an alarm that all is well.
    ("MaxWatermarkLagSeconds", "Seconds", |r| {
        r.max_watermark_lag_seconds(r.started_ms + r.duration.as_millis() as i64)
    }),
    ("RunSeconds", "Seconds", |r| Some(r.duration.as_secs_f64())),
];

/// Whether a run exported every flow it was to (no failure, not interrupted, no error).
fn succeeded(r: &RunReport) -> bool {
    r.failures.is_empty() && r.interrupted.is_none() && r.fatal.is_none()
}

/// The runs of one invocation, printed as EMF lines.
pub struct Emf {
    job_name: Option<String>,
    /// `i/N` when the flows or targets are split into shards: the run line is also
    /// sent per shard, so that an alarm can see one shard fail or go silent while
    /// the others succeed.
    shard: Option<String>,
    /// Whether each account and region's run has its own line (`--metrics emf`), or
    /// only the whole run has one (`emf-run`).
    per_target: bool,
}

impl Emf {
    pub fn new(job_name: Option<String>, shard: Option<String>, per_target: bool) -> Self {
        Emf {
            job_name,
            shard,
            per_target,
        }
    }

    /// The line of one account and region's run (`None` with `emf-run`).
    pub fn target_line(&self, report: &RunReport) -> Option<String> {
        if !self.per_target {
            return None;
        }
        let mut dims = BTreeMap::new();
        dims.insert(
            "Account",
            report.account.clone().unwrap_or_else(|| "unknown".into()),
        );
        dims.insert("Region", report.region.clone());
        let values: Vec<(&str, &str, f64)> = METRICS
            .iter()
            .filter_map(|(name, unit, value)| Some((*name, *unit, value(report)?)))
            .collect();
        Some(self.line(dims, &values, None))
    }

    /// The line of the whole invocation: sums over its accounts and regions (the
    /// largest lag, the longest run, the lowest and the highest limit of calls in
    /// flight); it succeeded when every target was exported
    /// (`all_exported`: none failed, none left unstarted; a shard owning no target
    /// succeeds).
    pub fn run_line(&self, reports: &[&RunReport], all_exported: bool, seconds: f64) -> String {
        let values: Vec<(&str, &str, f64)> = METRICS
            .iter()
            .filter_map(|(name, unit, value)| {
                let each = reports.iter().filter_map(|r| value(r));
                let total = match *name {
                    "RunsSucceeded" => f64::from(u8::from(
                        all_exported && reports.iter().all(|r| succeeded(r)),
                    )),
                    "MaxWatermarkLagSeconds" | "ConcurrencyLimitHighest" => {
                        each.reduce(f64::max)?
                    }
                    "ConcurrencyLimitLowest" => each.reduce(f64::min)?,
                    "RunSeconds" => seconds,
                    _ => each.sum(),
                };
                Some((*name, *unit, total))
            })
            .collect();
        self.line(BTreeMap::new(), &values, self.shard.as_deref())
    }

    /// One EMF line of `values` with the dimensions `dims` (and the job name); with a
    /// `shard`, also per shard (a second dimension set: the job's metrics stay as
    /// they are).
    fn line(
        &self,
        mut dims: BTreeMap<&'static str, String>,
        values: &[(&str, &str, f64)],
        shard: Option<&str>,
    ) -> String {
        if let Some(job) = &self.job_name {
            dims.insert("JobName", job.clone());
        }
        let names: Vec<&str> = dims.keys().copied().collect();
        let mut sets = vec![names.clone()];
        if let Some(shard) = shard {
            sets.push([names.as_slice(), &["Shard"]].concat());
            dims.insert("Shard", shard.to_string());
        }
        let mut doc = Map::new();
        doc.insert(
            "_aws".into(),
            json!({
                "Timestamp": now_ms(),
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": sets,
                    "Metrics": values
                        .iter()
                        .map(|(name, unit, _)| json!({"Name": name, "Unit": unit}))
                        .collect::<Vec<_>>(),
                }],
            }),
        );
        for (name, value) in dims {
            doc.insert(name.into(), Value::String(value));
        }
        for (name, _, value) in values {
            doc.insert((*name).into(), json!(value));
        }
        Value::Object(doc).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs_succeeded(line: &str) -> f64 {
        let doc: Value = serde_json::from_str(line).unwrap_or_default();
        doc["RunsSucceeded"].as_f64().unwrap_or(-1.0)
    }

    #[test]
    fn a_shard_run_line_is_also_sent_per_shard() {
        let line = Emf::new(Some("job".into()), Some("1/4".into()), true).run_line(&[], true, 1.0);
        let doc: Value = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["JobName"], ["JobName", "Shard"]])
        );
        assert_eq!(doc["Shard"], "1/4");
        assert_eq!(doc["JobName"], "job");
        let whole = Emf::new(Some("job".into()), None, true).run_line(&[], true, 1.0);
        let doc: Value = serde_json::from_str(&whole).unwrap_or_default();
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["JobName"]])
        );
        assert!(doc.get("Shard").is_none());
    }

    #[test]
    fn the_run_line_succeeds_only_when_every_target_was_exported() {
        let emf = Emf::new(None, None, true);
        let ok = RunReport::default();
        // Every target started and exported; a shard owning no target.
        assert_eq!(runs_succeeded(&emf.run_line(&[&ok], true, 1.0)), 1.0);
        assert_eq!(runs_succeeded(&emf.run_line(&[], true, 1.0)), 1.0);
        // The reports all succeeded, but a target never started (a stop, or an
        // account the organization does not have).
        assert_eq!(runs_succeeded(&emf.run_line(&[&ok], false, 1.0)), 0.0);
        let failed = RunReport {
            failures: vec!["flow 'a': denied".into()],
            ..RunReport::default()
        };
        assert_eq!(
            runs_succeeded(&emf.run_line(&[&ok, &failed], true, 1.0)),
            0.0
        );
    }
}
