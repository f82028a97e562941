//! Which flows to export, and the account and region each belongs to.

use globset::{Glob, GlobMatcher};

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
