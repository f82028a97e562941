//! Which flows to export, and what `ListFlows` says of each.

use appflow_model::{FlowDetails, FlowInfo};
use aws_sdk_appflow::types::FlowDefinition;
use globset::{Glob, GlobMatcher};

use crate::error::{Error, Result};
use crate::record::millis;

/// A flow's row of the `flows` table, from its `ListFlows` definition.
pub(crate) fn details_from_sdk(flow: FlowInfo, def: &FlowDefinition) -> FlowDetails {
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
    fn pattern_matches_globs() {
        let sel = FlowSelection::pattern("sales*-[0-9]").unwrap();
        assert!(sel.matches("salesforce-1") && !sel.matches("zendesk-1"));
        assert!(FlowSelection::pattern("[").is_err());
    }
}
