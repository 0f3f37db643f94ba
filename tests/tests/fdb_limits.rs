//! What would fail on FoundationDB, reproduced here under its limits
//! ([`cairn_engine::store::fdb_limits`]) on the embedded store:
//! - "maybe committed" on every other commit: the per-task call counters stay exact, and a
//!   schedule polled through it fires every tick exactly once, none lost;
//! - more waiters on distinct keys than the store allows watches: every waiter completes;
//! - an 8 MiB output stored where one transaction may write at most 2 MB (staged across
//!   several transactions), also with "maybe committed" on half the commits.

use cairn_engine::catalog::CacheStatus;
use cairn_engine::clock::ManualClock;
use cairn_engine::nodes::Incarnation;
use cairn_engine::runs::{Ended, Runs};
use cairn_engine::schedule::{Overlap, ScheduleSpec, Schedules, Trigger};
use cairn_engine::store::embedded::EmbeddedStore;
use cairn_engine::store::fdb_limits::{FdbLimited, FdbLimitsConfig};
use cairn_engine::store::{RetryPolicy, transact};
use cairn_engine::{Store, Transaction};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

async fn store(dir: &std::path::Path, config: FdbLimitsConfig) -> FdbLimited<EmbeddedStore> {
    FdbLimited::new(EmbeddedStore::open(dir, false).await.unwrap(), config)
}

fn half_unknown(seed: u64) -> FdbLimitsConfig {
    FdbLimitsConfig {
        maybe_committed: 0.5,
        seed,
        ..FdbLimitsConfig::default()
    }
}

/// `n`, cached.
#[cairn::task(cache = true, cache_version = "1.0")]
async fn counter(n: i64) -> i64 {
    n
}

static STAGED_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Eight MiB of text that depends on `n`.
#[cairn::task(cache = true, cache_version = "1.0")]
async fn eight_mib(n: i64) -> String {
    STAGED_RUNS.fetch_add(1, Ordering::SeqCst);
    eight_mib_of(n)
}

fn eight_mib_of(n: i64) -> String {
    (0..8 * 1024 * 1024i64)
        .map(|i| char::from(b'a' + ((i * 31 + n) % 26) as u8))
        .collect()
}

/// A node on `store`, with room for outputs of 16 MiB.
async fn node_on(store: &FdbLimited<EmbeddedStore>) -> cairn::Node {
    cairn::Node::builder()
        .name("limits")
        .store(store.clone().into())
        .catalog_config(cairn_engine::catalog::CatalogConfig {
            max_output_bytes: 16 * 1024 * 1024,
            ..Default::default()
        })
        .task(counter)
        .task(eight_mib)
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_counters_stay_exact_when_half_the_commits_are_maybe_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), half_unknown(7)).await;
    let node = node_on(&store).await;
    let catalog = node.catalog();
    for n in 0..60 {
        let ctx = node.ctx(cairn::RunOptions::new("counters", "dev").with_run_id("run-counters"));
        assert_eq!(ctx.call(counter, n).await.unwrap(), n);
        assert_eq!(ctx.calls()[0].status, CacheStatus::Populated);
        // One record batch per call, each its own transaction.
        catalog.flush_records().await.unwrap();
    }
    let injected = store.injected();
    assert!(
        injected.applied_unknown.load(Ordering::Relaxed) > 5,
        "applied-but-unknown commits were injected"
    );
    let stats = catalog
        .task_stats("counters", "dev", "counter")
        .await
        .unwrap();
    assert_eq!(
        stats.calls.get(&CacheStatus::Populated),
        Some(&60),
        "{:?}",
        stats.calls
    );
    assert_eq!(stats.entries, 60);
    assert_eq!(
        catalog.run_executions("run-counters").await.unwrap().len(),
        60
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_polled_through_maybe_committed_fires_every_tick_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), half_unknown(11)).await;
    let clock = ManualClock::new(0);
    let schedules = Schedules::new(store.clone(), Arc::new(clock.clone()));
    let runs = Runs::new(store.clone(), Arc::new(clock.clone()));
    let mut spec = ScheduleSpec::new(
        "unknown-results",
        "wf",
        Trigger::Every {
            period_ms: 1_000,
            anchor_ms: 0,
        },
    );
    spec.overlap = Overlap::BufferOne;
    schedules.register(&spec).await.unwrap();
    let me = Incarnation {
        node: "n".into(),
        incarnation: 1,
    };
    let mut fired: BTreeMap<i64, usize> = BTreeMap::new();
    let mut running = Vec::new();
    for _ in 0..200 {
        clock.advance(1_000);
        running.extend(schedules.poll_one(&spec.name, &me).await.unwrap());
        // End the oldest run every tick: with BufferOne, its end fires the buffered tick.
        if let Some(fire) = running.first().cloned() {
            running.remove(0);
            *fired.entry(fire.tick_ms).or_default() += 1;
            let owner = fire.run.owner.clone().unwrap();
            match runs
                .finish(&fire.run_id, &owner, Ok("null".into()))
                .await
                .unwrap()
            {
                Ended::Ended { next, .. } => {
                    if let Some(next) = next {
                        running.push(cairn_engine::schedule::Fire {
                            tick_ms: next.tick.unwrap().tick_ms,
                            run_id: next.run_id.clone(),
                            run: *next,
                            ..fire.clone()
                        });
                    }
                }
                other => panic!("tick {}: {other:?}", fire.tick_ms),
            }
        }
    }
    let injected = store.injected();
    assert!(injected.applied_unknown.load(Ordering::Relaxed) > 20);
    assert!(injected.dropped_unknown.load(Ordering::Relaxed) > 20);
    assert!(fired.values().all(|&n| n == 1), "a tick ran twice");
    let record = schedules.get(&spec.name).await.unwrap().unwrap();
    // Every tick fired is either ended here or still running; none was claimed and lost.
    assert_eq!(
        record.state.fired as usize,
        fired.len() + running.len(),
        "fired ticks whose runs never started"
    );
    assert_eq!(record.state.running as usize, running.len());
    assert!(
        fired.len() >= 100,
        "the schedule kept firing: {}",
        fired.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_waiters_than_watches_all_complete() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), FdbLimitsConfig::default()).await;
    const WAITERS: usize = 12_000;
    let waiters: Vec<_> = (0..WAITERS)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let key = format!("waiter-{i}").into_bytes();
                cairn_engine::store::watch::wait_for_change(&store, &key, None).await
            })
        })
        .collect();
    // Until every waiter has registered (a watch, or its place among the re-readers).
    while store.outstanding_watches()
        + (store.injected().watches_refused.load(Ordering::Relaxed) as usize)
        < WAITERS
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.outstanding_watches(), 10_000, "the cap was reached");
    for chunk in (0..WAITERS).collect::<Vec<_>>().chunks(1_000) {
        transact(&store, &RetryPolicy::default(), |tx| async move {
            for i in chunk {
                tx.set(format!("waiter-{i}").as_bytes(), b"done");
            }
            Ok(())
        })
        .await
        .unwrap();
    }
    for (i, w) in waiters.into_iter().enumerate() {
        let seen = tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .unwrap_or_else(|_| panic!("waiter {i} never completed"))
            .unwrap()
            .unwrap_or_else(|e| panic!("waiter {i} failed: {e}"));
        assert_eq!(seen.as_deref(), Some(&b"done"[..]));
    }
    assert_eq!(store.outstanding_watches(), 0);
    let _ = store.inner().backend();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_retried_after_maybe_committed_still_answers_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), half_unknown(5)).await;
    let clock = ManualClock::new(1_000);
    let runs = Runs::new(store.clone(), Arc::new(clock.clone()));
    let (owner, canceller) = (
        Incarnation {
            node: "owner".into(),
            incarnation: 1,
        },
        Incarnation {
            node: "canceller".into(),
            incarnation: 1,
        },
    );
    for i in 0..40 {
        clock.advance(1);
        let id = format!("run-{i}");
        runs.create(
            &cairn_engine::runs::NewRun {
                run_id: id.clone(),
                workflow: "wf".into(),
                project: "p".into(),
                domain: "d".into(),
                overwrite_cache: false,
                input: "1".into(),
                schedule: None,
                tick: None,
            },
            &owner,
            None,
        )
        .await
        .unwrap();
        match runs.cancel(&id, &canceller, "stop").await.unwrap() {
            Ended::Ended { record, .. } => {
                assert_eq!(record.status, cairn_engine::runs::RunStatus::Cancelled)
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    assert!(store.injected().applied_unknown.load(Ordering::Relaxed) > 5);
}

/// Where a transaction may write at most 2 MB, 8 MiB outputs are still stored: staged a
/// megabyte per transaction and made visible by the last one, with half of the commits
/// reported "maybe committed". Before staging, each was one 8.4 MB commit: refused here
/// (`TooLarge`, so `PutFailure` and computed again on every call), and far above
/// FoundationDB's guidance there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_outputs_fit_transactions_of_two_megabytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(
        dir.path(),
        FdbLimitsConfig {
            max_transaction: 2_000_000,
            ..half_unknown(5)
        },
    )
    .await;
    let node = node_on(&store).await;
    let before = STAGED_RUNS.load(Ordering::SeqCst);
    for n in 0..4i64 {
        let expected = eight_mib_of(n);
        let ctx = node.ctx(cairn::RunOptions::new("staged", "dev"));
        assert!(ctx.call(eight_mib, n).await.unwrap() == expected);
        let again = ctx.call(eight_mib, n).await.unwrap();
        let calls = ctx.calls();
        assert_eq!(
            (calls[0].status, calls[1].status),
            (CacheStatus::Populated, CacheStatus::Hit),
            "{calls:?}"
        );
        assert!(again == expected);
    }
    assert_eq!(
        STAGED_RUNS.load(Ordering::SeqCst) - before,
        4,
        "each computed once"
    );
    let injected = store.injected();
    assert!(injected.applied_unknown.load(Ordering::Relaxed) > 0);
    assert!(injected.dropped_unknown.load(Ordering::Relaxed) > 0);
}
