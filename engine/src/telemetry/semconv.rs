//! Names of Cairn's spans, attributes and metrics, in one place, so dashboards, the Grafana
//! definition in `deploy/grafana/` and the tests agree on them.

/// A run of a workflow (root of a run's tree).
pub const SPAN_RUN: &str = "cairn.run";
/// One task call made by a workflow.
pub const SPAN_CALL: &str = "cairn.call";
/// Resolving a call's cache key against the store (child of the call).
pub const SPAN_RESOLVE: &str = "cairn.resolve";
/// Waiting behind another execution's lease (child of the call).
pub const SPAN_WAIT: &str = "cairn.wait";
/// Executing the task on a worker, possibly on another node (child of the call, through the
/// trace context carried in the job).
pub const SPAN_EXECUTE: &str = "cairn.execute";
/// Committing the output (child of the execute span).
pub const SPAN_COMMIT: &str = "cairn.commit";

/// Run id.
pub const RUN_ID: &str = "cairn.run.id";
/// Workflow name.
pub const WORKFLOW: &str = "cairn.workflow";
/// Project.
pub const PROJECT: &str = "cairn.project";
/// Domain.
pub const DOMAIN: &str = "cairn.domain";
/// Task name.
pub const TASK: &str = "cairn.task";
/// Execution id of a call.
pub const EXECUTION: &str = "cairn.execution";
/// Cache key digest (hex).
pub const CACHE_KEY: &str = "cairn.cache.key";
/// Cache status of a call (`Hit`, `Populated`, `Waited`, …).
pub const CACHE_STATUS: &str = "cairn.cache.status";
/// What resolve found: `hit`, `acquired`, `held`, `failed`.
pub const RESOLVE_OUTCOME: &str = "cairn.resolve.outcome";
/// Lease generation (fencing token).
pub const LEASE_GENERATION: &str = "cairn.lease.generation";
/// The execution a wait was behind.
pub const WAIT_BEHIND: &str = "cairn.wait.behind";
/// How long a wait lasted (ms).
pub const WAIT_MS: &str = "cairn.wait.ms";
/// How a wait ended: `hit`, `acquired` (the holder failed or went silent), `failed`.
pub const WAIT_OUTCOME: &str = "cairn.wait.outcome";
/// The node a span ran on.
pub const NODE: &str = "cairn.node";
/// Attempts an execution made.
pub const ATTEMPTS: &str = "cairn.attempts";
/// Run status (`succeeded`, `failed`).
pub const RUN_STATUS: &str = "cairn.run.status";
/// Schedule name.
pub const SCHEDULE: &str = "cairn.schedule";

/// Task calls answered, by [`CACHE_STATUS`] and [`TASK`].
pub const METRIC_CALLS: &str = "cairn.calls";
/// Call latency, submission to answer (seconds), by [`CACHE_STATUS`].
pub const METRIC_CALL_DURATION: &str = "cairn.call.duration";
/// Time calls spent waiting behind another execution's lease (seconds).
pub const METRIC_WAIT_DURATION: &str = "cairn.call.wait.duration";
/// Leases taken over from a silent holder.
pub const METRIC_LEASE_TAKEOVERS: &str = "cairn.lease.takeovers";
/// Jobs queued for a worker on this node.
pub const METRIC_QUEUE_DEPTH: &str = "cairn.worker.queue.depth";
/// Schedule ticks, by [`SCHEDULE`] and `outcome` (`fired`, `missed`).
pub const METRIC_SCHEDULE_TICKS: &str = "cairn.schedule.ticks";
/// Attribute of [`METRIC_SCHEDULE_TICKS`].
pub const TICK_OUTCOME: &str = "outcome";
/// Counter: expired cache entries removed by the expiry collector.
pub const METRIC_EXPIRED: &str = "cairn.cache.expired";
