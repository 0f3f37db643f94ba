//! Bounds and honest reports, through the public API: a run's calls are bounded (in flight and
//! in all), a PutFailure says why, and a body whose output lost to one stored first is still
//! recorded as executed.

use cairn::CallLimits;
use cairn::{CacheStatus, Ctx, RunOptions, SubmitRun};
use cairn_tests::runtime::SharedStore;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn opts() -> RunOptions {
    RunOptions::new("hardening", "development")
}

static RUNNING: AtomicUsize = AtomicUsize::new(0);
static MOST: AtomicUsize = AtomicUsize::new(0);

#[cairn::task(cache = true, cache_version = "1")]
async fn gauged(n: i64) -> i64 {
    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
    MOST.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(5)).await;
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    n
}

/// Calls `gauged(base..base + n)` all at once.
async fn fan(ctx: Ctx, (base, n): (i64, i64)) -> Result<i64, cairn::CallError> {
    let out = futures::future::try_join_all((base..base + n).map(|i| {
        let ctx = ctx.clone();
        async move { ctx.call(gauged, i).await }
    }))
    .await?;
    Ok(out.iter().sum())
}

async fn run_by_name(node: &cairn::Node, input: serde_json::Value) -> cairn::RunRecord {
    let started = node
        .submit(SubmitRun {
            workflow: "fan".into(),
            input,
            options: opts(),
            schedule: None,
            idempotency_key: None,
        })
        .await
        .unwrap();
    started.finished.await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_calls_are_bounded_in_flight_and_in_all() {
    let shared = SharedStore::new().await;
    let node = shared
        .node("bounded")
        .concurrency(64)
        .call_limits(CallLimits {
            max_in_flight: 8,
            max_calls: 150,
        })
        .task(gauged)
        .workflow("fan", fan)
        .start()
        .await
        .unwrap();
    // 100 calls at once from one run: never more than 8 with the schedulers and workers.
    let record = run_by_name(&node, serde_json::json!([0, 100])).await;
    assert_eq!(record.status, cairn::RunStatus::Succeeded, "{record:?}");
    let most = MOST.load(Ordering::SeqCst);
    assert!((1..=8).contains(&most), "{most} calls ran at once");
    // 200 calls: past the 150th the run fails, saying why.
    let record = run_by_name(&node, serde_json::json!([1_000, 200])).await;
    assert_eq!(record.status, cairn::RunStatus::Failed);
    let error = record.error.unwrap().text.unwrap();
    assert!(error.contains("more than 150 calls"), "{error}");
}

/// Released by the workflow of the test below once its other call has its answer.
static RELEASE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Returns once released (or fails after 5 s: the release never came).
#[cairn::task(cache = true, cache_version = "1", retries = 0)]
async fn held_until_released(n: i64) -> Result<i64, String> {
    tokio::time::timeout(Duration::from_secs(5), RELEASE.notified())
        .await
        .map_err(|_| "not released within 5 s".to_string())?;
    Ok(n)
}

#[cairn::task(cache = true, cache_version = "1")]
async fn then_released(n: i64) -> i64 {
    n + 1
}

/// Calls that wait behind an identical call of their run are not with the schedulers and hold
/// none of the run's places in flight: with 2 places, a call held until another call of the
/// run has its answer, and 20 identical calls waiting behind it, that other call still goes.
/// (When followers held places, it waited behind them for a place, and the held call for it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_waiting_behind_an_identical_call_hold_no_place_in_flight() {
    let shared = SharedStore::new().await;
    let node = shared
        .node("followers")
        .call_limits(CallLimits {
            max_in_flight: 2,
            max_calls: 1_000,
        })
        .task(held_until_released)
        .task(then_released)
        .start()
        .await
        .unwrap();
    let run = node
        .run(
            opts().with_run_id("followers-in-flight"),
            |ctx| async move {
                let held =
                    futures::future::join_all((0..21).map(|_| ctx.call(held_until_released, 7)));
                let then_release = async {
                    let answer = ctx.call(then_released, 1).await;
                    RELEASE.notify_one();
                    answer
                };
                tokio::join!(held, then_release)
            },
        )
        .await;
    let (held, released) = run.output;
    assert_eq!(released, Ok(2));
    assert!(held.iter().all(|r| r == &Ok(7)), "{held:?}");
    let waited = run
        .calls
        .iter()
        .filter(|c| c.status == CacheStatus::Waited)
        .count();
    assert_eq!(waited, 20, "{:?}", run.calls);
}

#[cairn::task(cache = true, cache_version = "1")]
async fn big(n: usize) -> Vec<u8> {
    vec![7; n]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_failure_says_why() {
    let shared = SharedStore::new().await;
    let config = cairn_engine::catalog::CatalogConfig {
        max_output_bytes: 1_000,
        ..Default::default()
    };
    let node = shared
        .node("put")
        .catalog_config(config)
        .task(big)
        .start()
        .await
        .unwrap();
    let r = node
        .run(opts().with_run_id("put-failure"), |ctx| async move {
            ctx.call(big, 5_000).await
        })
        .await;
    assert_eq!(
        r.output.unwrap().len(),
        5_000,
        "the output still reaches the caller"
    );
    let call = &r.calls[0];
    assert_eq!(call.status, CacheStatus::PutFailure);
    let why = call.cache_error.as_deref().unwrap_or_default();
    assert!(
        why.contains("output of 5003 bytes") && why.contains("limit of 1000 bytes"),
        "{why}"
    );
    node.catalog().flush_records().await.unwrap();
    let records = node.catalog().run_executions("put-failure").await.unwrap();
    assert_eq!(records[0].cache_error.as_deref(), Some(why));
    assert!(records[0].executed);
}

static LOSER: tokio::sync::Notify = tokio::sync::Notify::const_new();

#[cairn::task(cache = true, cache_version = "1", lease_ttl = "1s")]
async fn loser(day: String) -> String {
    // Waits until the test has stored another output for the key.
    LOSER.notified().await;
    format!("late report for {day}")
}

/// A holder whose output loses to one stored first gets `Hit` (every caller of a key gets the
/// same output) and its record says its body ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_whose_output_lost_is_still_counted_as_executed() {
    use cairn::Task;
    use cairn_engine::catalog::{KeyInputs, Resolution, ResolveRequest, new_execution_id};
    let shared = SharedStore::new().await;
    let node = shared.node("a").task(loser).start().await.unwrap();
    let mut inputs = KeyInputs::new();
    inputs.add("day", "monday").unwrap();
    let key = loser
        .spec()
        .cache_key("hardening", "development", inputs)
        .unwrap();
    // A stuck holder (it never heartbeats); the node's call takes it over after its TTL.
    let stuck = new_execution_id();
    let req = ResolveRequest {
        key: &key,
        owner: "stuck-node",
        execution: &stuck,
        lease_ttl: Duration::from_secs(1),
        max_age: None,
        overwrite: false,
        takeover: None,
        trace: None,
    };
    let Resolution::Acquired(stuck_lease) = node.catalog().resolve(&req).await.unwrap() else {
        panic!("the stuck node gets the lease first")
    };
    let ctx = node.ctx(opts().with_run_id("lost"));
    let call = tokio::spawn({
        let ctx = ctx.clone();
        async move { ctx.call(loser, "monday".to_string()).await }
    });
    // Once the node's body runs, the stuck holder wakes up and commits first.
    loop {
        if !node.workers().status().await.unwrap().busy.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node.catalog()
        .commit(&key, &stuck_lease, b"\xa5early", None)
        .await
        .unwrap();
    LOSER.notify_one();
    let out = call.await.unwrap().unwrap();
    assert_eq!(out, "early", "the first stored output wins");
    let summary = &ctx.calls()[0];
    assert_eq!(summary.status, CacheStatus::Hit);
    node.catalog().flush_records().await.unwrap();
    let records = node.catalog().run_executions("lost").await.unwrap();
    assert_eq!(records[0].status, CacheStatus::Hit);
    assert!(records[0].executed, "its body ran: {:?}", records[0]);
}

/// The `cairn` crate's errors say what went wrong by kind: a run that does not exist, a store
/// that does not answer, input refused; no message to parse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_errors_are_matched_by_kind() {
    let shared = cairn_tests::runtime::SharedStore::new().await;
    let node = shared.node("typed").start().await.unwrap();
    match node.cancel("no-such-run").await {
        Err(cairn::Error::RunNotFound { run }) => assert_eq!(run, "no-such-run"),
        other => panic!("expected RunNotFound, got {other:?}"),
    }

    // A schedule of a workflow the node does not have.
    let spec = cairn::ScheduleSpec::new(
        "orphan",
        "missing-workflow",
        cairn::Trigger::Every {
            period_ms: 1_000,
            anchor_ms: 0,
        },
    );
    match shared.node("typed-2").schedule(spec).start().await {
        Err(cairn::Error::InvalidInput { what, .. }) => assert!(what.contains("orphan"), "{what}"),
        Err(other) => panic!("expected InvalidInput, got {other:?}"),
        Ok(_) => panic!("a schedule of an unknown workflow was accepted"),
    }

    // Nothing listens on port 1: the store is unavailable, and trying later may work.
    let started = std::time::Instant::now();
    match cairn::Node::builder()
        .store_url("postgres://cairn:cairn@127.0.0.1:1/nothing")
        .start()
        .await
    {
        Err(e @ cairn::Error::StoreUnavailable(_)) => assert!(e.is_transient()),
        Err(other) => panic!("expected StoreUnavailable, got {other:?}"),
        Ok(_) => panic!("a node started on a store that does not exist"),
    }
    eprintln!("refused after {:?}", started.elapsed());
}
