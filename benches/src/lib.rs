//! Workloads shared by Cairn's benchmarks (`benches/*.rs`); each checks its own outcome so a
//! fast wrong answer cannot pass for a result.

// Every dependency of the library is used by it (the lint runs per target; tests and
// benchmarks have their own dev-dependencies).
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

// Used by the load binaries in `src/bin`, which share this crate's dependencies.
use {
    axum as _, fantoccini as _, mimalloc as _, parking_lot as _, rcgen as _, reqwest as _,
    rmp_serde as _, rustls as _, tempfile as _, xxhash_rust as _,
};

use cairn_engine::{RetryPolicy, Store, Transaction, transact};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The runtime every benchmark runs on: tokio's multi-threaded scheduler with 2 workers, the
/// cores of the machines the figures in `benches/README.md` come from.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A fresh table on the PostgreSQL server named by `CAIRN_BENCH_POSTGRES`, or `None` (and a
/// note naming the skipped `bench`) when the variable is not set.
pub fn postgres_store(
    rt: &tokio::runtime::Runtime,
    bench: &str,
) -> Option<cairn_engine::store::postgres::PostgresStore> {
    let Ok(url) = std::env::var("CAIRN_BENCH_POSTGRES") else {
        eprintln!("{bench} skipped: set CAIRN_BENCH_POSTGRES");
        return None;
    };
    let table = format!("bench_{:08x}", rand::random::<u32>());
    let store = rt
        .block_on(cairn_engine::store::postgres::PostgresStore::connect(
            &url, &table, 8,
        ))
        .expect("connect to CAIRN_BENCH_POSTGRES");
    Some(store)
}

/// What one run of [`insert_if_absent`] did.
#[derive(Debug, Clone, Copy)]
pub struct InsertRun {
    /// Transactions committed (one per visit).
    pub transactions: u64,
    /// Keys that were inserted (must equal the number of keys).
    pub inserted: u64,
    /// Attempts that conflicted and were retried.
    pub retries: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// `tasks` concurrent tasks each visit the same `keys` keys under a fresh random prefix; each
/// visit is one transaction that reads the key and inserts it if absent. Panics unless exactly
/// `keys` keys were inserted.
pub async fn insert_if_absent<S: Store>(store: &S, tasks: u32, keys: u32) -> InsertRun {
    let mut prefix = vec![cairn_engine::keys::tag::TEST];
    prefix.extend_from_slice(&rand::random::<u64>().to_be_bytes());
    let prefix = Arc::new(prefix);
    let inserted = Arc::new(AtomicU64::new(0));
    let retries_before = store.counters().retries();
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (store, prefix, inserted) = (store.clone(), prefix.clone(), inserted.clone());
            tokio::spawn(async move {
                let policy = RetryPolicy {
                    max_attempts: 10_000,
                    ..RetryPolicy::default()
                };
                let offset = t * (keys / tasks.max(1));
                let mut key = prefix.to_vec();
                key.extend_from_slice(&[0; 4]);
                let at = prefix.len();
                for i in 0..keys {
                    key[at..].copy_from_slice(&((i + offset) % keys).to_be_bytes());
                    let fresh = transact(&store, &policy, |tx| {
                        let key = &key;
                        async move {
                            if tx.get(key, false).await?.is_some() {
                                return Ok(false);
                            }
                            tx.set(key, b"v");
                            Ok(true)
                        }
                    })
                    .await
                    .expect("insert-if-absent transaction");
                    if fresh {
                        inserted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("worker task");
    }
    let elapsed = started.elapsed();
    let inserted = inserted.load(Ordering::Relaxed);
    assert_eq!(inserted, u64::from(keys), "keys inserted exactly once");
    let end = cairn_engine::store::prefix_end(&prefix).expect("prefix end");
    let tx = store.begin_read().await.expect("begin_read");
    let stored = tx
        .get_range(&prefix, &end, cairn_engine::RangeOptions::all())
        .await
        .expect("range");
    assert_eq!(stored.len() as u64, u64::from(keys), "keys stored");
    InsertRun {
        transactions: u64::from(tasks) * u64::from(keys),
        inserted,
        retries: store.counters().retries() - retries_before,
        elapsed,
    }
}

/// Keys `square(0..n)` in a fresh random project, all populated with an 8-byte output.
pub async fn populated_keys<S: Store>(
    catalog: &cairn_engine::catalog::Catalog<S>,
    n: i64,
) -> Vec<cairn_engine::catalog::CacheKey> {
    use cairn_engine::catalog::{
        CacheKey, Committed, KeyInputs, Resolution, ResolveRequest, TaskSignature, TypeDesc,
    };
    let project = format!("bench{:016x}", rand::random::<u64>());
    let sig = TaskSignature::new("square", TypeDesc::of::<i64>()).input("n", TypeDesc::of::<i64>());
    let mut keys = Vec::with_capacity(n as usize);
    for i in 0..n {
        let mut inputs = KeyInputs::new();
        inputs.add("n", &i).expect("input");
        let key = CacheKey::new(&project, "bench", &sig, "1", &inputs).expect("key");
        let execution = cairn_engine::catalog::new_execution_id();
        let req = ResolveRequest {
            key: &key,
            owner: "bench",
            execution: &execution,
            lease_ttl: Duration::from_secs(60),
            max_age: None,
            overwrite: false,
            takeover: None,
            trace: None,
        };
        let Resolution::Acquired(lease) = catalog.resolve(&req).await.expect("resolve") else {
            panic!("fresh key not acquired");
        };
        let out = (i * i).to_be_bytes();
        let Committed::Stored(_) = catalog
            .commit(&key, &lease, &out, None)
            .await
            .expect("commit")
        else {
            panic!("fresh key already stored");
        };
        keys.push(key);
    }
    keys
}

/// The task the runtime benchmarks call.
#[cairn::task(cache = true, cache_version = "1.0")]
pub async fn square(n: i64) -> i64 {
    n * n
}

/// An uncached task for the runtime benchmarks: inside a run by name its calls are journaled.
#[cairn::task]
pub async fn double(n: i64) -> i64 {
    2 * n
}

/// Which task [`calls`] makes.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub enum Kind {
    /// [`square`], cached.
    Cached,
    /// [`double`], uncached.
    Uncached,
}

/// Input of the [`calls`] workflow.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Calls {
    /// Inputs `base..base + total`.
    pub base: i64,
    /// How many calls.
    pub total: u64,
    /// Of which task.
    pub kind: Kind,
}

/// `total` calls from [`CONCURRENCY`] concurrent branches of `ctx`; every output is checked.
async fn call_all(ctx: cairn::Ctx, c: Calls) -> Result<u64, cairn::CallError> {
    let per = c.total.div_ceil(CONCURRENCY);
    let branches = (0..CONCURRENCY).map(|b| {
        let ctx = ctx.clone();
        let c = c.clone();
        async move {
            for i in 0..per.min(c.total.saturating_sub(b * per)) {
                let n = c.base + (b * per + i) as i64;
                match c.kind {
                    Kind::Cached => assert_eq!(ctx.call(square, n).await?, n * n),
                    Kind::Uncached => assert_eq!(ctx.call(double, n).await?, 2 * n),
                }
            }
            Ok::<_, cairn::CallError>(())
        }
    });
    futures::future::try_join_all(branches).await?;
    Ok(c.total)
}

/// The workflow the runtime benchmarks start by name, as users do (API, CLI, schedules).
pub async fn calls(ctx: cairn::Ctx, c: Calls) -> Result<u64, cairn::CallError> {
    call_all(ctx, c).await
}

/// `c` as one run started by name (recorded, durable: uncached calls journaled), to its end.
pub async fn in_run(node: &cairn::Node, c: Calls) -> Duration {
    let started = Instant::now();
    let run = node
        .submit(cairn::SubmitRun {
            workflow: "calls".into(),
            input: serde_json::to_value(&c).expect("input"),
            options: cairn::RunOptions::new("bench", "bench"),
            schedule: None,
            idempotency_key: None,
        })
        .await
        .expect("submit");
    let record = run.finished.await.expect("run task").expect("run end");
    assert_eq!(
        record.output.and_then(|o| o.text),
        Some(c.total.to_string()),
        "{:?}",
        record.error
    );
    started.elapsed()
}

/// `c` in a context of the node's own, outside any run by name (nothing journaled).
pub async fn in_ctx(node: &cairn::Node, c: Calls) -> Duration {
    let ctx = node.ctx(cairn::RunOptions::new("bench", "bench"));
    let started = Instant::now();
    let total = c.total;
    assert_eq!(call_all(ctx, c).await.expect("calls"), total);
    started.elapsed()
}

/// Concurrent callers in [`drive`].
pub const CONCURRENCY: u64 = 256;

/// `total` calls of [`square`] from [`CONCURRENCY`] concurrent callers in one run of `node`;
/// `input(i)` picks each call's input. Every output is checked.
pub async fn drive(
    node: &cairn::Node,
    total: u64,
    input: impl Fn(u64) -> i64 + Clone + Send + 'static,
) -> Duration {
    let ctx = node.ctx(cairn::RunOptions::new("bench", "bench"));
    let per = total.div_ceil(CONCURRENCY);
    let started = Instant::now();
    let callers: Vec<_> = (0..CONCURRENCY)
        .map(|c| {
            let (ctx, input) = (ctx.clone(), input.clone());
            tokio::spawn(async move {
                for i in 0..per {
                    let n = input(c * per + i);
                    let out = ctx.call(square, n).await.expect("call");
                    assert_eq!(out, n * n);
                }
            })
        })
        .collect();
    for c in callers {
        c.await.expect("caller");
    }
    started.elapsed()
}

/// Keys [`hit_node`] populates.
pub const HIT_KEYS: i64 = 10_000;

/// A node on the embedded store in `dir` with `square` registered and its outputs for
/// `0..HIT_KEYS` stored, so that [`hits`] are all cache hits.
pub fn hit_node(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> cairn::Node {
    let node = rt
        .block_on(
            cairn::Node::builder()
                .store_url(format!("embedded:{}", dir.display()))
                .task(square)
                .task(double)
                .workflow("calls", calls)
                .concurrency(256)
                .start(),
        )
        .expect("node");
    rt.block_on(drive(&node, HIT_KEYS as u64, |i| i as i64 % HIT_KEYS));
    node
}

/// `iters` hits on a [`hit_node`], spread over its keys.
pub fn hits(rt: &tokio::runtime::Runtime, node: &cairn::Node, iters: u64) -> Duration {
    rt.block_on(drive(node, iters, |i| (i as i64 * 7919) % HIT_KEYS))
}
