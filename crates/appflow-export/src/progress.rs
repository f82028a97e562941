//! Progress bars on a terminal (never when stderr is a file or a pipe, as under cron,
//! ECS or CI, nor on a `TERM=dumb` terminal): flows read, with their records, then
//! the day files being merged.
//!
//! [`shows_bars`] is the one place that decides: the bars are drawn through a
//! `TermLike` target, which (unlike indicatif's own stderr target) draws wherever it
//! is told to, so a pipe gets no bar only because this module says so.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use appflow_load::PartitionKey;
use appflow_pipeline::Observer;
use console::Term;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether to draw bars: only when stderr is a terminal that can move its cursor.
pub fn shows_bars() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

pub struct Progress {
    flows: ProgressBar,
    /// Records read so far in the run, every page counted.
    records: AtomicU64,
    days: ProgressBar,
}

impl Progress {
    /// Bars drawn on stderr once reading starts if [`shows_bars`], hidden otherwise
    /// (nothing is drawn while the destination is checked and the flows listed).
    pub fn new() -> Self {
        let target = ProgressDrawTarget::hidden;
        let style = |template: &str| {
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ")
        };
        let bar = ProgressBar::with_draw_target(Some(0), target());
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
}

impl Observer for Progress {
    fn reading(&self, flows: usize) {
        self.flows.set_length(flows as u64);
        if shows_bars() {
            for bar in [&self.flows, &self.days] {
                bar.set_draw_target(ProgressDrawTarget::term_like_with_hz(
                    Box::new(Term::buffered_stderr()),
                    20,
                ));
            }
        }
    }

    fn page(&self, records: u64) {
        let total = self.records.fetch_add(records, Ordering::Relaxed) + records;
        self.flows.set_message(format!("{total} records"));
    }

    fn flow_done(&self) {
        self.flows.inc(1);
    }

    fn reading_done(&self) {
        self.flows.finish();
    }

    fn merging(&self) {
        self.days.set_position(0);
    }

    fn day(&self, key: &PartitionKey, total: usize) {
        self.days.set_length(total as u64);
        self.days
            .set_message(format!("dt={} {}_{}", key.day, key.account_id, key.region));
        self.days.inc(1);
    }

    fn finish(&self) {
        self.days.finish();
    }
}
