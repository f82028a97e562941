//! `run --dry-run`'s listing: one line per flow the run would export.

use std::fmt;

use appflow_pipeline::{Plan, Prepared, iso};

/// `run --dry-run`'s listing: one line per flow the run would export.
pub struct DryRun<'a>(pub &'a Plan, pub &'a Prepared);

impl fmt::Display for DryRun<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (plan, prepared) = (self.0, self.1);
        write!(
            f,
            "dry run: would export {} flows to {}",
            prepared.jobs.len(),
            plan.dest_text
        )?;
        if plan.shard.is_split() {
            write!(
                f,
                " (shard {} of {} selected flows)",
                plan.shard,
                prepared.listing.flows.len()
            )?;
        }
        writeln!(f, "; nothing is written")?;
        writeln!(f, "  FLOW  WATERMARK  READS BACK TO")?;
        for (job, resume) in &prepared.jobs {
            let watermark = resume.watermark.map_or_else(|| "-".to_string(), iso);
            let reads_to = match (job.cutoff, job.full_scan) {
                _ if plan.backfill.is_some() => "(whole history: backfill)".to_string(),
                (None, _) => "(whole history: never exported)".to_string(),
                (Some(c), false) => iso(c),
                (Some(c), true) => format!(
                    "{} (whole history: its pages were not newest-first last time)",
                    iso(c)
                ),
            };
            writeln!(f, "  {}  {watermark}  {reads_to}", job.flow.name)?;
        }
        for (job, resume) in &prepared.unchanged {
            let watermark = resume.watermark.map_or_else(|| "-".to_string(), iso);
            writeln!(
                f,
                "  {}  {watermark}  (none: its listing shows the same last run as when it was last read; --skip-unchanged)",
                job.flow.name
            )?;
        }
        for (job, resume) in &prepared.already_backfilled {
            let watermark = resume.watermark.map_or_else(|| "-".to_string(), iso);
            writeln!(
                f,
                "  {}  {watermark}  (none: an earlier run of this backfill completed it; --restart reads it again)",
                job.flow.name
            )?;
        }
        for problem in &prepared.listing.problems {
            writeln!(f, "  not exported: {problem}")?;
        }
        Ok(())
    }
}
