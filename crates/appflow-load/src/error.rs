use std::error::Error as StdError;

/// What can go wrong while loading. Each variant names the object or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--dest '{dest}' is not valid: {why}")]
    BadDest { dest: String, why: String },
    #[error("cannot read {location}")]
    Read {
        location: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("cannot write {location}")]
    Write {
        location: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("{location} is not a readable {what}")]
    Corrupt {
        location: String,
        what: &'static str,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// An object written by another release, in a format version this one does not
    /// know (a newer one, or one that is not a whole number).
    #[error(
        "{location} was written by a newer or other release of appflow-export ({what} format version {found}; this release knows version {known}): upgrade appflow-export (the object is left as it is)"
    )]
    NewerVersion {
        location: String,
        what: &'static str,
        found: String,
        known: u64,
    },
    /// A data file another tool rewrote with a codec this build does not read.
    #[error(
        "{location} is a {what} compressed with {codec}, which appflow-export does not read (it reads zstd, its own, and snappy, lz4 and gzip): rewrite it with one of those (the object is left as it is)"
    )]
    UnreadableCodec {
        location: String,
        what: &'static str,
        codec: String,
    },
    #[error("{location}: still conflicting with other writers after {attempts} attempts")]
    Contention { location: String, attempts: u32 },
    #[error("staging rows in a temporary file failed")]
    Stage(#[source] Box<dyn StdError + Send + Sync>),
    #[error("a row has started_at {millis} ms, outside the dates this tool can partition")]
    BadTimestamp { millis: i64 },
    /// A bug of this tool (a task panicked), not a fault of the destination.
    #[error("internal error while {doing} (a bug in appflow-export: please report it)")]
    Bug {
        doing: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn read(
        location: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Error::Read {
            location: location.into(),
            source: source.into(),
        }
    }

    pub(crate) fn write(
        location: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Error::Write {
            location: location.into(),
            source: source.into(),
        }
    }

    pub(crate) fn bug(doing: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Bug {
            doing: doing.into(),
            source: source.into(),
        }
    }

    /// Whether the local staging folder failed (not the destination).
    pub fn is_staging(&self) -> bool {
        matches!(self, Error::Stage(_))
    }

    /// Whether this is a bug of this tool rather than a fault outside it.
    pub fn is_bug(&self) -> bool {
        matches!(self, Error::Bug { .. })
    }

    pub(crate) fn stage(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Error::Stage(source.into())
    }
}
