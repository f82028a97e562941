//! SIGTERM and SIGINT during `run` and `backfill` (what ECS, AWS Batch and Spot
//! interruptions send before they kill a task; Ctrl-C): the first asks the run to
//! stop cleanly ([`Stop`]), a second stops it at once. Either way a run that gave up
//! flows, or left a target (account and region) unstarted, exits with 128 + the
//! signal's number, the convention of shells and
//! schedulers; a first signal that came once every flow was read, or while the last
//! ones were and they all ended within the stop timeout, gives up nothing, and the run
//! ends as it would have.

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::anyhow;
use appflow_pipeline::Stop;
use tokio::signal::unix::{SignalKind, signal};

use crate::Failure;

const SIGINT: u8 = 2;
const SIGTERM: u8 = 15;

/// The number of the first signal received (0: none yet).
static FIRST: AtomicU8 = AtomicU8::new(0);
/// Whether a second signal stopped the run at once.
static AT_ONCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether a second signal stopped the run at once: the process then does not wait
/// for blocking work still running (a merge, a local put).
pub fn stopped_at_once() -> bool {
    AT_ONCE.load(Ordering::Relaxed)
}

/// The exit code of a run stopped by a signal: 128 + its number (143 for SIGTERM,
/// 130 for SIGINT).
pub fn interrupted_exit_code() -> u8 {
    match FIRST.load(Ordering::Relaxed) {
        0 => 128 + SIGTERM,
        n => 128 + n,
    }
}

/// Runs `command` with a [`Stop`] that the first SIGTERM or SIGINT requests; a
/// second one drops the command where it is (day files are replaced whole and no
/// watermark covers rows not written, so nothing partial is left; temporary files are
/// removed as it unwinds, those of a write in progress by a later run) and fails with
/// the exit code of the first, as a stopped run does: 128 + its number. No manifest
/// is written: stopping at once means not waiting for the destination.
pub async fn interruptible<F>(command: impl FnOnce(Stop) -> F) -> Result<(), Failure>
where
    F: Future<Output = Result<(), Failure>>,
{
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM and SIGINT: a signal stops the run at once");
            return command(Stop::default()).await;
        }
    };
    let stop = Stop::default();
    let watch = {
        let stop = stop.clone();
        async move {
            let mut next = async || {
                tokio::select! {
                    _ = term.recv() => (SIGTERM, "SIGTERM"),
                    _ = int.recv() => (SIGINT, "SIGINT"),
                }
            };
            let (number, name) = next().await;
            FIRST.store(number, Ordering::Relaxed);
            tracing::warn!(
                signal = name,
                "{name}: stopping; no new flow is started, the flows being read have --stop-timeout to end, then what ended is committed (send it again to stop at once)"
            );
            stop.request(name);
            let (_, name) = next().await;
            AT_ONCE.store(true, Ordering::Relaxed);
            Failure::new(
                interrupted_exit_code(),
                anyhow!(
                    "stopped at once by a second {name}: nothing being read or merged was committed (day files are replaced whole, no watermark moved past them); the next run reads it again"
                ),
            )
        }
    };
    tokio::select! {
        result = command(stop) => result,
        failure = watch => Err(failure),
    }
}
