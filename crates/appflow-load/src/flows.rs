//! The `flows` table: one file per (account, region), `flows/<account>_<region>.parquet`,
//! holding the newest snapshot of each flow `ListFlows` ever returned.
//!
//! A run merges what it listed into the stored rows. Keyed by (account_id, region,
//! flow_name):
//! - a listed flow whose stored row has the same values keeps that row, `snapshot_at`
//!   included, so a run that lists nothing new writes nothing;
//! - a listed flow whose values changed (or that is new, or back after a deletion)
//!   gets this run's row;
//! - a stored flow that was not listed keeps its last row, with `deleted_at` set to
//!   this run's snapshot time the first time it is missed;
//! - a stored row another writer took from a newer listing (its `snapshot_at` or
//!   `deleted_at` later than this run's) is kept: the newest view of a flow wins.
//!   (`snapshot_at` is when a row's values were first seen, so a newer run that saw
//!   no change leaves an older time: an older listing can then replace the row only
//!   with values that were current after it was written, which listings only move
//!   forward from.)
//!
//! A file of an older schema version reads with nulls in the newer columns, so the
//! first run of a new version gives every row a new `snapshot_at`: its values did
//! change (the new columns got theirs).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, TimestampMillisecondArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::TimestampMillisecondType;
use arrow::error::ArrowError;

use crate::merge::{column, concat, rows, sorted};

const KEY: [&str; 3] = ["account_id", "region", "flow_name"];
const SNAPSHOT: &str = "snapshot_at";
const DELETED: &str = "deleted_at";

/// Whether rows `a` and `b` of `batch` hold the same values in every column but `skip`.
fn same_values(batch: &RecordBatch, a: usize, b: usize, skip: &str) -> bool {
    let schema = batch.schema();
    schema
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(f, _)| f.name() != skip)
        .all(|(_, col)| col.slice(a, 1).as_ref() == col.slice(b, 1).as_ref())
}

/// Merges the rows of one listing (taken at `snapshot_ms`, `deleted_at` null) into
/// the stored rows of the same account and region. `None`: nothing changed.
pub(crate) fn merge_flows(
    stored: Option<&RecordBatch>,
    listed: &RecordBatch,
    snapshot_ms: i64,
) -> Result<Option<RecordBatch>, ArrowError> {
    let (all, n_old) = concat(stored, listed)?;
    let keys = rows(&all, &KEY)?;
    let snapshot = column(&all, SNAPSHOT)?.as_primitive::<TimestampMillisecondType>();
    let deleted = column(&all, DELETED)?.as_primitive::<TimestampMillisecondType>();
    let deleted_at = |i: usize| deleted.is_valid(i).then(|| deleted.value(i));
    // When the listing behind a row was taken.
    let seen_at = |i: usize| snapshot.value(i).max(deleted_at(i).unwrap_or(i64::MIN));

    let stored_of: HashMap<&[u8], usize> = (0..n_old).map(|i| (keys.row(i).data(), i)).collect();
    let mut listed_keys = HashSet::with_capacity(all.num_rows() - n_old);
    let mut keep = Vec::with_capacity(all.num_rows());
    let mut changed = false;
    for j in n_old..all.num_rows() {
        let key = keys.row(j).data();
        if !listed_keys.insert(key) {
            continue; // the same flow listed twice: its first row stands
        }
        match stored_of.get(key) {
            Some(&i) if seen_at(i) > snapshot_ms || same_values(&all, i, j, SNAPSHOT) => {
                keep.push(i)
            }
            _ => {
                keep.push(j);
                changed = true;
            }
        }
    }
    let mut newly_deleted = HashSet::new();
    for i in 0..n_old {
        if listed_keys.contains(keys.row(i).data()) {
            continue;
        }
        keep.push(i);
        if deleted_at(i).is_none() && snapshot.value(i) <= snapshot_ms {
            newly_deleted.insert(i);
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }

    let deleted_col: TimestampMillisecondArray = (0..all.num_rows())
        .map(|i| {
            if newly_deleted.contains(&i) {
                Some(snapshot_ms)
            } else {
                deleted_at(i)
            }
        })
        .collect();
    let deleted_col: ArrayRef = Arc::new(deleted_col.with_timezone("UTC"));
    let schema = all.schema();
    let columns = schema
        .fields()
        .iter()
        .zip(all.columns())
        .map(|(f, c)| {
            if f.name() == DELETED {
                deleted_col.clone()
            } else {
                c.clone()
            }
        })
        .collect();
    let all = RecordBatch::try_new(schema, columns)?;
    let merged = take_record_batch(
        &all,
        &UInt32Array::from_iter_values(keep.iter().map(|&i| i as u32)),
    )?;
    Ok(Some(sorted(&merged, &KEY)?))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use appflow_model::FlowDetails;
    use appflow_model::testkit::flow_in;
    use appflow_transform::flows_batch;

    use super::*;

    fn flow(name: &str, status: &str) -> FlowDetails {
        FlowDetails {
            flow_status: Some(status.into()),
            source_connector_type: Some("Salesforce".into()),
            tags: BTreeMap::from([("team".to_string(), "x".to_string())]),
            ..FlowDetails::new(flow_in(name, "1", "eu-west-1"))
        }
    }

    fn listed(flows: &[FlowDetails], at: i64) -> RecordBatch {
        flows_batch(flows, at).unwrap()
    }

    /// (flow_name, flow_status, snapshot_at, deleted_at) of each row.
    fn summary(b: &RecordBatch) -> Vec<(String, String, i64, Option<i64>)> {
        let name = b.column_by_name("flow_name").unwrap().as_string::<i32>();
        let status = b.column_by_name("flow_status").unwrap().as_string::<i32>();
        let snap = b
            .column_by_name(SNAPSHOT)
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        let del = b
            .column_by_name(DELETED)
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        (0..b.num_rows())
            .map(|i| {
                (
                    name.value(i).to_string(),
                    status.value(i).to_string(),
                    snap.value(i),
                    del.is_valid(i).then(|| del.value(i)),
                )
            })
            .collect()
    }

    fn row(
        name: &str,
        status: &str,
        snap: i64,
        del: Option<i64>,
    ) -> (String, String, i64, Option<i64>) {
        (name.to_string(), status.to_string(), snap, del)
    }

    #[test]
    fn a_first_listing_is_written_sorted() {
        let merged = merge_flows(
            None,
            &listed(&[flow("b", "Active"), flow("a", "Active")], 10),
            10,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            summary(&merged),
            [row("a", "Active", 10, None), row("b", "Active", 10, None)]
        );
    }

    #[test]
    fn the_same_listing_again_changes_nothing() {
        let first = listed(&[flow("a", "Active")], 10);
        assert!(
            merge_flows(Some(&first), &listed(&[flow("a", "Active")], 20), 20)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_changed_flow_takes_the_new_row_and_the_others_keep_theirs() {
        let first = listed(&[flow("a", "Active"), flow("b", "Active")], 10);
        let merged = merge_flows(
            Some(&first),
            &listed(&[flow("a", "Suspended"), flow("b", "Active")], 20),
            20,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            summary(&merged),
            [
                row("a", "Suspended", 20, None),
                row("b", "Active", 10, None)
            ]
        );
    }

    #[test]
    fn a_missing_flow_is_marked_deleted_once_and_comes_back_when_listed() {
        let first = listed(&[flow("a", "Active"), flow("b", "Active")], 10);
        let gone = merge_flows(Some(&first), &listed(&[flow("a", "Active")], 20), 20)
            .unwrap()
            .unwrap();
        assert_eq!(
            summary(&gone),
            [
                row("a", "Active", 10, None),
                row("b", "Active", 10, Some(20))
            ]
        );
        assert!(
            merge_flows(Some(&gone), &listed(&[flow("a", "Active")], 30), 30)
                .unwrap()
                .is_none(),
            "deleted_at is set once"
        );
        let back = merge_flows(
            Some(&gone),
            &listed(&[flow("a", "Active"), flow("b", "Active")], 40),
            40,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            summary(&back),
            [row("a", "Active", 10, None), row("b", "Active", 40, None)]
        );
    }

    #[test]
    fn an_older_listing_never_overwrites_a_newer_one() {
        // A newer run (snapshot 30) stored a change and a deletion; a slower run
        // that listed at 20 commits afterwards.
        let newer = merge_flows(
            Some(&listed(&[flow("a", "Active"), flow("b", "Active")], 10)),
            &listed(&[flow("a", "Suspended")], 30),
            30,
        )
        .unwrap()
        .unwrap();
        let older = listed(
            &[flow("a", "Active"), flow("b", "Active"), flow("c", "Draft")],
            20,
        );
        let merged = merge_flows(Some(&newer), &older, 20).unwrap().unwrap();
        assert_eq!(
            summary(&merged),
            [
                row("a", "Suspended", 30, None),
                row("b", "Active", 10, Some(30)),
                row("c", "Draft", 20, None),
            ]
        );
    }

    #[test]
    fn tags_are_compared() {
        let first = listed(&[flow("a", "Active")], 10);
        let mut retagged = flow("a", "Active");
        retagged.tags.insert("env".into(), "prod".into());
        let merged = merge_flows(Some(&first), &listed(&[retagged], 20), 20)
            .unwrap()
            .unwrap();
        assert_eq!(summary(&merged), [row("a", "Active", 20, None)]);
    }
}
