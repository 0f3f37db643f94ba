//! The actor runtime through its public API (`cairn`): tasks, workflows, nodes.

use cairn::{CacheStatus, CallError, RunOptions, TaskError};
use cairn_tests::runtime::SharedStore;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn opts() -> RunOptions {
    RunOptions::new("flytesnacks", "development")
}

/// Runs of `square`, per input: tests run concurrently and call it with inputs of their own.
static SQUARES: std::sync::Mutex<std::collections::BTreeMap<i64, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn squares(n: i64) -> usize {
    SQUARES.lock().unwrap().get(&n).copied().unwrap_or(0)
}

#[cairn::task(cache = true, cache_version = "1.0")]
async fn square(n: i64) -> i64 {
    *SQUARES.lock().unwrap().entry(n).or_default() += 1;
    n * n
}

mod bumped {
    use super::*;
    pub(crate) static RUNS: AtomicUsize = AtomicUsize::new(0);
    /// `square` at cache version 2.0.
    #[cairn::task(cache = true, cache_version = "2.0", name = "square")]
    pub(crate) async fn square(n: i64) -> i64 {
        RUNS.fetch_add(1, Ordering::SeqCst);
        n * n
    }
}

mod reshaped {
    use super::*;
    pub(crate) static RUNS: AtomicUsize = AtomicUsize::new(0);
    /// `square` at version 1.0 with another output type: the signature changed.
    #[cairn::task(cache = true, cache_version = "1.0", name = "square")]
    pub(crate) async fn square(n: i64) -> (i64, i64) {
        RUNS.fetch_add(1, Ordering::SeqCst);
        (n, n * n)
    }
}

#[tokio::test]
async fn square_called_in_two_runs_executes_once() {
    let shared = SharedStore::new().await;
    let node = shared.node("a").task(square).start().await.unwrap();
    let before = squares(21);
    let first = node
        .run(opts(), |ctx| async move { ctx.call(square, 21).await })
        .await;
    let second = node
        .run(opts(), |ctx| async move { ctx.call(square, 21).await })
        .await;
    assert_eq!((first.output.unwrap(), second.output.unwrap()), (441, 441));
    assert_eq!(first.calls[0].status, CacheStatus::Populated);
    assert_eq!(second.calls[0].status, CacheStatus::Hit);
    assert_eq!(squares(21) - before, 1);
    assert_ne!(first.run_id, second.run_id);

    // The run's record lists its calls with their statuses.
    node.catalog().flush_records().await.unwrap();
    let records = node.catalog().run_executions(&second.run_id).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (&*records[0].task, records[0].status),
        ("square", CacheStatus::Hit)
    );
}

#[tokio::test]
async fn version_bump_and_signature_change_reexecute() {
    let shared = SharedStore::new().await;
    let v1 = shared.node("v1").task(square).start().await.unwrap();
    let v2 = shared
        .node("v2")
        .task(bumped::square)
        .start()
        .await
        .unwrap();
    let v3 = shared
        .node("v3")
        .task(reshaped::square)
        .start()
        .await
        .unwrap();
    let r = v1
        .run(opts(), |ctx| async move { ctx.call(square, 5).await })
        .await;
    assert_eq!(r.calls[0].status, CacheStatus::Populated);
    let r = v2
        .run(
            opts(),
            |ctx| async move { ctx.call(bumped::square, 5).await },
        )
        .await;
    assert_eq!(
        (r.output.unwrap(), r.calls[0].status),
        (25, CacheStatus::Populated),
        "version bumped"
    );
    let r = v3
        .run(
            opts(),
            |ctx| async move { ctx.call(reshaped::square, 5).await },
        )
        .await;
    assert_eq!(
        (r.output.unwrap(), r.calls[0].status),
        ((5, 25), CacheStatus::Populated),
        "signature changed"
    );
    let r = v1
        .run(opts(), |ctx| async move { ctx.call(square, 5).await })
        .await;
    assert_eq!(
        r.calls[0].status,
        CacheStatus::Hit,
        "the 1.0 entry is still there"
    );
    assert_eq!(bumped::RUNS.load(Ordering::SeqCst), 1);
    assert_eq!(reshaped::RUNS.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn projects_and_domains_do_not_share() {
    let shared = SharedStore::new().await;
    let node = shared.node("a").task(square).start().await.unwrap();
    for (project, domain, expect) in [
        ("alpha", "development", CacheStatus::Populated),
        ("beta", "development", CacheStatus::Populated),
        ("alpha", "production", CacheStatus::Populated),
        ("alpha", "development", CacheStatus::Hit),
    ] {
        let r = node
            .run(RunOptions::new(project, domain), |ctx| async move {
                ctx.call(square, 9).await
            })
            .await;
        assert_eq!(r.calls[0].status, expect, "{project}/{domain}");
    }
}

static GREETS: AtomicUsize = AtomicUsize::new(0);

#[cairn::task(cache = true, cache_version = "1.0", cache_ignore_inputs = ["verbose"])]
async fn greet(name: String, verbose: bool) -> String {
    GREETS.fetch_add(1, Ordering::SeqCst);
    if verbose {
        format!("Hello, {name}! Welcome.")
    } else {
        format!("Hello, {name}!")
    }
}

#[tokio::test]
async fn ignored_inputs_do_not_change_the_key() {
    let shared = SharedStore::new().await;
    let node = shared.node("a").task(greet).start().await.unwrap();
    let a = node
        .run(opts(), |ctx| async move {
            ctx.call(greet, ("Ada".into(), false)).await
        })
        .await;
    let b = node
        .run(opts(), |ctx| async move {
            ctx.call(greet, ("Ada".into(), true)).await
        })
        .await;
    assert_eq!(b.calls[0].status, CacheStatus::Hit);
    assert_eq!(a.output.unwrap(), b.output.unwrap());
    let c = node
        .run(opts(), |ctx| async move {
            ctx.call(greet, ("Grace".into(), true)).await
        })
        .await;
    assert_eq!(
        c.calls[0].status,
        CacheStatus::Populated,
        "a key input still counts"
    );
}

mod auto_a {
    /// Same code as `auto_b::f`.
    #[cairn::task(cache = true, cache_version = "auto", name = "f")]
    pub(crate) async fn f(n: i64) -> i64 {
        n + 1
    }
}
mod auto_b {
    /// Same code as `auto_a::f`.
    #[cairn::task(cache = true, cache_version = "auto", name = "f")]
    pub(crate) async fn f(n: i64) -> i64 {
        n + 1
    }
}
mod auto_c {
    /// `f` with its body edited.
    #[cairn::task(cache = true, cache_version = "auto", name = "f")]
    pub(crate) async fn f(n: i64) -> i64 {
        n + 2
    }
}

#[tokio::test]
async fn auto_version_changes_when_the_body_changes() {
    use cairn::Task;
    let version = |t: &dyn Fn() -> String| t();
    let a = version(&|| auto_a::f.spec().options.cache_version.clone());
    let b = version(&|| auto_b::f.spec().options.cache_version.clone());
    let c = version(&|| auto_c::f.spec().options.cache_version.clone());
    assert!(a.starts_with("auto-"));
    assert_eq!(a, b, "identical code, identical version");
    assert_ne!(a, c, "an edited body is a new version");
    let shared = SharedStore::new().await;
    let na = shared.node("a").task(auto_a::f).start().await.unwrap();
    let nc = shared.node("c").task(auto_c::f).start().await.unwrap();
    let r = na
        .run(opts(), |ctx| async move { ctx.call(auto_a::f, 1).await })
        .await;
    assert_eq!(
        (r.output.unwrap(), r.calls[0].status),
        (2, CacheStatus::Populated)
    );
    let r = nc
        .run(opts(), |ctx| async move { ctx.call(auto_c::f, 1).await })
        .await;
    assert_eq!(
        (r.output.unwrap(), r.calls[0].status),
        (3, CacheStatus::Populated),
        "the old entry is not used"
    );
}

static STAMPS: AtomicUsize = AtomicUsize::new(0);

#[cairn::task(cache = true, cache_version = "1.0")]
async fn stamp(label: String) -> String {
    format!("{label}#{}", STAMPS.fetch_add(1, Ordering::SeqCst))
}

#[tokio::test]
async fn overwrite_cache_reexecutes_and_replaces() {
    let shared = SharedStore::new().await;
    let node = shared.node("a").task(stamp).start().await.unwrap();
    let first = node
        .run(opts(), |ctx| async move {
            ctx.call(stamp, "x".to_string()).await
        })
        .await
        .output
        .unwrap();
    let over = node
        .run(opts().overwrite_cache(true), |ctx| async move {
            ctx.call(stamp, "x".to_string()).await
        })
        .await;
    assert_eq!(over.calls[0].status, CacheStatus::Skipped);
    let replaced = over.output.unwrap();
    assert_ne!(first, replaced, "re-executed");
    let after = node
        .run(opts(), |ctx| async move {
            ctx.call(stamp, "x".to_string()).await
        })
        .await;
    assert_eq!(after.calls[0].status, CacheStatus::Hit);
    assert_eq!(after.output.unwrap(), replaced, "the entry was replaced");
}

static FRESH_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Cached for one second.
#[cairn::task(cache = true, cache_version = "1.0", max_age = "1s")]
async fn fresh(n: i64) -> i64 {
    FRESH_RUNS.fetch_add(1, Ordering::SeqCst);
    n + 1
}

/// A hit is read on the caller's task, without the scheduler: it never returns an entry that
/// was evicted or has outlived its `max_age`, and every such call is answered (and recorded)
/// as what it is.
#[tokio::test]
async fn the_hit_path_never_returns_an_evicted_or_expired_entry() {
    let shared = SharedStore::new().await;
    let node = shared.node("a").task(fresh).start().await.unwrap();
    let project = format!("hits-{:08x}", rand::random::<u32>());
    let options = || RunOptions::new(project.as_str(), "development");
    let call = || async {
        let done = node
            .run(options(), |ctx| async move { ctx.call(fresh, 1).await })
            .await;
        assert_eq!(done.output.unwrap(), 2);
        done.calls[0].status
    };
    let before = FRESH_RUNS.load(Ordering::SeqCst);
    assert_eq!(call().await, CacheStatus::Populated);
    assert_eq!(call().await, CacheStatus::Hit);
    assert_eq!(FRESH_RUNS.load(Ordering::SeqCst) - before, 1);

    let evicted = node
        .catalog()
        .evict(&cairn_engine::catalog::EvictScope::Task {
            project: project.clone(),
            domain: "development".into(),
            task: "fresh".into(),
            version: None,
        })
        .await
        .unwrap();
    assert_eq!(evicted, 1);
    assert_eq!(
        call().await,
        CacheStatus::Evicted,
        "an evicted entry is no hit"
    );
    assert_eq!(FRESH_RUNS.load(Ordering::SeqCst) - before, 2);
    assert_eq!(call().await, CacheStatus::Hit);

    // Past its max_age (whether or not the collector has removed it yet).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let status = call().await;
    assert!(
        matches!(status, CacheStatus::Populated | CacheStatus::Evicted),
        "an expired entry is no hit: {status:?}"
    );
    assert_eq!(FRESH_RUNS.load(Ordering::SeqCst) - before, 3);
}

static SLOW_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cairn::task(cache = true, cache_version = "1.0")]
async fn slow_double(n: i64) -> i64 {
    SLOW_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    n * 2
}

/// 10,000 identical calls at once: one execution, 10,000 equal results, and every caller is
/// answered at the instant the execution finishes (paused time: no poll interval passes).
#[tokio::test(start_paused = true)]
async fn ten_thousand_identical_calls_run_once() {
    let shared = SharedStore::new().await;
    // All 10,000 in flight at once (a run's default bound is 4,096).
    let node = shared
        .node("a")
        .task(slow_double)
        .call_limits(cairn::CallLimits {
            max_in_flight: 10_000,
            ..Default::default()
        })
        .start()
        .await
        .unwrap();
    let ctx = node.ctx(opts());
    let started = tokio::time::Instant::now();
    let calls = (0..10_000).map(|_| {
        let ctx = ctx.clone();
        async move { (ctx.call(slow_double, 21).await, tokio::time::Instant::now()) }
    });
    let results = futures::future::join_all(calls).await;
    assert_eq!(SLOW_RUNS.load(Ordering::SeqCst), 1, "exactly one execution");
    let latest = results.iter().map(|(_, at)| *at).max().unwrap();
    for (r, _) in &results {
        assert_eq!(r.as_ref().unwrap(), &42);
    }
    // The task sleeps 100 ms of virtual time; nothing else may let time pass.
    assert_eq!(
        latest - started,
        Duration::from_millis(100),
        "answers came at the commit, not after a poll"
    );
    let statuses = ctx.calls();
    assert_eq!(
        statuses
            .iter()
            .filter(|c| c.status == CacheStatus::Populated)
            .count(),
        1
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|c| c.status == CacheStatus::Waited)
            .count(),
        9_999
    );
}

static SLOW2_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cairn::task(cache = true, cache_version = "1.0", lease_ttl = "30s")]
async fn slow_triple(n: i64) -> i64 {
    SLOW2_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    n * 3
}

/// Two nodes on one store: the second waits behind the first's lease and is woken by its
/// commit, not by its 30 s TTL.
#[tokio::test(start_paused = true)]
async fn a_second_node_waits_for_the_first_and_is_woken_by_its_commit() {
    let shared = SharedStore::new().await;
    let a = shared.node("a").task(slow_triple).start().await.unwrap();
    let b = shared.node("b").task(slow_triple).start().await.unwrap();
    let started = tokio::time::Instant::now();
    let ctx_a = a.ctx(opts());
    let first = tokio::spawn(async move { ctx_a.call(slow_triple, 7).await });
    // Let node a acquire the lease before node b asks.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let rb = b
        .run(opts(), |ctx| async move { ctx.call(slow_triple, 7).await })
        .await;
    let waited = started.elapsed();
    assert_eq!(first.await.unwrap().unwrap(), 21);
    assert_eq!(rb.output.unwrap(), 21);
    assert_eq!(rb.calls[0].status, CacheStatus::Waited);
    assert_eq!(SLOW2_RUNS.load(Ordering::SeqCst), 1);
    assert!(
        waited < Duration::from_millis(1_050),
        "woken at the commit ({waited:?}), not after the TTL"
    );
}

static FLAKY: AtomicUsize = AtomicUsize::new(0);

#[cairn::task(cache = true, cache_version = "1.0", retries = 1)]
async fn flaky(n: i64) -> i64 {
    let attempt = FLAKY.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    if attempt < 2 {
        panic!("attempt {attempt} went wrong");
    }
    n
}

#[cairn::task(cache = true, cache_version = "1.0")]
async fn always_fails(n: i64) -> Result<i64, String> {
    tokio::time::sleep(Duration::from_millis(50)).await;
    Err(format!("cannot handle {n}"))
}

/// A failing holder releases its lease at once: a waiter on another node runs the task itself
/// (retries left) or receives the error (no retries), without waiting for the TTL.
#[tokio::test(start_paused = true)]
async fn failures_release_the_lease_at_once() {
    let shared = SharedStore::new().await;
    let a = shared
        .node("a")
        .task(flaky)
        .task(always_fails)
        .start()
        .await
        .unwrap();
    let b = shared
        .node("b")
        .task(flaky)
        .task(always_fails)
        .start()
        .await
        .unwrap();

    // flaky panics twice (both of node a's attempts), then works: node b runs it.
    let started = tokio::time::Instant::now();
    let ctx_a = a.ctx(opts());
    let holder = tokio::spawn(async move { ctx_a.call(flaky, 5).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let rb = b
        .run(opts(), |ctx| async move { ctx.call(flaky, 5).await })
        .await;
    match holder.await.unwrap() {
        Err(CallError::Task {
            error: TaskError::Panicked { message },
            ..
        }) => assert!(message.contains("attempt 1")),
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_eq!(rb.output.unwrap(), 5);
    assert_eq!(rb.calls[0].status, CacheStatus::Populated);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no TTL was waited out"
    );

    // always_fails has no retries: the waiter gets the holder's error.
    let ctx_a = a.ctx(opts());
    let holder = tokio::spawn(async move { ctx_a.call(always_fails, 1).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let rb = b
        .run(opts(), |ctx| async move { ctx.call(always_fails, 1).await })
        .await;
    assert!(matches!(
        holder.await.unwrap(),
        Err(CallError::Task {
            error: TaskError::Failed { .. },
            ..
        })
    ));
    match rb.output {
        Err(CallError::Task {
            error: TaskError::Failed { message },
            ..
        }) => assert!(message.contains("cannot handle 1")),
        other => panic!("expected the holder's error, got {other:?}"),
    }
    assert_eq!(rb.calls[0].status, CacheStatus::Miss);
    // Errors are never cached: the next call runs again.
    let again = b
        .run(opts(), |ctx| async move { ctx.call(always_fails, 1).await })
        .await;
    assert_eq!(again.calls[0].status, CacheStatus::Miss);
}

static LATE: AtomicUsize = AtomicUsize::new(0);

#[cairn::task(cache = true, cache_version = "1.0", lease_ttl = "2s")]
async fn report(day: String) -> String {
    LATE.fetch_add(1, Ordering::SeqCst);
    format!("fresh report for {day}")
}

/// A holder that stops heartbeating (a stuck node, simulated through the catalog) is taken over
/// once its TTL passes on the waiter's clock, and its late commit does not overwrite.
#[tokio::test(start_paused = true)]
async fn a_silent_holder_is_taken_over_and_its_late_commit_loses() {
    use cairn::Task;
    use cairn_engine::catalog::{
        Committed, KeyInputs, Resolution, ResolveRequest, new_execution_id,
    };
    let shared = SharedStore::new().await;
    let node = shared.node("a").task(report).start().await.unwrap();
    let mut inputs = KeyInputs::new();
    inputs.add("day", "monday").unwrap();
    let key = report
        .spec()
        .cache_key("flytesnacks", "development", inputs)
        .unwrap();
    let stuck = new_execution_id();
    let req = ResolveRequest {
        key: &key,
        owner: "stuck-node",
        execution: &stuck,
        lease_ttl: Duration::from_secs(2),
        max_age: None,
        overwrite: false,
        takeover: None,
        trace: None,
    };
    let Resolution::Acquired(stuck_lease) = node.catalog().resolve(&req).await.unwrap() else {
        panic!("the stuck node should get the lease")
    };
    let started = tokio::time::Instant::now();
    let r = node
        .run(opts(), |ctx| async move {
            ctx.call(report, "monday".to_string()).await
        })
        .await;
    assert_eq!(r.output.unwrap(), "fresh report for monday");
    assert_eq!(
        r.calls[0].status,
        CacheStatus::Populated,
        "taken over and run"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    match node
        .catalog()
        .commit(&key, &stuck_lease, b"stale", None)
        .await
        .unwrap()
    {
        Committed::AlreadyStored(hit) => assert_ne!(hit.output, b"stale"),
        other => panic!("the late commit must not store: {other:?}"),
    }
    let r = node
        .run(opts(), |ctx| async move {
            ctx.call(report, "monday".to_string()).await
        })
        .await;
    assert_eq!(
        (r.output.unwrap(), r.calls[0].status),
        ("fresh report for monday".to_string(), CacheStatus::Hit)
    );
    assert_eq!(LATE.load(Ordering::SeqCst), 1);
}

#[cairn::task(cache = true, cache_version = "1.0", timeout = "50ms")]
async fn too_slow(n: i64) -> i64 {
    tokio::time::sleep(Duration::from_secs(5)).await;
    n
}

#[cairn::task(cache = true, cache_version = "1.0")]
async fn hang(n: i64) -> i64 {
    std::future::pending::<()>().await;
    n
}

#[cairn::task(cache = true, cache_version = "1.0", retries = 1)]
async fn hang_once(n: i64) -> i64 {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    if CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
        std::future::pending::<()>().await;
    }
    n
}

#[tokio::test]
async fn timeouts_unknown_tasks_and_dead_workers_are_clear_errors() {
    let shared = SharedStore::new().await;
    let node = shared
        .node("a")
        .task(too_slow)
        .task(hang)
        .task(hang_once)
        .start()
        .await
        .unwrap();
    let r = node
        .run(opts(), |ctx| async move { ctx.call(too_slow, 1).await })
        .await;
    assert!(
        matches!(
            r.output,
            Err(CallError::Task {
                error: TaskError::TimedOut { after_ms: 50 },
                ..
            })
        ),
        "{:?}",
        r.output
    );

    // Not registered on this node.
    let r = node
        .run(opts(), |ctx| async move {
            ctx.call(greet, ("x".into(), false)).await
        })
        .await;
    match r.output {
        Err(
            e @ CallError::Task {
                error: TaskError::UnknownTask { .. },
                ..
            },
        ) => assert!(e.to_string().contains("\"greet\"")),
        other => panic!("expected an unknown task, got {other:?}"),
    }

    // A worker that dies mid-task is replaced; without retries its caller gets the error and
    // the lease is released at once.
    for (retries, task_is_hang) in [(0, true), (1, false)] {
        let ctx = node.ctx(opts());
        let call = tokio::spawn(async move {
            if task_is_hang {
                ctx.call(hang, 1).await
            } else {
                ctx.call(hang_once, 1).await
            }
        });
        let busy = loop {
            let status = node.workers().status().await.unwrap();
            if let Some(b) = status.busy.into_iter().next() {
                break b;
            }
            tokio::task::yield_now().await;
        };
        busy.actor.kill();
        let result = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .unwrap()
            .unwrap();
        if retries == 0 {
            assert!(
                matches!(
                    result,
                    Err(CallError::Task {
                        error: TaskError::WorkerLost { .. },
                        ..
                    })
                ),
                "{result:?}"
            );
            // The lease was failed, not left to expire: the next resolve acquires at once.
            use cairn::Task;
            use cairn_engine::catalog::{KeyInputs, Resolution, ResolveRequest};
            let mut inputs = KeyInputs::new();
            inputs.add("n", &1).unwrap();
            let key = hang
                .spec()
                .cache_key("flytesnacks", "development", inputs)
                .unwrap();
            let req = ResolveRequest {
                key: &key,
                owner: "probe",
                execution: "probe-1",
                lease_ttl: Duration::from_secs(30),
                max_age: None,
                overwrite: false,
                takeover: None,
                trace: None,
            };
            match node.catalog().resolve(&req).await.unwrap() {
                Resolution::Acquired(l) => assert!(
                    l.previous_failure.unwrap().contains("worker"),
                    "released with the reason"
                ),
                other => panic!("the dead worker's lease is still held: {other:?}"),
            }
        } else {
            assert_eq!(
                result.unwrap(),
                1,
                "the job was retried on a replacement worker"
            );
        }
    }
    let status = node.workers().status().await.unwrap();
    assert_eq!(status.replaced, 2);
    assert_eq!(status.workers, 16, "the pool is back to full strength");
}

#[cairn::task(cache = true, cache_version = "1.0")]
async fn slower_double(n: i64) -> i64 {
    tokio::time::sleep(Duration::from_millis(300)).await;
    n * 2
}

/// A scheduler shard that dies (here killed, as a panic in it would) is replaced: the call it
/// had in flight is answered with an error naming the failure instead of hanging, and calls that
/// hash to it work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_scheduler_shard_is_restarted_and_its_calls_in_flight_are_answered() {
    let shared = SharedStore::new().await;
    let node = shared
        .node("a")
        .schedulers(1)
        .task(slower_double)
        .start()
        .await
        .unwrap();
    assert_eq!(node.schedulers().shards(), 1);
    let ctx = node.ctx(opts());
    let in_flight = tokio::spawn({
        let ctx = ctx.clone();
        async move { ctx.call(slower_double, 1).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    node.schedulers().kill_shard(0);
    let answered = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("the call in flight is answered, not left hanging")
        .unwrap();
    let err = answered.expect_err("its shard died under it");
    assert!(
        err.to_string().contains("failed while it was in flight"),
        "{err}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while node.schedulers().restarts() < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the shard was not restarted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The replacement serves the key space of the dead shard: new keys and the one whose
    // call was lost (its job committed from the worker, or runs again).
    let ctx = node.ctx(opts());
    assert_eq!(ctx.call(slower_double, 2).await.unwrap(), 4);
    assert_eq!(ctx.call(slower_double, 1).await.unwrap(), 2);
    assert_eq!(node.schedulers().restarts(), 1);
}

/// A worker pool that dies (here killed, as a panic in it would) is replaced: the jobs it was
/// running and the jobs queued in it are reported lost to their callers (not left hanging), its
/// workers stop, and the same keys run again on the replacement at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_pool_is_restarted_and_its_jobs_are_reported_lost() {
    let shared = SharedStore::new().await;
    let node = shared
        .node("a")
        .concurrency(1)
        .task(slower_double)
        .start()
        .await
        .unwrap();
    let ctx = node.ctx(opts());
    let calls: Vec<_> = [10, 11]
        .into_iter()
        .map(|n| {
            let ctx = ctx.clone();
            tokio::spawn(async move { ctx.call(slower_double, n).await })
        })
        .collect();
    // One job runs on the pool's single worker, the other waits in its queue.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let running = loop {
        let status = node.workers().status().await.unwrap();
        if status.busy.len() == 1 && status.queued == 1 {
            break status.busy[0].actor.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{status:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    node.workers().kill_pool();
    for call in calls {
        let answered = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("a job of the dead pool is answered, not left hanging")
            .unwrap();
        match answered {
            Err(CallError::Task {
                error: TaskError::WorkerLost { .. },
                ..
            }) => {}
            other => panic!("expected the job to be reported lost, got {other:?}"),
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while node.workers().restarts() < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pool was not restarted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The dead pool's worker was stopped with it: it cannot commit a job reported lost.
    while running.get_status() != ractor::ActorStatus::Stopped {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead pool's worker still runs"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The replacement runs jobs, also of the keys whose jobs were lost: their leases were
    // given up, not left to their TTL.
    let started = tokio::time::Instant::now();
    let ctx = node.ctx(opts());
    assert_eq!(ctx.call(slower_double, 10).await.unwrap(), 20);
    assert_eq!(ctx.call(slower_double, 11).await.unwrap(), 22);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the lost jobs' leases were not waited out"
    );
    let status = node.workers().status().await.unwrap();
    assert_eq!((status.workers, node.workers().restarts()), (1, 1));
}

static FOLLOWED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cairn::task(cache = true, cache_version = "1.0")]
async fn followed(n: i64) -> i64 {
    FOLLOWED_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    n + 1
}

/// Identical calls of one run made at once are answered together behind one execution, and
/// each is still a call of its own: its own execution id, position, status and record, naming
/// the execution it waited for.
#[tokio::test]
async fn identical_calls_of_a_run_each_have_their_own_record_behind_one_execution() {
    let shared = SharedStore::new().await;
    let node = shared.node("a").task(followed).start().await.unwrap();
    let before = FOLLOWED_RUNS.load(Ordering::SeqCst);
    let ran = node
        .run(opts(), |ctx| async move {
            let calls = (0..300).map(|_| ctx.call(followed, 1_000));
            futures::future::join_all(calls).await
        })
        .await;
    assert!(ran.output.iter().all(|r| r.as_ref() == Ok(&1_001)));
    assert_eq!(FOLLOWED_RUNS.load(Ordering::SeqCst) - before, 1);
    let count = |status| ran.calls.iter().filter(|c| c.status == status).count();
    assert_eq!(ran.calls.len(), 300);
    assert_eq!(
        (count(CacheStatus::Populated), count(CacheStatus::Waited)),
        (1, 299)
    );

    node.catalog().flush_records().await.unwrap();
    let records = node.catalog().run_executions(&ran.run_id).await.unwrap();
    assert_eq!(records.len(), 300);
    let producer = records
        .iter()
        .find(|r| r.status == CacheStatus::Populated)
        .expect("the execution");
    assert!(producer.executed);
    let mut seqs: Vec<u64> = records.iter().map(|r| r.seq.unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (0..300).collect::<Vec<_>>(),
        "one record per position"
    );
    let executions: std::collections::BTreeSet<_> =
        records.iter().map(|r| r.execution.clone()).collect();
    assert_eq!(executions.len(), 300, "an execution id per call");
    for r in records.iter().filter(|r| r.status == CacheStatus::Waited) {
        assert_eq!(r.waited_for.as_deref(), Some(producer.execution.as_str()));
        assert!(!r.executed);
        assert!(r.wait_us > 0 && r.wait_us == r.duration_us, "{r:?}");
        assert_eq!(r.key, producer.key);
    }
}

static DROPPED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cairn::task(cache = true, cache_version = "1.0")]
async fn outlives_its_caller(n: i64) -> i64 {
    DROPPED_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    n * 10
}

/// The first of identical calls is dropped by its workflow (a timeout) while the others wait
/// for it: they are still answered, by the one execution already under way.
#[tokio::test]
async fn calls_waiting_for_a_dropped_identical_call_are_still_answered() {
    let shared = SharedStore::new().await;
    let node = shared
        .node("a")
        .task(outlives_its_caller)
        .start()
        .await
        .unwrap();
    let before = DROPPED_RUNS.load(Ordering::SeqCst);
    let ran = node
        .run(opts(), |ctx| async move {
            let mut first = Box::pin(tokio::time::timeout(
                Duration::from_millis(20),
                ctx.call(outlives_its_caller, 4),
            ));
            assert!(futures::poll!(&mut first).is_pending(), "made first");
            let others =
                futures::future::join_all((0..40).map(|_| ctx.call(outlives_its_caller, 4)));
            tokio::join!(first, others)
        })
        .await;
    let (first, others) = ran.output;
    assert!(first.is_err(), "the first call timed out");
    assert!(others.iter().all(|r| r.as_ref() == Ok(&40)), "{others:?}");
    assert_eq!(DROPPED_RUNS.load(Ordering::SeqCst) - before, 1);
}

static MOVED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cairn::task(cache = true, cache_version = "1.0")]
async fn waited_on_by_movers(n: i64) -> i64 {
    MOVED_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    n * 3
}

/// Followers of an identical call that move or give up while they wait: one first polled by
/// the workflow's task and then driven by another future (its waker changes) is still woken,
/// and one dropped by its timeout does not keep the others from their answer.
#[tokio::test]
async fn identical_calls_that_move_or_give_up_while_waiting_do_not_strand_the_others() {
    use futures::StreamExt;
    let shared = SharedStore::new().await;
    let node = shared
        .node("a")
        .task(waited_on_by_movers)
        .start()
        .await
        .unwrap();
    let before = MOVED_RUNS.load(Ordering::SeqCst);
    let ran = node
        .run(opts(), |ctx| async move {
            let mut leader = Box::pin(ctx.call(waited_on_by_movers, 5));
            assert!(futures::poll!(&mut leader).is_pending(), "made first");
            // Polled here (this task's waker), then driven by a stream of its own.
            // Polled until it follows (its cache read done), with this task's waker.
            let mut mover = Box::pin(ctx.call(waited_on_by_movers, 5));
            for _ in 0..10 {
                assert!(futures::poll!(&mut mover).is_pending(), "it follows");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let quitter =
                tokio::time::timeout(Duration::from_millis(50), ctx.call(waited_on_by_movers, 5));
            let others =
                futures::future::join_all((0..40).map(|_| ctx.call(waited_on_by_movers, 5)));
            let moved = async move {
                let mut own: futures::stream::FuturesUnordered<_> = [mover].into_iter().collect();
                tokio::time::timeout(Duration::from_secs(10), own.next())
                    .await
                    .expect("the moved call was woken")
                    .expect("one call")
            };
            tokio::join!(leader, moved, quitter, others)
        })
        .await;
    let (leader, moved, quitter, others) = ran.output;
    assert_eq!(leader, Ok(15));
    assert_eq!(moved, Ok(15));
    assert!(quitter.is_err(), "the quitter timed out");
    assert!(others.iter().all(|r| r.as_ref() == Ok(&15)), "{others:?}");
    assert_eq!(MOVED_RUNS.load(Ordering::SeqCst) - before, 1);
}

static FAILED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cairn::task(cache = true, cache_version = "1.0", retries = 0)]
async fn fails_for_all(n: i64) -> Result<i64, String> {
    FAILED_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    Err(format!("no answer for {n}"))
}

/// Identical calls of one run behind a failing execution: each gets its error (status `Miss`),
/// from the one execution.
#[tokio::test]
async fn identical_calls_behind_a_failure_each_get_its_error() {
    let shared = SharedStore::new().await;
    let node = shared.node("a").task(fails_for_all).start().await.unwrap();
    let before = FAILED_RUNS.load(Ordering::SeqCst);
    let ran = node
        .run(opts(), |ctx| async move {
            futures::future::join_all((0..20).map(|_| ctx.call(fails_for_all, 3))).await
        })
        .await;
    assert_eq!(FAILED_RUNS.load(Ordering::SeqCst) - before, 1);
    for r in &ran.output {
        match r {
            Err(CallError::Task { error, .. }) => {
                assert!(error.to_string().contains("no answer for 3"), "{error}")
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        ran.calls
            .iter()
            .filter(|c| c.status == CacheStatus::Miss && c.error.is_some())
            .count(),
        20
    );
}

/// The store of `cuts_the_store_off`'s test: its body cuts the node off the store as it returns.
static CUT_OFF: std::sync::OnceLock<cairn_engine::store::memory::MemoryStore> =
    std::sync::OnceLock::new();
static CUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cairn::task(cache = true, cache_version = "1.0")]
async fn cuts_the_store_off(n: i64) -> i64 {
    CUT_OFF
        .get()
        .expect("the test's store")
        .set_partitioned(true);
    CUT.store(true, Ordering::SeqCst);
    n + 1
}

#[cairn::task]
async fn needs_no_store(n: i64) -> i64 {
    n * 2
}

/// A worker hands its job's commit to the pool and runs the next body: a commit that waits
/// (here for a store that cannot be reached) does not hold a slot of the pool's concurrency.
/// The commit still lands once the store is back, and the call is answered with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_waiting_for_the_store_does_not_hold_its_workers_slot() {
    let store = cairn_engine::store::memory::MemoryStore::new(14);
    CUT_OFF.set(store.clone()).ok().expect("set once");
    let node = cairn::Node::builder()
        .name("a")
        .store(cairn::AnyStore::Memory(store.clone()))
        .concurrency(1)
        .task(cuts_the_store_off)
        .task(needs_no_store)
        .start()
        .await
        .unwrap();
    let ctx = node.ctx(opts());
    let cached = tokio::spawn({
        let ctx = ctx.clone();
        async move { ctx.call(cuts_the_store_off, 1).await }
    });
    // The body ran and cut the store off: its commit now waits for the store.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !CUT.load(Ordering::SeqCst) {
        assert!(tokio::time::Instant::now() < deadline, "the body never ran");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The pool's only worker is free for the next body meanwhile.
    let next = tokio::time::timeout(Duration::from_secs(10), ctx.call(needs_no_store, 5))
        .await
        .expect("the next job ran while the first one's commit waited for the store");
    assert_eq!(next.unwrap(), 10);
    assert!(
        !cached.is_finished(),
        "the first call was answered before its commit could land"
    );
    store.set_partitioned(false);
    let answered = tokio::time::timeout(Duration::from_secs(30), cached)
        .await
        .expect("the waiting commit lands once the store is back")
        .unwrap();
    assert_eq!(answered.unwrap(), 2);
    // It was committed: the next call of the key is a hit, and the body did not run again.
    let again = node
        .run(opts(), |ctx| async move {
            ctx.call(cuts_the_store_off, 1).await
        })
        .await;
    assert_eq!(again.output.unwrap(), 2);
    assert_eq!(again.calls[0].status, CacheStatus::Hit);
}

/// Whether `held_until_released`'s bodies may return.
static RELEASED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cairn::task(cache = true, cache_version = "1.0")]
async fn held_until_released(n: i64) -> i64 {
    while !RELEASED.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    n * 3
}

/// A pool hands at most 256 commits over at once: with 258 bodies done while the store cannot
/// be reached, 256 commits wait on the pool's tasks and the last two workers wait for their
/// own. All 258 land once the store is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_hands_at_most_256_commits_over_and_its_workers_commit_the_rest() {
    const JOBS: i64 = 258;
    let store = cairn_engine::store::memory::MemoryStore::new(15);
    let node = cairn::Node::builder()
        .name("a")
        .store(cairn::AnyStore::Memory(store.clone()))
        .concurrency(JOBS as usize)
        .task(held_until_released)
        .start()
        .await
        .unwrap();
    let ctx = node.ctx(opts());
    let calls: Vec<_> = (0..JOBS)
        .map(|n| {
            let ctx = ctx.clone();
            tokio::spawn(async move { ctx.call(held_until_released, n).await })
        })
        .collect();
    let busy = || async { node.workers().status().await.unwrap().busy.len() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while busy().await < JOBS as usize {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bodies never all ran"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Every lease is held: the store is cut off and the bodies return.
    store.set_partitioned(true);
    RELEASED.store(true, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while busy().await > 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the workers were not freed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Two workers stay busy with their own commits, and no call is answered meanwhile.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(busy().await, 2, "256 commits are handed over, no more");
    assert!(calls.iter().all(|c| !c.is_finished()));
    store.set_partitioned(false);
    for (n, call) in (0..JOBS).zip(calls) {
        let answered = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("every commit lands once the store is back")
            .unwrap();
        assert_eq!(answered.unwrap(), n * 3);
    }
    let again = node
        .run(opts(), |ctx| async move {
            ctx.call(held_until_released, JOBS - 1).await
        })
        .await;
    assert_eq!(again.calls[0].status, CacheStatus::Hit);
}
