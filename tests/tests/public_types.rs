//! Every type that appears in a public signature of the `cairn` crate can be named from it, so
//! a library user never needs to depend on Cairn's inner crates.

#![allow(dead_code, clippy::type_complexity)]

/// Names each type once; a type missing from `cairn` fails to compile.
fn names(
    _: (
        cairn::Node,
        cairn::NodeBuilder,
        cairn::RunReport<()>,
        cairn::Ctx,
        cairn::RunOptions,
        cairn::CallSummary,
        cairn::CallError,
        cairn::CallLimits,
        cairn::SubmitRun,
        cairn::Started,
        cairn::SubmitError,
        cairn::ScheduledInput,
        cairn::Workflow,
        cairn::WorkflowRegistry,
    ),
    _: (
        cairn::Catalog<cairn::AnyStore>,
        cairn::CatalogConfig,
        cairn::CacheKey,
        cairn::CacheStatus,
        cairn::Digest,
        cairn::EntryMeta,
        cairn::EntryPage,
        cairn::EvictScope,
        cairn::ExecutionRecord,
        cairn::Explanation,
        cairn::Difference,
        cairn::InputDiff,
        cairn::Hit,
        cairn::TaskStats,
        cairn::RetryPolicy,
    ),
    _: (
        cairn::Runs<cairn::AnyStore>,
        cairn::RunRecord,
        cairn::RunStatus,
        cairn::RunFilter,
        cairn::RunPage,
        cairn::RunLimits,
        cairn::RunOwner,
        cairn::RunAttempt,
        cairn::RunText,
        cairn::RunTick,
        cairn::Ended,
        cairn::Collected,
        cairn::Nodes<cairn::AnyStore>,
        cairn::NodeRecord,
        cairn::Incarnation,
        cairn::Liveness,
    ),
    _: (
        cairn::Schedules<cairn::AnyStore>,
        cairn::ScheduleSpec,
        cairn::ScheduleRecord,
        cairn::ScheduleState,
        cairn::TickRecord,
        cairn::Fire,
        cairn::Trigger,
        cairn::CatchUp,
        cairn::Overlap,
        cairn::TaskRegistry,
        cairn::TaskError,
        cairn::WorkerPoolHandle,
        cairn::PoolStatus,
        cairn::BusyWorker,
        cairn::Error,
        cairn::EngineError,
    ),
) {
}

/// The signatures a library user writes against, spelled with `cairn::` names only.
async fn signatures(node: &cairn::Node) {
    {
        let _: &cairn::Catalog<cairn::AnyStore> = node.catalog();
        let _: &cairn::Runs<cairn::AnyStore> = node.runs();
        let _: &cairn::Schedules<cairn::AnyStore> = node.schedules();
        let _: &cairn::Nodes<cairn::AnyStore> = node.nodes();
        let _: &cairn::WorkerPoolHandle = node.workers();
        let _: &cairn::WorkflowRegistry = node.workflows();
        let _: &cairn::Incarnation = node.incarnation();
        let request = cairn::SubmitRun {
            workflow: "w".into(),
            input: serde_json::Value::Null,
            options: cairn::RunOptions::new("p", "d"),
            schedule: None,
            idempotency_key: None,
        };
        let _: Result<cairn::Started, cairn::SubmitError> = node.submit(request).await;
        let _: Result<cairn::Ended, cairn::Error> = node.cancel("r").await;
        let _: Option<cairn::PoolStatus> = node.workers().status().await;
        let _: Result<cairn::TaskStats, cairn::EngineError> =
            node.catalog().task_stats("p", "d", "t").await;
    }
}

#[test]
fn every_public_type_is_named_by_the_cairn_crate() {
    // Compiling this file is the test; this makes it run.
    let _ = names;
    let _ = signatures;
}
