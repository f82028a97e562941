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
    /// A flow whose ARN cannot be used.
    #[error(transparent)]
    Flow(#[from] appflow_model::Error),
    #[error("flow '{flow}': DescribeFlowExecutionRecords failed")]
    Describe {
        flow: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("--shard '{shard}' is not valid: {why}")]
    BadShard { shard: String, why: String },
    /// A bug of this tool: the task reading the flow panicked.
    #[error(
        "flow '{flow}': internal error while reading it (a bug in appflow-export: please report it)"
    )]
    Bug {
        flow: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("STS GetCallerIdentity failed")]
    Identity(#[source] Box<dyn StdError + Send + Sync>),
    #[error("flow '{flow}': malformed execution record: {what}")]
    Malformed { flow: String, what: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether this is a bug of this tool rather than a fault of AppFlow or the input.
    pub fn is_bug(&self) -> bool {
        matches!(self, Error::Bug { .. })
    }
}
