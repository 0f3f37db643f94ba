//! Names of Cairn's spans, attributes and metrics, in one place, so dashboards, the Grafana
//! definition in `deploy/grafana/` and the tests agree on them.
//!
//! Numeric attributes (generations, attempts, milliseconds) are exported as integers, so they
//! can be compared and summed in TraceQL.

/// A run of a workflow (root of a run's tree).
pub const SPAN_RUN: &str = "cairn.run";
/// One task call made by a workflow.
pub const SPAN_CALL: &str = "cairn.call";
/// Resolving a call's cache key against the store (child of the call).
pub const SPAN_RESOLVE: &str = "cairn.resolve";
/// Waiting behind another execution (child of the call): a lease held on another node, or a
/// call of this process computing the same key. Links to the span of the call it waited for.
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
/// What resolve found: `hit`, `acquired`, `held`, `failed`, or `miss` (the caller's own read on
/// the hit path found no live entry; the scheduler's resolve follows).
pub const RESOLVE_OUTCOME: &str = "cairn.resolve.outcome";
/// Lease generation (fencing token; integer).
pub const LEASE_GENERATION: &str = "cairn.lease.generation";
/// The execution a wait was behind (the one that produced, or was to produce, the output).
pub const WAIT_BEHIND: &str = "cairn.wait.behind";
/// How long a wait lasted (milliseconds; integer).
pub const WAIT_MS: &str = "cairn.wait.ms";
/// How a wait ended: `hit`, `acquired` (the holder failed or went silent), `failed`.
/// A call that waited behind one of this process ended `hit` or `failed` with its flight.
pub const WAIT_OUTCOME: &str = "cairn.wait.outcome";
/// The node a span ran on.
pub const NODE: &str = "cairn.node";
/// Attempts an execution made (integer).
pub const ATTEMPTS: &str = "cairn.attempts";
/// The attempt of a run (integer; 1 for the first, more after takeovers).
pub const RUN_ATTEMPT: &str = "cairn.run.attempt";
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

/// Bucket boundaries (seconds) of every duration histogram: 1-2.5-5 steps from 1 µs to 60 s,
/// so a hit (microseconds), a cold call (milliseconds) and a long task (seconds) land in
/// different buckets and the dashboard's quantiles interpolate inside one decade.
pub const DURATION_BUCKETS: &[f64] = &[
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
];

/// Targets (module-path prefix) of the spans exported by default: Cairn's own. Spans of
/// dependencies (ractor's actor spans, hyper, tower, tonic) are exported only when asked.
pub const TARGET_PREFIX: &str = "cairn";
