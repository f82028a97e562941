//! What each target of a run ended with, and how it is printed: a block per target
//! as it ends (its summary, error and EMF line together, so targets run at once do not
//! interleave), and a table of every target's outcome at the end.

use appflow_pipeline::{RunReport, Target};

use crate::Failure;
use crate::metrics::Emf;

/// What one target's run ended with.
pub struct Outcome {
    pub target: Target,
    /// `None` for a dry run.
    pub report: Option<RunReport>,
    pub result: Result<(), Failure>,
    /// The destination itself failed (or the local staging disk): the next target
    /// would fail alike.
    pub stops_all: bool,
    /// `false`: never run (the run was stopped, the destination failed, or the account
    /// is not in the organization); `result` says why.
    pub started: bool,
}

/// A target in one line: its account and region, and the role it is read through.
pub fn describe(target: &Target) -> String {
    let account = target.account.as_deref().unwrap_or("the job's account");
    let region = target.region.as_deref().unwrap_or("-");
    match &target.role_arn {
        Some(role) => format!("{account} {region} (through {role})"),
        None => format!("{account} {region} (the job's own credentials)"),
    }
}

/// A target's summary (and its error, its EMF line) as one block, so the blocks of
/// targets run at once do not interleave.
pub fn print_outcome(outcome: &Outcome, several: bool, emf: Option<&Emf>) {
    let mut block = String::new();
    if several {
        block.push_str(&format!("== {}\n", describe(&outcome.target)));
    }
    if let Some(report) = &outcome.report {
        // A run that ended early says why instead (its error, below).
        if report.fatal.is_none() {
            block.push_str(&report.to_string());
        }
        if let Some(line) = emf.and_then(|emf| emf.target_line(report)) {
            block.push_str(&line);
            block.push('\n');
        }
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(block.as_bytes());
        let _ = out.flush();
    }
    if several && let Err(f) = &outcome.result {
        crate::print_error(f);
    }
}

/// The end of a run over several targets: each one's outcome on a line.
pub struct TargetTable<'a>(pub &'a [Outcome]);

impl std::fmt::Display for TargetTable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let outcomes = self.0;
        let not_run = outcomes.iter().filter(|o| !o.started).count();
        let failed = outcomes.iter().filter(|o| o.result.is_err()).count() - not_run;
        write!(
            f,
            "targets: {} exported, {failed} failed",
            outcomes.len() - failed - not_run
        )?;
        if not_run > 0 {
            write!(f, ", {not_run} not started")?;
        }
        writeln!(f)?;
        let mut sorted: Vec<&Outcome> = outcomes.iter().collect();
        sorted.sort_by(|a, b| {
            (&a.target.account, &a.target.region).cmp(&(&b.target.account, &b.target.region))
        });
        for o in sorted {
            let account = o
                .report
                .as_ref()
                .and_then(|r| r.account.as_deref())
                .or(o.target.account.as_deref())
                .unwrap_or("-");
            let region = o.target.region.as_deref().unwrap_or("-");
            let exported = o.report.as_ref().map_or(0, |r| r.flows_exported);
            match &o.result {
                Ok(()) => writeln!(f, "  {account}  {region}  exported ({exported} flows)")?,
                Err(e) if !o.started => {
                    let why = format!("{:#}", e.error);
                    let why = why.lines().next().unwrap_or_default();
                    writeln!(
                        f,
                        "  {account}  {region}  NOT STARTED (exit {}): {why}",
                        e.code
                    )?;
                }
                Err(e) => {
                    let why = format!("{:#}", e.error);
                    let why = why.lines().next().unwrap_or_default();
                    writeln!(f, "  {account}  {region}  FAILED (exit {}): {why}", e.code)?;
                }
            }
        }
        Ok(())
    }
}
