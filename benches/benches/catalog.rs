//! Catalog hot path: `resolve` of keys that have an entry (a hit), from several concurrent
//! tasks, on each backend; and making a call's cache key (`catalog/cache_key`), which every
//! cached call does on its caller's task before anything else.
//!
//! `cargo bench -p cairn-benches --bench catalog`; PostgreSQL runs when `CAIRN_BENCH_POSTGRES`
//! is set.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cairn_benches::populated_keys;
use cairn_engine::Store;
use cairn_engine::catalog::{
    CacheKey, Catalog, KeyInputs, Resolution, ResolveRequest, TaskSignature, TypeDesc,
};
use cairn_engine::store::embedded::EmbeddedStore;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TASKS: u64 = 4;
const KEYS: i64 = 10_000;

async fn resolve_hits<S: Store>(
    catalog: &Catalog<S>,
    keys: &Arc<Vec<CacheKey>>,
    total: u64,
) -> Duration {
    let per_task = total.div_ceil(TASKS);
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (catalog, keys) = (catalog.clone(), keys.clone());
            tokio::spawn(async move {
                let execution = "bench-reader";
                for i in 0..per_task {
                    let key = &keys[((t * 7919 + i) % keys.len() as u64) as usize];
                    let req = ResolveRequest {
                        key,
                        owner: "bench",
                        execution,
                        lease_ttl: Duration::from_secs(60),
                        max_age: None,
                        overwrite: false,
                        takeover: None,
                        trace: None,
                    };
                    match catalog.resolve(&req).await.expect("resolve") {
                        Resolution::Hit(hit) => assert_eq!(hit.output.len(), 8),
                        other => panic!("expected a hit, got {other:?}"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    started.elapsed()
}

fn bench<S: Store>(c: &mut Criterion, name: &str, rt: &tokio::runtime::Runtime, store: S) {
    let catalog = rt.block_on(async { Catalog::new(store) });
    let keys = Arc::new(rt.block_on(populated_keys(&catalog, KEYS)));
    let mut group = c.benchmark_group("catalog/resolve_hit");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| rt.block_on(resolve_hits(&catalog, &keys, iters)))
    });
    group.finish();
}

/// The key of a one-input call, as `Ctx::call` makes it: the input encoded and hashed, the
/// names checked, the key hashed.
fn cache_key(c: &mut Criterion) {
    let sig = TaskSignature::new("square", TypeDesc::named("int64"))
        .input("n", TypeDesc::named("int64"))
        .prepare();
    let mut group = c.benchmark_group("catalog/cache_key");
    group.throughput(Throughput::Elements(1));
    let mut n = 0_i64;
    group.bench_function("one-input", |b| {
        b.iter(|| {
            n += 1;
            let mut inputs = KeyInputs::new();
            inputs.add("n", &n).expect("input");
            CacheKey::prepared("bench", "user-load", &sig, "v1", &inputs).expect("key")
        })
    });
    group.finish();
}

fn catalog_benches(c: &mut Criterion) {
    cache_key(c);
    let rt = cairn_benches::runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = rt
        .block_on(EmbeddedStore::open(dir.path(), false))
        .expect("open");
    bench(c, "embedded", &rt, embedded);
    if let Some(pg) = cairn_benches::postgres_store(&rt, "catalog/resolve_hit/postgres") {
        bench(c, "postgres", &rt, pg);
    }
}

criterion_group!(benches, catalog_benches);
criterion_main!(benches);
