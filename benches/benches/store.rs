//! Transactional read-then-insert throughput of each store backend: 4 concurrent tasks visit
//! the same keys, each visit one transaction that reads the key and inserts it if absent.
//!
//! `cargo bench -p cairn-benches --bench store`; PostgreSQL runs when `CAIRN_BENCH_POSTGRES`
//! (a URL) is set.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cairn_benches::insert_if_absent;
use cairn_engine::store::embedded::EmbeddedStore;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::time::Duration;

const TASKS: u32 = 4;

fn bench<S: cairn_engine::Store>(
    c: &mut Criterion,
    name: &str,
    rt: &tokio::runtime::Runtime,
    store: &S,
    keys: u32,
) {
    let mut group = c.benchmark_group("store/insert_if_absent");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(u64::from(TASKS) * u64::from(keys)));
    group.bench_function(format!("{name}/{TASKS}x{keys}"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let run = rt.block_on(insert_if_absent(store, TASKS, keys));
                total += run.elapsed;
            }
            total
        })
    });
    group.finish();
}

fn store_benches(c: &mut Criterion) {
    let rt = cairn_benches::runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = rt
        .block_on(EmbeddedStore::open(dir.path().join("buffered"), false))
        .expect("open");
    bench(c, "embedded", &rt, &embedded, 100_000);
    let synced = rt
        .block_on(EmbeddedStore::open(dir.path().join("fsync"), true))
        .expect("open");
    bench(c, "embedded-fsync", &rt, &synced, 2_000);
    if let Some(pg) = cairn_benches::postgres_store(&rt, "store/insert_if_absent/postgres") {
        bench(c, "postgres", &rt, &pg, 5_000);
    }
}

criterion_group!(benches, store_benches);
criterion_main!(benches);
