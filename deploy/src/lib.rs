//! Cairn: write tasks as plain async functions, call them from workflows, and run them on a node
//! whose transactional cache makes a cacheable task run once per cache key.
//!
//! ```no_run
//! use cairn::{Node, RunOptions};
//!
//! #[cairn::task(cache = true, cache_version = "1.0")]
//! async fn square(n: i64) -> i64 {
//!     n * n
//! }
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let node = Node::builder().store_url("embedded:./cairn-data").task(square).start().await?;
//! let report = node
//!     .run(RunOptions::new("flytesnacks", "development"), |ctx| async move { ctx.call(square, 2).await })
//!     .await;
//! assert_eq!(report.output?, 4);
//! # Ok(())
//! # }
//! ```
//!
//! - [`task`]: the attribute that makes an `async fn` a task;
//! - [`Node`]: a store, a catalog, a worker pool and schedulers, started together;
//! - [`Ctx`]: what workflows call tasks through;
//! - [`api`]: the HTTP/JSON API every node serves;
//! - [`cli`]: the `cairn` command line, reusable by binaries with their own tasks;
//! - [`cluster`]: nodes joined with ractor_cluster: remote workers, load-aware dispatch;
//! - [`client`]: a typed client of a node's API;
//! - [`config`]: a node's TOML configuration;
//! - [`telemetry`]: OTLP export of spans and metrics (off by default);
//! - [`tls`]: HTTPS for the API and mutual TLS for cluster links, reloaded on change;
//! - [`examples`]: the quickstart's tasks and workflows;
//! - [`guide`]: worked examples, each a doctest: a task with every option, `CacheHash`,
//!   `Ctx::call`, `ScheduleSpec`, the typed client.

// Every dependency of the library is used by it (the lint runs per target; tests and
// benchmarks have their own dev-dependencies).
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

// The `cairn` binary's allocator (`src/main.rs`), a dependency of the package.
use mimalloc as _;

extern crate self as cairn;

pub mod api;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod commands;
pub mod config;
mod error;
pub mod examples;
pub mod guide;
mod node;
pub mod telemetry;
pub mod tls;

// Every type in a public signature of this crate can be named from it (a test names each).
pub use cairn_engine::catalog::{
    CacheKey, CacheStatus, Catalog, CatalogConfig, Difference, Digest, EntryMeta, EntryPage,
    EvictScope, ExecutionRecord, Explanation, Hit, InputDiff, TaskStats,
};
pub use cairn_engine::nodes::{Incarnation, Liveness, NodeRecord, Nodes};
pub use cairn_engine::runs::{
    Collected, Ended, RunAttempt, RunFilter, RunLimits, RunOwner, RunPage, RunRecord, RunStatus,
    RunText, RunTick, Runs,
};
pub use cairn_engine::schedule::{
    CatchUp, Fire, Overlap, ScheduleRecord, ScheduleState, Schedules, TickRecord, Trigger,
};
pub use cairn_engine::store::RetryPolicy;

/// A type that supplies its own cache hash; a task parameter marked `#[hashed]` enters the key
/// through it. At work in a run: [`guide`](crate::guide#custom-cache-hashing-cachehash-and-hashed).
///
/// ```
/// use cairn::CacheHash;
///
/// /// A file keyed by its content, wherever it lives.
/// struct Upload {
///     name: String,
///     bytes: Vec<u8>,
/// }
///
/// impl CacheHash for Upload {
///     fn cache_hash(&self) -> Vec<u8> {
///         self.bytes.clone()
///     }
/// }
///
/// let a = Upload { name: "a.csv".into(), bytes: b"1,2".to_vec() };
/// let b = Upload { name: "b.csv".into(), bytes: b"1,2".to_vec() };
/// assert_eq!(a.cache_hash(), b.cache_hash()); // the same key for the same content
/// # let _ = (a.name, b.name);
/// ```
pub use cairn_engine::catalog::CacheHash;

/// What a schedule fires and when. Registered on a node: [`guide`](crate::guide#schedules-schedulespec).
///
/// ```
/// use cairn::{CatchUp, ScheduleSpec, Trigger};
///
/// let mut spec = ScheduleSpec::new(
///     "hourly-report",
///     "squares_report",
///     Trigger::Cron { expr: "0 * * * *".into(), tz: "UTC".into() },
/// );
/// spec.catch_up = CatchUp::LatestOnly; // after an outage, one run for the missed ticks
/// let builder = cairn::Node::builder().schedule(spec);
/// # let _ = builder;
/// ```
pub use cairn_engine::schedule::ScheduleSpec;

pub use cairn_engine::AnyStore;
/// The engine's own error (stores, catalog, runs, schedules); [`Error`] wraps it.
pub use cairn_engine::Error as EngineError;
pub use cairn_engine::task::{Task, TaskError, TaskRegistry};
/// Makes an `async fn` a Cairn task. Every option at work: [`guide`](crate::guide#a-task-with-every-option).
///
/// ```
/// #[cairn::task(cache = true, cache_version = "1.0")]
/// async fn square(n: i64) -> i64 {
///     n * n
/// }
/// let node = cairn::Node::builder().task(square); // registered under its name, "square"
/// # let _ = node;
/// ```
pub use cairn_macros::task;
/// What workflows call tasks through: `ctx.call(task, input)` returns the stored output or runs
/// the task, once per key across every caller. A fan-out and a run by name:
/// [`guide`](crate::guide#calling-tasks-from-a-workflow-ctxcall).
///
/// ```
/// #[cairn::task(cache = true, cache_version = "1")]
/// async fn double(n: i64) -> i64 {
///     n * 2
/// }
///
/// async fn quadruple(ctx: cairn::Ctx, n: i64) -> Result<i64, cairn::CallError> {
///     let twice = ctx.call(double, n).await?;
///     ctx.call(double, twice).await
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anyhow::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// let node = cairn::Node::builder()
///     .store_url(format!("embedded:{}", dir.path().display()))
///     .task(double)
///     .start()
///     .await?;
/// let report = node
///     .run(cairn::RunOptions::new("docs", "development"), |ctx| quadruple(ctx, 5))
///     .await;
/// assert_eq!(report.output?, 20);
/// # Ok(())
/// # }
/// ```
pub use cairn_scheduler::Ctx;
pub use cairn_scheduler::{
    CallError, CallLimits, CallSummary, RunOptions, ScheduledInput, SchedulerHandle, Started,
    SubmitError, SubmitRun, Workflow, WorkflowRegistry,
};
pub use cairn_worker::{BusyWorker, Dispatch, PoolStatus, ReportTo, WorkerPoolHandle};
pub use error::Error;
pub use node::{Node, NodeBuilder, RunReport};
pub use schemars::{self, JsonSchema};
pub use serde::{self, Deserialize, Serialize};

/// What `#[cairn::task]` expands to refers to these; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use cairn_engine::Result;
    pub use cairn_engine::catalog::{KeyInputs, TaskSignature, TypeDesc};
    pub use cairn_engine::task::{Task, TaskError, TaskOptions, TaskSpec};
    pub use futures::future::BoxFuture;
}
