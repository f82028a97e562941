//! SDK records into the plain [`ExecutionRecord`]s this crate hands on, timestamps
//! as exact epoch milliseconds.

use appflow_model::{CatalogDetail, ExecutionRecord, LATEST_MILLIS, RegistrationOutput};
use aws_sdk_appflow::primitives::DateTime;
use aws_sdk_appflow::types;

use crate::error::{Error, Result};

/// Epoch milliseconds, rounded: the SDK parses the JSON number as f64 and truncates
/// to nanoseconds, so `to_millis()` would be 1 ms low for many values (docs/aws-facts.md).
/// A time past what milliseconds can hold saturates (never overflows): a `startedAt`
/// like that is then refused as out of range.
pub(crate) fn millis(t: &DateTime) -> i64 {
    t.secs()
        .saturating_mul(1000)
        .saturating_add(i64::from((t.subsec_nanos() + 500_000) / 1_000_000))
}

fn registration(o: &types::RegistrationOutput) -> RegistrationOutput {
    RegistrationOutput {
        status: o.status().map(|s| s.as_str().to_string()),
        message: o.message().map(str::to_string),
        result: o.result().map(str::to_string),
    }
}

/// Converts an SDK record; a record without `executionId` or `startedAt` cannot be
/// keyed or partitioned and is an error naming the flow.
pub(crate) fn record_from_sdk(flow: &str, r: &types::ExecutionRecord) -> Result<ExecutionRecord> {
    let malformed = |what: &str| Error::Malformed {
        flow: flow.to_string(),
        what: what.to_string(),
    };
    let execution_id = r
        .execution_id()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| malformed("no executionId"))?
        .to_string();
    let started_at = r
        .started_at()
        .map(millis)
        .ok_or_else(|| malformed(&format!("execution {execution_id} has no startedAt")))?;
    if !(0..=LATEST_MILLIS).contains(&started_at) {
        return Err(malformed(&format!(
            "execution {execution_id} has startedAt {started_at} ms, outside the years 1970-9999"
        )));
    }
    let result = r.execution_result();
    let error_info = result.and_then(|x| x.error_info());
    Ok(ExecutionRecord {
        execution_id,
        execution_status: r.execution_status().map(|s| s.as_str().to_string()),
        started_at,
        last_updated_at: r.last_updated_at().map(millis),
        data_pull_start_time: r.data_pull_start_time().map(millis),
        data_pull_end_time: r.data_pull_end_time().map(millis),
        bytes_processed: result.and_then(|x| x.bytes_processed()),
        bytes_written: result.and_then(|x| x.bytes_written()),
        records_processed: result.and_then(|x| x.records_processed()),
        num_parallel_processes: result.and_then(|x| x.num_parallel_processes()),
        max_page_size: result.and_then(|x| x.max_page_size()),
        put_failures_count: error_info.and_then(|e| e.put_failures_count()),
        execution_message: error_info
            .and_then(|e| e.execution_message())
            .map(str::to_string),
        catalog_details: r
            .metadata_catalog_details()
            .iter()
            .map(|d| CatalogDetail {
                catalog_type: d.catalog_type().map(|c| c.as_str().to_string()),
                table_name: d.table_name().map(str::to_string),
                table_registration: d.table_registration_output().map(registration),
                partition_registration: d.partition_registration_output().map(registration),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_saturates_instead_of_overflowing() {
        let far = DateTime::from_secs(i64::MAX / 10);
        assert_eq!(millis(&far), i64::MAX);
        let before = DateTime::from_secs(i64::MIN / 10);
        assert_eq!(millis(&before), i64::MIN);
    }

    #[test]
    fn millis_rounds_instead_of_truncating() {
        // 1700000000.123 parses to ...122999999 ns; to_millis() would say ...122.
        for ms in [
            1_700_000_000_123_i64,
            1_700_000_000_001,
            1_700_000_000_999,
            0,
            1_795_553_668_194,
        ] {
            let t = DateTime::from_secs_f64(ms as f64 / 1000.0);
            assert_eq!(millis(&t), ms, "{ms}");
        }
    }
}
