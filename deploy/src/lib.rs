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
//! - [`examples`]: the quickstart's tasks and workflows.

extern crate self as cairn;

pub mod api;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod examples;
mod node;
pub mod telemetry;

// Every type in a public signature of this crate can be named from it (a test names each).
pub use cairn_engine::catalog::{
    CacheHash, CacheKey, CacheStatus, Catalog, CatalogConfig, Difference, Digest, EntryMeta,
    EntryPage, EvictScope, ExecutionRecord, Explanation, Hit, InputDiff, TaskStats,
};
pub use cairn_engine::nodes::{Incarnation, Liveness, NodeRecord, Nodes};
pub use cairn_engine::runs::{
    Collected, Ended, RunAttempt, RunFilter, RunLimits, RunOwner, RunPage, RunRecord, RunStatus,
    RunText, RunTick, Runs,
};
pub use cairn_engine::schedule::{
    CatchUp, Fire, Overlap, ScheduleRecord, ScheduleSpec, ScheduleState, Schedules, TickRecord,
    Trigger,
};
pub use cairn_engine::store::RetryPolicy;
pub use cairn_engine::task::{Task, TaskError, TaskRegistry};
pub use cairn_engine::{AnyStore, Error};
pub use cairn_macros::task;
pub use cairn_scheduler::{
    CallError, CallLimits, CallSummary, Ctx, RunOptions, ScheduledInput, Started, SubmitError,
    SubmitRun, Workflow, WorkflowRegistry,
};
pub use cairn_worker::{BusyWorker, PoolStatus, WorkerPoolHandle};
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
