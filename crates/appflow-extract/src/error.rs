use std::error::Error as StdError;

/// What can go wrong while reading from AppFlow. Each variant names what the user
/// needs to act: the flow, the pattern, the ARN.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ListFlows failed")]
    ListFlows(#[source] Box<dyn StdError + Send + Sync>),
    #[error("flow '{flow}' does not exist (ListFlows in {region} did not return it)")]
    UnknownFlow { flow: String, region: String },
    #[error("--flow-pattern '{pattern}' is not a valid glob")]
    BadPattern {
        pattern: String,
        #[source]
        source: globset::Error,
    },
    #[error(
        "flow '{flow}': '{arn}' is not an AppFlow flow ARN (arn:PARTITION:appflow:REGION:ACCOUNT:flow/NAME)"
    )]
    BadArn { flow: String, arn: String },
    #[error("flow '{flow}': DescribeFlowExecutionRecords failed")]
    Describe {
        flow: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("--shard '{shard}' is not valid: {why}")]
    BadShard { shard: String, why: String },
    #[error("flow '{flow}': malformed execution record: {what}")]
    Malformed { flow: String, what: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
