//! Task calls through the public API (`Ctx::call` on a `Node` over the embedded store):
//! - hits: `square(n)` for 10,000 populated keys;
//! - cold cached calls: a fresh key every call (miss → worker → commit);
//! - the same inside a run started by name (recorded and durable), and uncached calls in a
//!   context of their own and inside a run by name (journaled: lease + commit per call).
//!
//! `cargo bench -p cairn-benches --bench runtime`

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cairn_benches::{CONCURRENCY, Calls, Kind, drive, hit_node, hits, in_ctx, in_run};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::atomic::{AtomicI64, Ordering};

fn benches(c: &mut Criterion) {
    let rt = cairn_benches::runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = hit_node(&rt, dir.path());
    let mut group = c.benchmark_group("runtime");
    group.throughput(Throughput::Elements(1));
    group.bench_function("hit/embedded", |b| {
        b.iter_custom(|iters| hits(&rt, &node, iters))
    });
    let fresh = std::sync::Arc::new(AtomicI64::new(1_000_000));
    group.bench_function("cold/embedded", |b| {
        b.iter_custom(|iters| {
            let fresh = fresh.clone();
            let base = fresh.fetch_add(iters as i64 + CONCURRENCY as i64, Ordering::SeqCst);
            rt.block_on(drive(&node, iters, move |i| base + i as i64))
        })
    });
    let cases: [(&str, Kind, bool); 3] = [
        ("cold-in-run/embedded", Kind::Cached, true),
        ("uncached/embedded", Kind::Uncached, false),
        ("uncached-in-run/embedded", Kind::Uncached, true),
    ];
    for (name, kind, run) in cases {
        let fresh = fresh.clone();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let base = fresh.fetch_add(iters as i64 + 1, Ordering::SeqCst);
                let c = Calls {
                    base,
                    total: iters,
                    kind,
                };
                if run {
                    rt.block_on(in_run(&node, c))
                } else {
                    rt.block_on(in_ctx(&node, c))
                }
            })
        });
    }
    group.finish();
}

criterion_group!(runtime_benches, benches);
criterion_main!(runtime_benches);
