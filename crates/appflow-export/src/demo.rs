//! `appflow-export demo`: the bundled emulator, two exports, and a query to paste.

use std::fs;
use std::path::Path;

use anyhow::{Context, anyhow};
use appflow_emulator::{AddRuns, DEFAULT_REGION, Emulator, GenConfig, loopback, now_millis};
use appflow_load::{Destination, S3Options};
use appflow_transform::Table;
use aws_config::Region;
use aws_sdk_appflow::config::Credentials;

use crate::cli::DemoArgs;
use crate::progress::Progress;
use crate::run::{Invocation, exit_code, failure, flows_failed};
use crate::{EXIT_DESTINATION, EXIT_USAGE, Failure, aws};

/// Marks a folder as the demo's, so a later demo may replace its content.
const MARKER: &str = ".appflow-export-demo";

/// Empties an earlier demo's folder; refuses a non-empty folder that is not one.
fn prepare(dir: &Path) -> Result<(), Failure> {
    let is_empty = fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true);
    if !is_empty {
        if !dir.join(MARKER).exists() {
            return Err(Failure::new(
                EXIT_USAGE,
                anyhow!(
                    "--dir {} is not empty and holds no earlier demo; choose another folder",
                    dir.display()
                ),
            ));
        }
        let folders = Table::ALL.iter().map(|t| t.name()).chain(["_state"]);
        for sub in folders {
            let path = dir.join(sub);
            if path.exists() {
                fs::remove_dir_all(&path)
                    .with_context(|| format!("removing the earlier demo's {}", path.display()))
                    .map_err(|e| Failure::new(EXIT_DESTINATION, e))?;
            }
        }
    }
    fs::create_dir_all(dir)
        .and_then(|()| fs::write(dir.join(MARKER), "written by appflow-export demo\n"))
        .with_context(|| format!("creating {}", dir.display()))
        .map_err(|e| Failure::new(EXIT_DESTINATION, e))
}

pub async fn command(args: DemoArgs) -> Result<(), Failure> {
    prepare(&args.dir)?;
    let cfg = GenConfig {
        flows: args.flows,
        runs_per_flow: args.runs_per_flow,
        seed: args.seed,
        days: 30,
        end: now_millis(),
        account: appflow_emulator::DEFAULT_ACCOUNT.to_string(),
        region: DEFAULT_REGION.to_string(),
    };
    let emulator = Emulator::generate(&cfg);
    let running = emulator
        .serve(loopback(0))
        .await
        .map_err(|e| Failure::new(1, anyhow!("cannot start the AppFlow emulator: {e}")))?;
    println!(
        "appflow-export demo: an AppFlow emulator ({} flows x {} runs over {} days) serves {}",
        cfg.flows,
        cfg.runs_per_flow,
        cfg.days,
        running.endpoint()
    );

    // The emulator takes any credentials; fixed ones keep the demo off real AWS.
    let sdk = aws::loader(5)
        .region(Region::new(DEFAULT_REGION))
        .credentials_provider(Credentials::new(
            "demo",
            "demo",
            None,
            None,
            "appflow-export-demo",
        ))
        .load()
        .await;
    let dir = args.dir.display().to_string();
    // The binary as it was started (`target/debug/appflow-export` under `make run`).
    let exe = std::env::args_os().next().map_or_else(
        || "appflow-export".to_string(),
        |a| a.to_string_lossy().into_owned(),
    );
    let invocation = Invocation {
        plan: appflow_pipeline::Plan {
            arguments: crate::arguments(),
            ..appflow_pipeline::Plan::new(dir.clone(), env!("CARGO_PKG_VERSION"))
        },
        dest: Destination::Local(args.dir.clone()),
        appflow_endpoint: Some(running.endpoint().to_string()),
        concurrency: appflow_extract::DEFAULT_CONCURRENCY,
        s3: S3Options::default(),
        dry_run: false,
        stop: appflow_pipeline::Stop::default(),
    };
    let store = invocation.dest.store(&sdk, &invocation.s3);
    let pipeline = invocation.pipeline(&sdk, DEFAULT_REGION, store);
    let (pipeline, plan) = (&pipeline, &invocation.plan);
    let export = || async move {
        let (report, result) = pipeline
            .run_recorded(plan, &Progress::new(), exit_code)
            .await;
        result.map_err(failure)?;
        print!("{report}");
        flows_failed(&report)
    };

    println!("\n1. First export: the whole retained history");
    export().await?;

    let added = emulator.add_runs(&AddRuns {
        count: 2,
        ..Default::default()
    });
    let finished = emulator.finish_open_runs(&[]);
    println!(
        "\n2. Meanwhile in AppFlow: {} new runs started, {} open runs finished",
        added.len(),
        finished
    );

    println!("\n3. Second export: incremental, from each flow's watermark");
    export().await?;
    running.stop().await;

    println!(
        "\nQuery it with DuckDB (pip install duckdb, or the duckdb CLI):\n\n  duckdb -c \"SELECT flow_name, count(*) AS runs, \
count(*) FILTER (execution_status = 'Error') AS errors, round(avg(duration_seconds), 1) AS avg_seconds, \
sum(bytes_written) AS bytes_written FROM read_parquet('{dir}/executions/*/*.parquet', hive_partitioning = true) \
GROUP BY flow_name ORDER BY errors DESC LIMIT 10\"\n\n\
Or load the three tables as views and ask the questions in schemas/queries/:\n\n  \
{exe} schema --format duckdb --dest {dir} > views.sql\n  \
duckdb -init views.sql -c \".read schemas/queries/daily_runs_and_failure_rate.sql\"\n"
    );
    Ok(())
}
