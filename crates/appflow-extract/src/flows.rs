//! Which flows to export, and the account and region each belongs to.

use std::collections::BTreeMap;

use aws_sdk_appflow::types::FlowDefinition;
use globset::{Glob, GlobMatcher};

use crate::error::{Error, Result};
use crate::record::millis;

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

impl FlowDetails {
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

    pub(crate) fn from_sdk(flow: FlowInfo, def: &FlowDefinition) -> Self {
        let text = |s: Option<&str>| s.map(str::to_string);
        let last = def.last_run_execution_details();
        FlowDetails {
            flow,
            description: text(def.description()),
            flow_status: def.flow_status().map(|s| s.as_str().to_string()),
            source_connector_type: def.source_connector_type().map(|s| s.as_str().to_string()),
            source_connector_label: text(def.source_connector_label()),
            destination_connector_type: def
                .destination_connector_type()
                .map(|s| s.as_str().to_string()),
            destination_connector_label: text(def.destination_connector_label()),
            trigger_type: def.trigger_type().map(|s| s.as_str().to_string()),
            created_at: def.created_at().map(millis),
            created_by: text(def.created_by()),
            last_updated_at: def.last_updated_at().map(millis),
            last_updated_by: text(def.last_updated_by()),
            tags: def
                .tags()
                .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            last_run_status: last
                .and_then(|l| l.most_recent_execution_status())
                .map(|s| s.as_str().to_string()),
            last_run_at: last
                .and_then(|l| l.most_recent_execution_time())
                .map(millis),
            last_run_message: last.and_then(|l| text(l.most_recent_execution_message())),
        }
    }
}

/// Which of the listed flows to export.
#[derive(Clone, Debug, Default)]
pub enum FlowSelection {
    #[default]
    All,
    /// Exactly these names; a name ListFlows does not return is an error for that name.
    Names(Vec<String>),
    /// Names matching a glob (`*`, `?`, `[abc]`).
    Pattern(GlobMatcher),
}

impl FlowSelection {
    pub fn pattern(glob: &str) -> Result<Self> {
        Glob::new(glob)
            .map(|g| FlowSelection::Pattern(g.compile_matcher()))
            .map_err(|source| Error::BadPattern {
                pattern: glob.to_string(),
                source,
            })
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        match self {
            FlowSelection::All => true,
            FlowSelection::Names(names) => names.iter().any(|n| n == name),
            FlowSelection::Pattern(m) => m.is_match(name),
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

    #[test]
    fn pattern_matches_globs() {
        let sel = FlowSelection::pattern("sales*-[0-9]").unwrap();
        assert!(sel.matches("salesforce-1") && !sel.matches("zendesk-1"));
        assert!(FlowSelection::pattern("[").is_err());
    }
}
