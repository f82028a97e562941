//! `appflow-export`: exports Amazon AppFlow run history into Hive-partitioned
//! Parquet on S3 or a local folder. See README.md for usage, ARCHITECTURE.md for
//! how the pieces fit.

mod aws;
mod cli;
mod config;
mod demo;
mod dry_run;
mod metrics;
mod outcome;
mod progress;
mod run;
mod schema;
mod signals;
mod status;
mod targets;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::FromArgMatches;

use crate::cli::{Cli, Command, LogFormat};

/// A failure with the exit code it maps to (documented in README.md).
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

/// Some flows failed; the others were exported and their state advanced.
pub const EXIT_FLOWS_FAILED: u8 = 1;
/// Bad arguments or configuration; nothing was done.
pub const EXIT_USAGE: u8 = 2;
/// The destination could not be read or written.
pub const EXIT_DESTINATION: u8 = 3;
/// The local temporary folder could not stage the rows read or merge a day file (a
/// full disk, say): no watermark moved past rows not written (a backfill's earlier
/// checkpoints and other targets stay committed); day files written before it filled
/// are whole, and the next run completes them.
pub const EXIT_STAGING: u8 = 4;
/// A bug of appflow-export (a panic): nothing partial is left; please report it.
pub const EXIT_BUG: u8 = 5;

/// The command line as given, less the program's name (recorded in run manifests).
pub fn arguments() -> Vec<String> {
    std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

impl Failure {
    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code,
            error: error.into(),
        }
    }
}

/// Without `RUST_LOG`: warnings of every crate, and the info lines of this binary,
/// of the pipeline (the phases of a run and its final `run finished` summary) and of
/// the load stage (each write that lost a race to another writer and was merged again).
const DEFAULT_LOG_FILTER: &str = "warn,appflow_export=info,appflow_pipeline=info,appflow_load=info";

/// Whether logs are JSON lines (`--log-format json`): errors are then logged too.
static JSON_LOGS: AtomicBool = AtomicBool::new(false);

/// Prints an error that ends a run (or one account and region of it): `error: ...`
/// on stderr, or with `--log-format json` an ERROR log line, so that stderr stays one
/// JSON object per line.
pub fn print_error(failure: &Failure) {
    if JSON_LOGS.load(Ordering::Relaxed) && tracing::enabled!(tracing::Level::ERROR) {
        tracing::error!(exit_code = failure.code, "{:#}", failure.error);
    } else {
        eprintln!("error: {:#}", failure.error);
    }
}

fn init_logging(format: LogFormat) {
    JSON_LOGS.store(matches!(format, LogFormat::Json), Ordering::Relaxed);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// Keeps glibc's allocator from holding freed memory (before any thread starts): large
/// blocks (Arrow buffers, Parquet pages) always come from and go back to the system,
/// and threads share at most two arenas. Without it a run's peak RSS was about twice
/// its peak heap (BENCHMARKS.md); `MALLOC_*` variables set by the user still win.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let unset = |name: &str| std::env::var_os(name).is_none();
        // SAFETY: mallopt only sets allocator parameters; called before other threads.
        unsafe {
            if unset("MALLOC_MMAP_THRESHOLD_") {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
            }
            if unset("MALLOC_ARENA_MAX") {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
        }
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let expanded = match config::expand(std::env::args_os().collect()) {
        Ok(expanded) => expanded,
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            return ExitCode::from(f.code);
        }
    };
    let matches = match config::command().try_get_matches_from(&expanded.argv) {
        Ok(m) => m,
        Err(e) if e.kind() == clap::error::ErrorKind::MissingRequiredArgument => {
            // Say every way to set it: a container is configured by its environment.
            let _ = e.print();
            eprintln!(
                "\nEach option can also be set by its APPFLOW_EXPORT_* variable (--dest: APPFLOW_EXPORT_DEST) or a key of --config FILE (dest = \"...\")."
            );
            return ExitCode::from(EXIT_USAGE);
        }
        Err(e) => {
            // A bad value from the environment: say which variable held it.
            let flag = e
                .get(clap::error::ContextKind::InvalidArg)
                .map(ToString::to_string)
                .unwrap_or_default();
            let flag = flag.split_whitespace().next().unwrap_or_default();
            let var = config::env_var(flag.trim_start_matches("--"));
            let from_env = flag.starts_with("--")
                && std::env::var_os(&var).is_some_and(|v| !v.is_empty())
                && !expanded.argv.iter().any(|a| {
                    a.to_str()
                        .is_some_and(|a| a == flag || a.starts_with(&format!("{flag}=")))
                });
            if from_env && e.kind() != clap::error::ErrorKind::DisplayHelp {
                let _ = e.print();
                eprintln!("\n(the value of {flag} came from the environment: {var})");
                return ExitCode::from(EXIT_USAGE);
            }
            e.exit()
        }
    };
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let settled = match &mut cli.command {
        Command::Run(args) => Some((args, "run")),
        Command::Backfill(args) => Some((&mut args.run, "backfill")),
        Command::Config(args) => Some((&mut args.run, "config")),
        _ => None,
    };
    if let Some((args, name)) = settled {
        let sub = matches.subcommand_matches(name).unwrap_or(&matches);
        if let Err(f) = config::settle(args, sub, &expanded) {
            eprintln!("error: {:#}", f.error);
            return ExitCode::from(f.code);
        }
    }
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let log_format = cli.log_format;
    let command = std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async {
            match cli.command {
                Command::Run(args) => signals::interruptible(|stop| run::command(args, stop)).await,
                Command::Backfill(args) => {
                    signals::interruptible(|stop| run::backfill(args, stop)).await
                }
                Command::Demo(args) => demo::command(args).await,
                Command::Schema(args) => schema::command(&args),
                Command::Status(args) => status::command(args).await,
                Command::Config(args) => {
                    let sub = matches.subcommand_matches("config").unwrap_or(&matches);
                    config::print(log_format, &args, sub, &expanded)
                }
            }
        })
    });
    // A panic is a bug, whatever it interrupted: say so, with its own exit code.
    let result = std::panic::catch_unwind(command).unwrap_or_else(|_| {
        Err(Failure::new(
            EXIT_BUG,
            anyhow::anyhow!(
                "internal error (a bug in appflow-export: please report it with the message above)"
            ),
        ))
    });
    // After a second signal, blocking work still running (a merge, a local put) is not
    // waited for: the process stops at once (what it leaves is whole or temporary).
    if signals::stopped_at_once() {
        runtime.shutdown_background();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            print_error(&f);
            ExitCode::from(f.code)
        }
    }
}
