//! The errors of the `cairn` crate, by kind, so a caller can match on what went wrong instead
//! of reading a message: the store is unavailable, the run does not exist, the input or the
//! configuration was refused, part of the node could not start. The engine's own errors stay
//! reachable ([`Error::Engine`], and the source of [`Error::StoreUnavailable`]).

/// What can go wrong using Cairn from Rust.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store did not answer: a lost connection, an unreachable server, or an outage longer
    /// than the retry policy waits. Trying again later may work.
    #[error("the store is unavailable: {0}")]
    StoreUnavailable(#[source] cairn_engine::Error),
    /// No run has this id.
    #[error("no run {run:?}")]
    RunNotFound {
        /// The id asked for.
        run: String,
    },
    /// Input was refused: which input, and why.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// The input (a field, a name, a value).
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration was refused: a config file, a flag, an address, a setting.
    #[error("configuration refused: {0}")]
    Config(String),
    /// A part of the node could not start.
    #[error("the node's {part} could not start: {detail}")]
    Start {
        /// Which part: `workers`, `schedulers`, `cluster`, `api` or `telemetry`.
        part: &'static str,
        /// Why.
        detail: String,
    },
    /// Any other error of the engine: a transaction that kept conflicting, corrupt data, a
    /// value over the store's limits, a backend's own failure.
    #[error(transparent)]
    Engine(cairn_engine::Error),
}

impl From<cairn_engine::Error> for Error {
    fn from(e: cairn_engine::Error) -> Self {
        if e.is_outage() {
            return Error::StoreUnavailable(e);
        }
        match e {
            cairn_engine::Error::RunNotFound { run } => Error::RunNotFound { run },
            cairn_engine::Error::InvalidInput { what, reason } => {
                Error::InvalidInput { what, reason }
            }
            e => Error::Engine(e),
        }
    }
}

impl Error {
    /// Whether trying again later may succeed (the store was unavailable).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::StoreUnavailable(_))
    }
}
