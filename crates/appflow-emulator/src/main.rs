//! `appflow-emulator`: serves a seeded AppFlow history on loopback until stopped.

use std::io::Write;
use std::process::ExitCode;

use appflow_emulator::{DEFAULT_ACCOUNT, DEFAULT_REGION, Faults, GenConfig, Tenants, now_millis};
use clap::Parser;

/// A local Amazon AppFlow API (REST-JSON) for tests, the demo and benchmarks.
/// Prints `listening on http://127.0.0.1:PORT` once it accepts connections.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Number of flows to generate.
    #[arg(long, default_value_t = 12)]
    flows: usize,
    /// Runs generated for each flow.
    #[arg(long, default_value_t = 60)]
    runs_per_flow: usize,
    /// Seed of the generator: the same seed and end time give the same history.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Days of history the runs are spread over.
    #[arg(long, default_value_t = 10)]
    days: u32,
    /// End of the generated history, epoch milliseconds (default: now).
    #[arg(long)]
    end: Option<i64>,
    /// AWS account ids to serve (comma-separated): each account and region gets a
    /// history of its own, its id in the flow ARNs, and a request is served by the
    /// account its access key names (a key that names none: the first account).
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_ACCOUNT)]
    account: Vec<String>,
    /// Regions to serve (comma-separated); a request is served by the region of its
    /// SigV4 credential scope. With one account and one region every request is
    /// served, whatever its credential.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_REGION)]
    region: Vec<String>,
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Faults to start with, as the JSON of `PUT /_emulator/faults`.
    #[arg(long)]
    faults: Option<String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = GenConfig {
        flows: args.flows,
        runs_per_flow: args.runs_per_flow,
        seed: args.seed,
        days: args.days,
        end: args.end.unwrap_or_else(now_millis),
        account: args
            .account
            .first()
            .cloned()
            .unwrap_or_else(|| DEFAULT_ACCOUNT.into()),
        region: args
            .region
            .first()
            .cloned()
            .unwrap_or_else(|| DEFAULT_REGION.into()),
    };
    let tenants = Tenants::generate(&cfg, &args.account, &args.region);
    if let Some(faults) = &args.faults {
        match serde_json::from_str::<Faults>(faults) {
            Ok(f) => tenants
                .iter()
                .for_each(|(_, emu)| emu.set_faults(f.clone())),
            Err(e) => {
                eprintln!("appflow-emulator: --faults is not valid: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let running = match tenants.serve(appflow_emulator::loopback(args.port)).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "appflow-emulator: cannot listen on 127.0.0.1:{}: {e}",
                args.port
            );
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", running.endpoint());
    let _ = std::io::stdout().flush();
    let _ = tokio::signal::ctrl_c().await;
    running.stop().await;
    ExitCode::SUCCESS
}
