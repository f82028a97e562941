//! Paging alone, the floor under a full export (`bench/table.sh` runs it beside the
//! export, on the same emulator): every flow's whole history through the `Extractor`
//! the export uses, at most 8 calls in flight (the export's default `--concurrency`),
//! the records counted and dropped.
//!
//! Usage: `page_all [ENDPOINT]` (else `AWS_ENDPOINT_URL_APPFLOW`); credentials and
//! region from the environment, as the export takes them.

use appflow_extract::{ExtractJob, Extractor, FlowEvent, FlowSelection};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let mut config = aws_sdk_appflow::config::Builder::from(&sdk);
    if let Some(endpoint) = std::env::args().nth(1) {
        config = config.endpoint_url(endpoint);
    }
    let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
    let extractor = Extractor::new(aws_sdk_appflow::Client::from_conf(config.build()), region);
    let listing = extractor.list_flows(&FlowSelection::All).await?;
    let jobs = listing.flows.into_iter().map(|flow| ExtractJob {
        flow,
        cutoff: None,
        until: None,
        full_scan: false,
        open_since: None,
    });
    let mut events = extractor.extract(futures::stream::iter(jobs));
    let (mut records, mut pages) = (0_u64, 0_u64);
    while let Some((_, event)) = events.next().await {
        match event {
            FlowEvent::Page(page) => {
                records += page.len() as u64;
                pages += 1;
            }
            FlowEvent::Done(_) => {}
            FlowEvent::Failed(e) => return Err(e.into()),
        }
    }
    println!("paged {records} records in {pages} pages");
    Ok(())
}
