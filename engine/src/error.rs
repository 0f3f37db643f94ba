//! The engine's one error type.
//!
//! Callers decide on the *kind* of failure (retry a conflict, reconnect after a lost connection,
//! split an oversized value, give up on corrupt data), so every kind is its own variant and none
//! is flattened into a string.

use std::time::Duration;

/// A store size limit that a transaction exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeLimit {
    /// One key longer than [`crate::store::Limits::max_key`].
    Key,
    /// One value longer than [`crate::store::Limits::max_value`].
    Value,
    /// All the writes of one transaction together exceed [`crate::store::Limits::max_transaction`].
    Transaction,
}

impl std::fmt::Display for SizeLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SizeLimit::Key => "key",
            SizeLimit::Value => "value",
            SizeLimit::Transaction => "transaction",
        })
    }
}

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The transaction read something another transaction changed before it committed.
    /// Retryable: run the transaction again.
    #[error("transaction conflict on the {backend} store; retry it")]
    Conflict {
        /// Which backend reported it.
        backend: &'static str,
    },

    /// The commit may or may not have been applied (FoundationDB's `commit_unknown_result`, or a
    /// connection lost during `COMMIT`). Retryable only because every transaction Cairn retries
    /// is written to be idempotent.
    #[error("commit result unknown on the {backend} store: {detail}")]
    MaybeCommitted {
        /// Which backend reported it.
        backend: &'static str,
        /// What the backend said.
        detail: String,
    },

    /// The transaction outlived the store's transaction lifetime (FoundationDB: 5 s, error
    /// 1007 `transaction_too_old`). Retryable: a fresh transaction starts a new lifetime, but
    /// work that cannot fit in one lifetime fails every time and must be split.
    #[error(
        "transaction on the {backend} store is older than its {limit_ms} ms lifetime; split the work into smaller transactions"
    )]
    TransactionTooOld {
        /// Which backend reported it.
        backend: &'static str,
        /// The lifetime (ms).
        limit_ms: u64,
    },

    /// The store has as many outstanding watches as it allows (FoundationDB: 10,000 per
    /// database by default, error 1032 `too_many_watches`). Waiters fall back to re-reading.
    #[error("the {backend} store has {limit} outstanding watches, its maximum")]
    TooManyWatches {
        /// Which backend reported it.
        backend: &'static str,
        /// The maximum.
        limit: usize,
    },

    /// The connection to the store broke. Retryable: a new transaction reconnects.
    #[error("lost the connection to the {backend} store: {detail}")]
    ConnectionLost {
        /// Which backend reported it.
        backend: &'static str,
        /// What the backend said.
        detail: String,
    },

    /// A key, a value or a whole transaction is larger than the store accepts.
    #[error("{what} too large: {size} bytes, the limit is {limit} bytes")]
    TooLarge {
        /// Which limit.
        what: SizeLimit,
        /// The offending size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },

    /// Stored bytes could not be decoded: the store holds something Cairn did not write, or a
    /// newer Cairn wrote a layout this one does not know.
    #[error("corrupt data in {what}: {detail}")]
    Corrupt {
        /// Which record or key.
        what: String,
        /// Why it could not be decoded.
        detail: String,
    },

    /// A store URL that does not name a backend Cairn knows, or whose parts do not parse.
    #[error("bad store URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given (passwords removed).
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The store named by a URL could not be opened or reached.
    #[error("cannot open the store at {url}: {detail}")]
    Unreachable {
        /// The URL as given (passwords removed).
        url: String,
        /// Why.
        detail: String,
    },

    /// A write was attempted in a read-only transaction.
    #[error("write in a read-only transaction")]
    ReadOnly,

    /// The transaction was already committed, or failed and must not be reused.
    #[error("the transaction is already finished")]
    Finished,

    /// A retryable error kept happening until the retry policy gave up.
    #[error("gave up after {attempts} attempts over {elapsed:?}; last error: {last}")]
    RetriesExhausted {
        /// How many times the transaction ran.
        attempts: u32,
        /// Time spent in all the attempts.
        elapsed: Duration,
        /// The error of the last attempt.
        last: Box<Error>,
    },

    /// No run has this id.
    #[error("no run {run:?}")]
    RunNotFound {
        /// The id asked for.
        run: String,
    },

    /// No blob with this digest is stored (completely).
    #[error("no blob {digest} in the store")]
    BlobNotFound {
        /// The BLAKE3 digest, in hex.
        digest: String,
    },

    /// Reading or writing a local file or stream failed.
    #[error("I/O error {what}: {detail}")]
    Io {
        /// What was being read or written.
        what: String,
        /// The operating system's message.
        detail: String,
    },

    /// A value given to the engine is unusable; `what` names it.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// Which input (a field, a named task input, a URL part).
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A task output is larger than the catalog stores; the output still reaches its caller,
    /// with cache status `PutFailure`.
    #[error("output of {size} bytes exceeds the cache's limit of {limit} bytes")]
    OutputTooLarge {
        /// The output's size.
        size: usize,
        /// The configured maximum.
        limit: usize,
    },

    /// A large output was being written in several transactions, and its staged part was
    /// removed before the last one (another execution took the key's lease over, or stored it
    /// first). The output still reaches its caller, with cache status `PutFailure`.
    #[error(
        "the output of {digest} staged by execution {execution} was removed before it was stored (its lease was taken over)"
    )]
    StagingLost {
        /// The cache key.
        digest: String,
        /// The execution that staged it.
        execution: String,
    },

    /// Any other failure inside a backend (I/O, protocol, SQL); not retryable.
    #[error("{backend} store error: {detail}")]
    Backend {
        /// Which backend reported it.
        backend: &'static str,
        /// What it said.
        detail: String,
    },
}

impl Error {
    /// Whether the store is (for now) out of reach: a lost connection, or a store that cannot
    /// be reached. Retried for a while ([`crate::store::RetryPolicy::outage`]); an error that
    /// outlasts that is [`Error::RetriesExhausted`] with this as its last error.
    pub fn is_outage(&self) -> bool {
        match self {
            Error::ConnectionLost { .. } | Error::Unreachable { .. } => true,
            Error::RetriesExhausted { last, .. } => last.is_outage(),
            _ => false,
        }
    }

    /// Whether the failure is worth another try: retryable, or retries given up on a
    /// retryable error (a batch that failed so is split and its parts tried again).
    pub fn worth_retrying(&self) -> bool {
        match self {
            Error::RetriesExhausted { last, .. } => last.is_retryable(),
            e => e.is_retryable(),
        }
    }

    /// Whether running the same transaction again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Conflict { .. }
                | Error::MaybeCommitted { .. }
                | Error::ConnectionLost { .. }
                | Error::TransactionTooOld { .. }
        )
    }
}

/// Shorthand for results of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;
