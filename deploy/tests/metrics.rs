//! What a node's metrics pipeline sends over OTLP, decoded by an in-process receiver: duration
//! histograms with explicit second-scaled buckets (a hit, a cold call and a long task land in
//! different buckets), and the lease-takeover counter counting a real takeover.
//!
//! One test in its own binary: the instruments are process-wide.

mod common;

use cairn_engine::catalog::{
    Answer, CacheKey, CacheStatus, Catalog, KeyInputs, Resolution, ResolveRequest, TaskSignature,
    TypeDesc, new_execution_id,
};
use cairn_engine::telemetry::{metrics, semconv as sc};
use common::otlp::{Metric, Metrics, Spans};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use std::sync::Arc;
use std::time::Duration;

fn named<'a>(all: &'a [Metric], name: &str) -> &'a Metric {
    all.iter()
        .rev()
        .find(|m| m.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no {name} in {:?}",
                all.iter().map(|m| &m.name).collect::<Vec<_>>()
            )
        })
}

fn key(n: i64) -> CacheKey {
    let signature = TaskSignature {
        name: "metered".into(),
        inputs: vec![("n".into(), TypeDesc::of::<i64>())],
        output: TypeDesc::of::<i64>(),
    };
    let mut inputs = KeyInputs::new();
    inputs.add("n", &n).unwrap();
    CacheKey::new("metrics", "test", &signature, "1", &inputs).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_buckets_separate_scales_and_takeovers_are_counted() {
    let received = Metrics::default();
    let endpoint = common::otlp::grpc_with(Spans::default(), received.clone()).await;
    let config = cairn::telemetry::TelemetryConfig {
        otlp_endpoint: Some(endpoint),
        protocol: Some("grpc".into()),
        ..Default::default()
    };
    let (tracer, meter) = cairn::telemetry::Telemetry::providers(&config, "metered").unwrap();

    // Calls of four known durations, one per scale.
    let task: Arc<str> = Arc::from("metered");
    let durations = [
        Duration::from_micros(50),
        Duration::from_millis(5),
        Duration::from_millis(500),
        Duration::from_secs(5),
    ];
    for d in durations {
        metrics::call_answered(&task, CacheStatus::Populated, d, Some(d));
    }

    // A real takeover: a holder that never heartbeats, and a waiter that outlasts its TTL.
    let dir = tempfile::tempdir().unwrap();
    let store = cairn::AnyStore::open(&format!("embedded:{}", dir.path().display()))
        .await
        .unwrap();
    let catalog = Catalog::new(store);
    let key = key(1);
    let request = |execution: &'static str, ttl| ResolveRequest {
        key: &key,
        owner: "metered",
        execution,
        lease_ttl: ttl,
        max_age: None,
        overwrite: false,
        takeover: None,
        trace: None,
    };
    let holder: &'static str = Box::leak(new_execution_id().into_boxed_str());
    let waiter: &'static str = Box::leak(new_execution_id().into_boxed_str());
    let Resolution::Acquired(_silent) = catalog
        .resolve(&request(holder, Duration::from_millis(200)))
        .await
        .unwrap()
    else {
        panic!("expected to acquire")
    };
    let waiting = request(waiter, Duration::from_secs(60));
    let Resolution::Held(held) = catalog.resolve(&waiting).await.unwrap() else {
        panic!("expected held")
    };
    match catalog.wait(&waiting, held).await.unwrap() {
        Answer::Acquired(lease) => assert!(lease.took_over),
        other => panic!("expected a takeover, got {other:?}"),
    }

    meter.force_flush().unwrap();
    let all = received.all();

    // Every duration histogram has the configured boundaries, and the four calls sit in four
    // different buckets, each counted once.
    for name in [sc::METRIC_CALL_DURATION, sc::METRIC_WAIT_DURATION] {
        let m = named(&all, name);
        assert_eq!(m.unit, "s", "{name}");
        let Some(Data::Histogram(h)) = &m.data else {
            panic!("{name} is not a histogram: {:?}", m.data)
        };
        assert_eq!(h.data_points.len(), 1, "{name}");
        let point = &h.data_points[0];
        assert_eq!(point.explicit_bounds, sc::DURATION_BUCKETS, "{name}");
        assert_eq!(point.count, 4, "{name}");
        let filled: Vec<usize> = point
            .bucket_counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| {
                assert_eq!(*n, 1, "{name}: two durations in bucket {i}");
                i
            })
            .collect();
        assert_eq!(filled.len(), 4, "{name}: {:?}", point.bucket_counts);
        // Each in the bucket whose bounds enclose it.
        for (d, i) in durations.iter().zip(&filled) {
            let s = d.as_secs_f64();
            let lower = if *i == 0 {
                0.0
            } else {
                sc::DURATION_BUCKETS[i - 1]
            };
            assert!(
                lower < s && s <= sc::DURATION_BUCKETS[*i],
                "{s} s in bucket {i}"
            );
        }
    }

    let takeovers = named(&all, sc::METRIC_LEASE_TAKEOVERS);
    let Some(Data::Sum(sum)) = &takeovers.data else {
        panic!("takeovers is not a sum: {:?}", takeovers.data)
    };
    let counted: i64 = sum
        .data_points
        .iter()
        .map(|p| match p.value {
            Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(n)) => n,
            ref other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(counted, 1, "one takeover");

    let _ = tracer.shutdown();
    let _ = meter.shutdown();
}
