/// What can be wrong with the data itself.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "flow '{flow}': '{arn}' is not an AppFlow flow ARN (arn:PARTITION:appflow:REGION:ACCOUNT:flow/NAME)"
    )]
    BadArn { flow: String, arn: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
