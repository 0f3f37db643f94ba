//! Cairn's engine: the transactional store every node shares, and (above it) the cache catalog.
//!
//! - [`store`]: an ordered key-value store with FoundationDB's transaction model and three
//!   backends (embedded on-disk, PostgreSQL, FoundationDB), chosen by URL.
//! - [`catalog`]: cache keys and the resolve / lease / commit protocol, eviction, expiry and
//!   execution records, written once above the store trait.
//! - [`clock`]: wall-clock time as a dependency.
//! - [`keys`]: the one place where the layout of every stored key is defined.
//! - [`names`]: the one rule for user-given names (length, characters).
//! - [`nodes`]: node identity (name, incarnation) and liveness, judged on each observer's clock.
//! - [`runs`]: runs started by name (API, CLI, schedules): input, status, output.
//! - [`schedule`]: cron and fixed-rate schedules fired exactly once per tick across instances.
//! - [`task`]: the task model shared by schedulers and workers (spec, registry, jobs).
//! - [`telemetry`]: span/metric names, metric instruments, trace context across nodes.
//! - [`error`]: the engine's error type, in which retryable and fatal failures stay distinct.

// Every dependency of the library is used by it (the lint runs per target; tests and
// benchmarks have their own dev-dependencies).
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod blobs;
pub mod catalog;
pub mod clock;
pub mod det;
pub mod digest;
pub mod entropy;
pub mod error;
pub mod keys;
pub mod names;
pub mod nodes;
pub mod runs;
pub mod schedule;
pub mod store;
pub mod task;
pub mod telemetry;

pub use error::{Error, Result, SizeLimit};
pub use store::{
    AnyStore, AnyTx, KeyValue, RangeOptions, RetryPolicy, Store, Transaction, transact,
};
