//! What would fail on FoundationDB, reproduced here under its limits
//! ([`cairn_engine::store::fdb_limits`]) on the embedded store:
//! - "maybe committed" on every other commit: the per-task call counters stay exact, and a
//!   schedule polled through it fires every tick exactly once, none lost;
//! - more waiters on distinct keys than the store allows watches: every waiter completes;
//! - an 8 MiB output stored where one transaction may write at most 2 MB (staged across
//!   several transactions), also with "maybe committed" on half the commits.

use cairn_engine::catalog::{CacheKey, CacheStatus, CallOptions, Catalog, KeyInputs};
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
use std::sync::atomic::Ordering;
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

fn key(project: &str, n: i64) -> CacheKey {
    let sig = cairn_engine::catalog::TaskSignature::new(
        "square",
        cairn_engine::catalog::TypeDesc::of::<i64>(),
    )
    .input("n", cairn_engine::catalog::TypeDesc::of::<i64>());
    let mut inputs = KeyInputs::new();
    inputs.add("n", &n).unwrap();
    CacheKey::new(project, "dev", &sig, "1.0", &inputs).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_counters_stay_exact_when_half_the_commits_are_maybe_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), half_unknown(7)).await;
    let catalog = Catalog::new(store.clone());
    let opts = CallOptions {
        run: Some("run-counters".into()),
        ..CallOptions::default()
    };
    for n in 0..60 {
        let out = catalog
            .call(&key("counters", n), &opts, move || async move {
                Ok::<_, String>(n.to_be_bytes().to_vec())
            })
            .await
            .unwrap();
        assert_eq!(out.status, CacheStatus::Populated);
        // One record batch per call, each its own transaction.
        catalog.flush_records().await.unwrap();
    }
    let injected = store.injected();
    assert!(
        injected.applied_unknown.load(Ordering::Relaxed) > 5,
        "applied-but-unknown commits were injected"
    );
    let stats = catalog
        .task_stats("counters", "dev", "square")
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
    let catalog = Catalog::new(store.clone());
    for n in 0..4i64 {
        let output: Vec<u8> = (0..8 * 1024 * 1024u32)
            .map(|i| (i as i64 * 31 + n) as u8)
            .collect();
        let expected = output.clone();
        let out = catalog
            .call(&key("staged", n), &CallOptions::default(), move || {
                let output = output.clone();
                async move { Ok::<_, String>(output) }
            })
            .await
            .unwrap();
        assert_eq!(out.status, CacheStatus::Populated);
        let again = catalog
            .call(&key("staged", n), &CallOptions::default(), || async {
                Err::<Vec<u8>, _>("a stored output is not computed again".to_string())
            })
            .await
            .unwrap();
        assert_eq!(again.status, CacheStatus::Hit);
        assert!(again.output.unwrap() == expected);
    }
    let injected = store.injected();
    assert!(injected.applied_unknown.load(Ordering::Relaxed) > 0);
    assert!(injected.dropped_unknown.load(Ordering::Relaxed) > 0);
}
