/// Why a run ended before it was done. [`Error::kind`] sorts them for exit codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Listing the flows failed: no flow was read.
    #[error(transparent)]
    List(appflow_extract::Error),
    /// The destination could not be read or written.
    #[error(transparent)]
    Load(appflow_load::Error),
    /// The local temporary folder could not hold the rows read (of this flow).
    #[error("staging {} in a temporary folder", flow.as_ref().map_or_else(|| "rows".to_string(), |f| format!("the rows of flow '{f}'")))]
    Staging {
        flow: Option<String>,
        #[source]
        source: appflow_load::Error,
    },
    /// The flows table's rows could not be built from a listing (a bug).
    #[error("the flows table of {account} {region}")]
    FlowsTable {
        account: String,
        region: String,
        #[source]
        source: appflow_transform::Error,
    },
    /// Everything was committed but the run's own manifest.
    #[error("the run's data and state were written, but its manifest {key} was not")]
    Manifest {
        key: String,
        #[source]
        source: appflow_load::Error,
    },
}

/// What kind of failure ended a run: what the operator has to look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// AppFlow could not be listed (credentials, permissions, the endpoint).
    Listing,
    /// The destination could not be read or written.
    Destination,
    /// The local temporary folder (disk full, not writable).
    Staging,
    /// A bug of this tool.
    Bug,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        let load = |e: &appflow_load::Error, otherwise| {
            if e.is_bug() {
                ErrorKind::Bug
            } else if e.is_staging() {
                ErrorKind::Staging
            } else {
                otherwise
            }
        };
        match self {
            Error::List(_) => ErrorKind::Listing,
            Error::Load(e) | Error::Manifest { source: e, .. } => load(e, ErrorKind::Destination),
            Error::Staging { source, .. } => load(source, ErrorKind::Staging),
            Error::FlowsTable { .. } => ErrorKind::Bug,
        }
    }
}

impl Error {
    /// The destination itself cannot be used (it does not exist, or the job may not
    /// list it: its check failed), as opposed to one object of it: every run into it
    /// would fail alike.
    pub fn is_destination_unusable(&self) -> bool {
        matches!(self, Error::Load(appflow_load::Error::BadDest { .. }))
    }
}

impl From<appflow_load::Error> for Error {
    fn from(e: appflow_load::Error) -> Self {
        Error::Load(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
