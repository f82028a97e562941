//! A flow: its identity (from its ARN) and what `ListFlows` says of it.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// A flow to export, with the account and region taken from its ARN.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowInfo {
    pub name: String,
    pub arn: String,
    pub account_id: String,
    pub region: String,
}

impl FlowInfo {
    /// Builds the flow from `ListFlows` data; the ARN must be an AppFlow flow ARN.
    pub fn from_arn(name: &str, arn: &str) -> Result<Self> {
        let bad = || Error::BadArn {
            flow: name.to_string(),
            arn: arn.to_string(),
        };
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        match parts.as_slice() {
            ["arn", _partition, "appflow", region, account, resource]
                if !region.is_empty()
                    && !account.is_empty()
                    && account.bytes().all(|b| b.is_ascii_digit())
                    && resource.starts_with("flow/") =>
            {
                Ok(FlowInfo {
                    name: name.to_string(),
                    arn: arn.to_string(),
                    account_id: account.to_string(),
                    region: region.to_string(),
                })
            }
            _ => Err(bad()),
        }
    }
}

/// Everything `ListFlows` says about one flow: a row of the `flows` table.
/// Timestamps are epoch milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowDetails {
    pub flow: FlowInfo,
    pub description: Option<String>,
    pub flow_status: Option<String>,
    pub source_connector_type: Option<String>,
    pub source_connector_label: Option<String>,
    pub destination_connector_type: Option<String>,
    pub destination_connector_label: Option<String>,
    pub trigger_type: Option<String>,
    pub created_at: Option<i64>,
    pub created_by: Option<String>,
    pub last_updated_at: Option<i64>,
    pub last_updated_by: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub last_run_status: Option<String>,
    pub last_run_at: Option<i64>,
    pub last_run_message: Option<String>,
}

/// What `ListFlows` says of a flow's most recent run (`lastRunExecutionDetails`):
/// its time (epoch ms; AWS does not document whether it is the start or the last
/// update) and status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LastRun {
    pub at_ms: Option<i64>,
    pub status: Option<String>,
}

impl FlowDetails {
    /// What the listing says of the flow's most recent run; `None` when it says
    /// nothing (no `lastRunExecutionDetails`, or neither a time nor a status in them).
    pub fn last_run(&self) -> Option<LastRun> {
        (self.last_run_at.is_some() || self.last_run_status.is_some()).then(|| LastRun {
            at_ms: self.last_run_at,
            status: self.last_run_status.clone(),
        })
    }

    /// A flow of which nothing but its identity is known (for fixtures: fill in the
    /// rest with struct update syntax).
    pub fn new(flow: FlowInfo) -> Self {
        FlowDetails {
            flow,
            description: None,
            flow_status: None,
            source_connector_type: None,
            source_connector_label: None,
            destination_connector_type: None,
            destination_connector_label: None,
            trigger_type: None,
            created_at: None,
            created_by: None,
            last_updated_at: None,
            last_updated_by: None,
            tags: BTreeMap::new(),
            last_run_status: None,
            last_run_at: None,
            last_run_message: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_and_region_come_from_the_arn() {
        let f = FlowInfo::from_arn(
            "a.b@c#1!",
            "arn:aws:appflow:eu-west-1:210987654321:flow/a.b@c#1!",
        )
        .unwrap();
        assert_eq!(
            (f.account_id.as_str(), f.region.as_str()),
            ("210987654321", "eu-west-1")
        );
        let cn = FlowInfo::from_arn("x", "arn:aws-cn:appflow:cn-north-1:1:flow/x").unwrap();
        assert_eq!(cn.region, "cn-north-1");
    }

    #[test]
    fn other_arns_are_refused_by_name() {
        for arn in [
            "",
            "arn:aws:s3:::bucket",
            "arn:aws:appflow:us-east-1::flow/x",
            "arn:aws:appflow:us-east-1:12a:flow/x",
        ] {
            let err = FlowInfo::from_arn("x", arn).unwrap_err().to_string();
            assert!(err.contains("'x'") && err.contains(arn), "{err}");
        }
    }
}
