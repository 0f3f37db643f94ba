//! The cost of telemetry on the hit path: `square(n)` hits through the public API with OTLP
//! export off (the default), then on — spans and metrics exported over OTLP/HTTP to a sink on
//! 127.0.0.1 that accepts and drops them. (Off runs first: a process installs its tracing
//! subscriber once.)
//!
//! `cargo bench -p cairn-benches --bench telemetry`

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cairn::telemetry::{Telemetry, TelemetryConfig};
use cairn_benches::{hit_node, hits};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Accepts OTLP/HTTP exports and drops them.
async fn sink() -> String {
    let app = axum::Router::new().fallback(|| async {
        (
            [("content-type", "application/x-protobuf")],
            Vec::<u8>::new(),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn benches(c: &mut Criterion) {
    let rt = cairn_benches::runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = hit_node(&rt, dir.path());
    let mut group = c.benchmark_group("telemetry");
    group.throughput(Throughput::Elements(1));
    group.bench_function("hit/export-off", |b| {
        b.iter_custom(|iters| hits(&rt, &node, iters))
    });
    let config = TelemetryConfig {
        otlp_endpoint: Some(rt.block_on(sink())),
        protocol: Some("http/protobuf".into()),
        service_name: Some("cairn-bench".into()),
        dependency_spans: None,
    };
    let telemetry = rt
        .block_on(async { Telemetry::init(&config, "bench") })
        .expect("telemetry");
    group.bench_function("hit/export-on", |b| {
        b.iter_custom(|iters| hits(&rt, &node, iters))
    });
    group.finish();
    telemetry.shutdown();
}

criterion_group!(benches_group, benches);
criterion_main!(benches_group);
