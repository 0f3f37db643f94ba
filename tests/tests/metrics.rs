//! Cairn's metrics after a known workload, read from an in-memory OpenTelemetry exporter.
//! (Its own test binary: the instruments are process-wide.)

use cairn::{Node, RunOptions};
use cairn_engine::catalog::{EvictScope, KeyInputs};
use cairn_engine::clock::ManualClock;
use cairn_engine::schedule::{ScheduleSpec, Schedules, Trigger};
use cairn_engine::task::Task;
use cairn_engine::telemetry::{metrics, semconv as sc};
use cairn_tests::runtime::SharedStore;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, SdkMeterProvider};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Sums of a counter's points by the value of attribute `by`.
fn counter(all: &ResourceMetrics, name: &str, by: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for m in all.scope_metrics().flat_map(|s| s.metrics()) {
        if m.name() != name {
            continue;
        }
        if let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() {
            for p in sum.data_points() {
                let key = p
                    .attributes()
                    .find(|kv| kv.key.as_str() == by)
                    .map(|kv| kv.value.to_string())
                    .unwrap_or_default();
                *out.entry(key).or_default() += p.value();
            }
        }
    }
    out
}

fn histogram_count(all: &ResourceMetrics, name: &str) -> u64 {
    all.scope_metrics()
        .flat_map(|s| s.metrics())
        .filter(|m| m.name() == name)
        .map(|m| match m.data() {
            AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                h.data_points().map(|p| p.count()).sum()
            }
            _ => 0,
        })
        .sum()
}

fn up_down(all: &ResourceMetrics, name: &str) -> Option<i64> {
    all.scope_metrics()
        .flat_map(|s| s.metrics())
        .find(|m| m.name() == name)
        .map(|m| match m.data() {
            AggregatedMetrics::I64(MetricData::Sum(s)) => s.data_points().map(|p| p.value()).sum(),
            _ => i64::MIN,
        })
}

/// The examples' `square`, slow for 10: the test's two identical calls of `square(10)` must
/// overlap (one runs, the other joins it), also on a loaded machine.
#[cairn::task(cache = true, cache_version = "1.0", name = "square")]
async fn square(n: i64) -> i64 {
    if n == 10 {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    n * n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_histograms_add_up_after_a_known_workload() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_periodic_exporter(exporter.clone())
        .build();
    metrics::install(&provider.meter("cairn"));

    let shared = SharedStore::new().await;
    let node: Node = shared.node("metrics").task(square).start().await.unwrap();
    let opts = || RunOptions::new("metrics", "test");
    let three = |ctx: cairn::Ctx| async move {
        for n in 1..=3 {
            ctx.call(square, n).await.unwrap();
        }
    };
    node.run(opts(), three).await; // 3 Populated
    node.run(opts(), three).await; // 3 Hit
    let mut inputs = KeyInputs::new();
    inputs.add("n", &2i64).unwrap();
    let key = square.spec().cache_key("metrics", "test", inputs).unwrap();
    assert_eq!(
        node.catalog()
            .evict(&EvictScope::Key(key.digest))
            .await
            .unwrap(),
        1
    );
    node.run(opts(), three).await; // 1 Evicted, 2 Hit
    let report = node
        .run(opts(), |ctx| async move {
            // Two identical calls at once: one runs, the other joins it.
            let (a, b) = tokio::join!(ctx.call(square, 10), ctx.call(square, 10));
            (a.unwrap(), b.unwrap())
        })
        .await; // 1 Populated, 1 Waited
    assert_eq!(report.output, (100, 100));

    // Schedules: one instance, a manual clock, 5 s of 1 s ticks; the metric matches the state.
    let clock = ManualClock::new(0);
    let schedules = Schedules::new(shared.store.clone(), Arc::new(clock.clone()));
    let spec = ScheduleSpec::new(
        "every-second",
        "wf",
        Trigger::Every {
            period_ms: 1_000,
            anchor_ms: 0,
        },
    );
    schedules.register(&spec).await.unwrap();
    clock.advance(5_000);
    let me = cairn_engine::nodes::Incarnation {
        node: "metrics".into(),
        incarnation: 1,
    };
    let fired = schedules.poll_one("every-second", &me).await.unwrap();
    let runs = cairn_engine::runs::Runs::new(shared.store.clone(), Arc::new(clock.clone()));
    for f in &fired {
        let owner = f.run.owner.as_ref().unwrap();
        runs.finish(&f.run_id, owner, Ok("null".into()))
            .await
            .unwrap();
    }
    let state = schedules.get("every-second").await.unwrap().unwrap().state;

    provider.force_flush().unwrap();
    let exported = exporter.get_finished_metrics().unwrap();
    let last = exported.last().expect("metrics exported");
    let calls = counter(last, sc::METRIC_CALLS, sc::CACHE_STATUS);
    let expected: BTreeMap<String, u64> =
        [("Populated", 4), ("Hit", 5), ("Evicted", 1), ("Waited", 1)]
            .into_iter()
            .map(|(s, n)| (s.to_string(), n))
            .collect();
    assert_eq!(calls, expected);
    assert_eq!(
        counter(last, sc::METRIC_CALLS, sc::TASK),
        BTreeMap::from([("square".to_string(), 11)])
    );
    assert_eq!(histogram_count(last, sc::METRIC_CALL_DURATION), 11);
    assert_eq!(
        histogram_count(last, sc::METRIC_WAIT_DURATION),
        1,
        "the joined call waited"
    );
    assert_eq!(
        up_down(last, sc::METRIC_QUEUE_DEPTH),
        Some(0),
        "every queued job left the queue"
    );
    assert!(
        counter(last, sc::METRIC_LEASE_TAKEOVERS, "").is_empty(),
        "no takeover happened"
    );
    let ticks = counter(last, sc::METRIC_SCHEDULE_TICKS, sc::TICK_OUTCOME);
    assert_eq!(ticks.get("fired").copied().unwrap_or(0), state.fired);
    assert_eq!(ticks.get("missed").copied().unwrap_or(0), state.missed);
    assert!(state.fired + state.missed >= 1);

    node.shutdown().await.unwrap();
    metrics::uninstall();
}
