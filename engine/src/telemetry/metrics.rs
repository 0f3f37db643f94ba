//! Cairn's metric instruments (names in [`super::semconv`]). Nothing is recorded until
//! [`install`] is given a meter; until then every recording function returns after one relaxed
//! atomic load.

use super::semconv as sc;
use crate::catalog::CacheStatus;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, UpDownCounter};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

static ENABLED: AtomicBool = AtomicBool::new(false);
static INSTRUMENTS: RwLock<Option<Arc<Instruments>>> = RwLock::new(None);

struct Instruments {
    calls: Counter<u64>,
    call_duration: Histogram<f64>,
    wait_duration: Histogram<f64>,
    takeovers: Counter<u64>,
    queue_depth: UpDownCounter<i64>,
    schedule_ticks: Counter<u64>,
    expired: Counter<u64>,
}

/// Creates the instruments with `meter` and starts recording.
pub fn install(meter: &Meter) {
    let instruments = Instruments {
        calls: meter
            .u64_counter(sc::METRIC_CALLS)
            .with_description("Task calls answered, by cache status")
            .build(),
        call_duration: meter
            .f64_histogram(sc::METRIC_CALL_DURATION)
            .with_unit("s")
            .with_description("Task call latency, submission to answer")
            .with_boundaries(sc::DURATION_BUCKETS.to_vec())
            .build(),
        wait_duration: meter
            .f64_histogram(sc::METRIC_WAIT_DURATION)
            .with_unit("s")
            .with_description("Time calls waited behind another execution's lease")
            .with_boundaries(sc::DURATION_BUCKETS.to_vec())
            .build(),
        takeovers: meter
            .u64_counter(sc::METRIC_LEASE_TAKEOVERS)
            .with_description("Leases taken over from a silent holder")
            .build(),
        queue_depth: meter
            .i64_up_down_counter(sc::METRIC_QUEUE_DEPTH)
            .with_description("Jobs queued for a worker")
            .build(),
        schedule_ticks: meter
            .u64_counter(sc::METRIC_SCHEDULE_TICKS)
            .with_description("Schedule ticks fired or missed")
            .build(),
        expired: meter
            .u64_counter(sc::METRIC_EXPIRED)
            .with_description("Expired cache entries removed by the expiry collector")
            .build(),
    };
    *INSTRUMENTS.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(instruments));
    ENABLED.store(true, Ordering::Release);
}

/// Stops recording (the instruments are dropped).
pub fn uninstall() {
    ENABLED.store(false, Ordering::Release);
    *INSTRUMENTS.write().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Whether metrics are being recorded: a caller about to record many values (the answers of a
/// call's 10,000 followers, say) skips computing them when not.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn with(f: impl FnOnce(&Instruments)) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let guard = INSTRUMENTS.read().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = guard.as_ref() {
        f(i);
    }
}

/// A call was answered with `status` after `duration`, `waited` of which behind a lease.
pub fn call_answered(
    task: &Arc<str>,
    status: CacheStatus,
    duration: Duration,
    waited: Option<Duration>,
) {
    with(|i| {
        let attrs = [
            KeyValue::new(sc::CACHE_STATUS, format!("{status:?}")),
            // The task name is shared, not copied, per call.
            KeyValue::new(sc::TASK, Arc::clone(task)),
        ];
        i.calls.add(1, &attrs);
        i.call_duration.record(duration.as_secs_f64(), &attrs[..1]);
        if let Some(w) = waited {
            i.wait_duration.record(w.as_secs_f64(), &[]);
        }
    });
}

/// The expiry collector removed `n` entries.
pub fn expired_collected(n: u64) {
    if n > 0 {
        with(|i| i.expired.add(n, &[]));
    }
}

/// A lease was taken over from a silent holder.
pub fn lease_taken_over() {
    with(|i| i.takeovers.add(1, &[]));
}

/// Jobs entered (`+n`) or left (`-n`) a worker queue.
pub fn queue_changed(delta: i64) {
    with(|i| i.queue_depth.add(delta, &[]));
}

/// A schedule fired or missed ticks.
pub fn schedule_ticks(schedule: &str, fired: u64, missed: u64) {
    with(|i| {
        for (outcome, n) in [("fired", fired), ("missed", missed)] {
            if n > 0 {
                i.schedule_ticks.add(
                    n,
                    &[
                        KeyValue::new(sc::SCHEDULE, schedule.to_string()),
                        KeyValue::new(sc::TICK_OUTCOME, outcome),
                    ],
                );
            }
        }
    });
}
