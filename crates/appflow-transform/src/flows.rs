//! `ListFlows` details to the rows of the `flows` table.

use std::sync::Arc;

use appflow_model::FlowDetails;
use arrow::array::{
    ArrayRef, MapBuilder, MapFieldNames, StringArray, StringBuilder, TimestampMillisecondArray,
};
use arrow::record_batch::RecordBatch;

use crate::schema::{MAP_ENTRIES, MAP_KEY, MAP_VALUE, flows_schema};
use crate::{Error, Result};

/// One row per flow, `snapshot_at` (epoch ms) stamped on each, `deleted_at` null.
pub fn flows_batch(flows: &[FlowDetails], snapshot_at: i64) -> Result<RecordBatch> {
    let strings = |f: &dyn Fn(&FlowDetails) -> Option<&str>| {
        Arc::new(flows.iter().map(f).collect::<StringArray>()) as ArrayRef
    };
    let times = |f: &dyn Fn(&FlowDetails) -> Option<i64>| {
        Arc::new(
            flows
                .iter()
                .map(f)
                .collect::<TimestampMillisecondArray>()
                .with_timezone("UTC"),
        ) as ArrayRef
    };
    let mut tags = MapBuilder::new(
        Some(MapFieldNames {
            entry: MAP_ENTRIES.to_string(),
            key: MAP_KEY.to_string(),
            value: MAP_VALUE.to_string(),
        }),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    for flow in flows {
        for (k, v) in &flow.tags {
            tags.keys().append_value(k);
            tags.values().append_value(v);
        }
        tags.append(true).map_err(|source| Error::Arrow {
            table: "flows",
            source,
        })?;
    }
    let columns = vec![
        strings(&|f| Some(&f.flow.account_id)),
        strings(&|f| Some(&f.flow.region)),
        strings(&|f| Some(&f.flow.name)),
        strings(&|f| Some(&f.flow.arn)),
        strings(&|f| f.description.as_deref()),
        strings(&|f| f.flow_status.as_deref()),
        strings(&|f| f.source_connector_type.as_deref()),
        strings(&|f| f.source_connector_label.as_deref()),
        strings(&|f| f.destination_connector_type.as_deref()),
        strings(&|f| f.destination_connector_label.as_deref()),
        strings(&|f| f.trigger_type.as_deref()),
        times(&|f| f.created_at),
        strings(&|f| f.created_by.as_deref()),
        times(&|f| f.last_updated_at),
        strings(&|f| f.last_updated_by.as_deref()),
        Arc::new(tags.finish()) as ArrayRef,
        strings(&|f| f.last_run_status.as_deref()),
        times(&|f| f.last_run_at),
        strings(&|f| f.last_run_message.as_deref()),
        times(&|_| Some(snapshot_at)),
        times(&|_| None),
    ];
    RecordBatch::try_new(flows_schema(), columns).map_err(|source| Error::Arrow {
        table: "flows",
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use appflow_model::testkit::flow_in;
    use arrow::array::{Array, AsArray};

    use super::*;

    fn details(name: &str, tags: &[(&str, &str)]) -> FlowDetails {
        FlowDetails {
            flow_status: Some("Active".into()),
            created_at: Some(1_700_000_000_123),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            ..FlowDetails::new(flow_in(name, "1", "eu-west-1"))
        }
    }

    #[test]
    fn tags_become_a_map_per_row() {
        let batch = flows_batch(
            &[
                details("a", &[("team", "x"), ("env", "prod")]),
                details("b", &[]),
            ],
            5,
        )
        .unwrap();
        assert_eq!(batch.schema(), flows_schema());
        let tags = batch.column_by_name("tags").unwrap().as_map();
        assert_eq!(tags.value_length(0), 2);
        assert_eq!(tags.value_length(1), 0);
        let keys = tags.keys().as_string::<i32>();
        assert_eq!((keys.value(0), keys.value(1)), ("env", "team"));
        let deleted = batch.column_by_name("deleted_at").unwrap();
        assert_eq!(deleted.null_count(), 2);
    }
}
