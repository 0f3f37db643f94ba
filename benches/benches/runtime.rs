//! Task calls through the public API (`Ctx::call` on a `Node` over the embedded store):
//! - hits: `square(n)` for 10,000 populated keys;
//! - cold cached calls: a fresh key every call (miss → worker → commit).
//!
//! `cargo bench -p cairn-benches --bench runtime`

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cairn::{Node, RunOptions};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

#[cairn::task(cache = true, cache_version = "1.0")]
async fn square(n: i64) -> i64 {
    n * n
}

const CONCURRENCY: u64 = 256;
const KEYS: i64 = 10_000;

/// `total` calls from `CONCURRENCY` concurrent callers; `input(i)` picks each call's input.
async fn drive(
    node: &Node,
    total: u64,
    input: impl Fn(u64) -> i64 + Clone + Send + 'static,
) -> Duration {
    let ctx = node.ctx(RunOptions::new("bench", "bench"));
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

fn benches(c: &mut Criterion) {
    let rt = cairn_benches::runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("embedded:{}", dir.path().display());
    let node = rt
        .block_on(
            Node::builder()
                .store_url(url)
                .task(square)
                .concurrency(256)
                .start(),
        )
        .expect("node");
    // Populate the hit keys.
    rt.block_on(drive(&node, KEYS as u64, |i| i as i64 % KEYS));
    let mut group = c.benchmark_group("runtime");
    group.throughput(Throughput::Elements(1));
    group.bench_function("hit/embedded", |b| {
        b.iter_custom(|iters| rt.block_on(drive(&node, iters, |i| (i as i64 * 7919) % KEYS)))
    });
    let fresh = std::sync::Arc::new(AtomicI64::new(1_000_000));
    group.bench_function("cold/embedded", |b| {
        b.iter_custom(|iters| {
            let fresh = fresh.clone();
            let base = fresh.fetch_add(iters as i64 + CONCURRENCY as i64, Ordering::SeqCst);
            rt.block_on(drive(&node, iters, move |i| base + i as i64))
        })
    });
    group.finish();
}

criterion_group!(runtime_benches, benches);
criterion_main!(runtime_benches);
