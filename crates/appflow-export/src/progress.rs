//! Progress bars on a terminal (never when stderr is a file or a pipe, as under cron,
//! ECS or CI): flows read, with their records, then the day files being merged.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use appflow_load::PartitionKey;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    flows: ProgressBar,
    /// Records read so far in the run, every page counted.
    records: AtomicU64,
    days: ProgressBar,
}

impl Progress {
    /// Bars drawn on stderr if it is a terminal, hidden otherwise.
    pub fn new(flows: usize) -> Self {
        let target = || {
            if std::io::stderr().is_terminal() {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            }
        };
        let style = |template: &str| {
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ")
        };
        let bar = ProgressBar::with_draw_target(Some(flows as u64), target());
        bar.set_style(style("reading  [{bar:30}] {pos}/{len} flows, {msg}"));
        bar.set_message("0 records");
        let days = ProgressBar::with_draw_target(None, target());
        days.set_style(style("merging  [{bar:30}] {pos}/{len} day files, {msg}"));
        Progress {
            flows: bar,
            records: AtomicU64::new(0),
            days,
        }
    }

    /// A page of `records` is read.
    pub fn page(&self, records: u64) {
        let total = self.records.fetch_add(records, Ordering::Relaxed) + records;
        self.flows.set_message(format!("{total} records"));
    }

    /// A flow is read (or failed).
    pub fn flow_done(&self) {
        self.flows.inc(1);
    }

    /// All flows are read.
    pub fn reading_done(&self) {
        self.flows.finish();
    }

    /// A commit starts (a backfill commits every `--checkpoint-every`).
    pub fn merging(&self) {
        self.days.set_position(0);
    }

    /// A day file's merge starts.
    pub fn day(&self, key: &PartitionKey, total: usize) {
        self.days.set_length(total as u64);
        self.days
            .set_message(format!("dt={} {}_{}", key.day, key.account_id, key.region));
        self.days.inc(1);
    }

    pub fn finish(&self) {
        self.days.finish();
    }
}
