//! The workloads users write, measured the way they run: inside one run (`Node::run`), in a
//! fresh process, on the wall clock, every result checked. Issue 14's "before" figures.
//!
//! `cargo run --release -p cairn-benches --bin user-load -- [STORE_URL] [N]`
//! (default: a fresh embedded store, N = 10,000; with a PostgreSQL URL a fresh table).
//!
//! 1. a sequential loop of N cached calls in one run, cold, then again (all hits): calls/s and
//!    per-call latency p50/p99 measured around each `ctx.call`;
//! 2. a fan-out of N calls in one run (all in flight at once), cold, then again: calls/s;
//! 3. N identical concurrent calls of one key whose body takes 50 ms (`USER_LOAD_BODY_MS`; the
//!    bench says whether every call was made before the body returned): executions (must be 1) and
//!    the time from the body's return to the last caller's answer.
//!
//! `USER_LOAD_ONLY=sequential|fan-out|identical` runs one workload (for profiles: `perf record`
//! of a single workload); `USER_LOAD_HIT_ROUNDS=K` repeats the fan-out's hits round K times,
//! and `USER_LOAD_PAUSE_MS=M` pauses between its cold round and the first hits round.
//! `USER_LOAD_CONCURRENCY=C` sets the node's worker concurrency (default 64, the node's own).

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cairn::{CacheStatus, Ctx, RunOptions};
use cairn_engine::Store;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[cairn::task(cache = true, cache_version = "user-load")]
async fn square(n: i64) -> i64 {
    n * n
}

static SLOW_RUNS: AtomicUsize = AtomicUsize::new(0);
static BODY_RETURNED: Mutex<Option<Instant>> = Mutex::new(None);

/// How long `slow`'s body takes (`USER_LOAD_BODY_MS`, default 50 ms).
fn body_time() -> Duration {
    Duration::from_millis(env_number("USER_LOAD_BODY_MS").unwrap_or(50))
}

/// A number from the environment, if set (and a number).
fn env_number(var: &str) -> Option<u64> {
    std::env::var(var).ok().and_then(|v| v.parse().ok())
}

/// Takes [`body_time`]; records when its body returns.
#[cairn::task(cache = true, cache_version = "user-load")]
async fn slow(n: i64) -> i64 {
    SLOW_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(body_time()).await;
    *BODY_RETURNED.lock() = Some(Instant::now());
    n + 1
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The process's minor page faults so far (`/proc/self/stat`; 0 where there is none): a first
/// touch of memory the allocator has just taken from the kernel costs one each.
fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces), from the state (field 3):
            // minflt is field 10.
            let rest = &stat[stat.rfind(')')? + 2..];
            rest.split(' ').nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

async fn sequential(node: &cairn::Node, n: i64, round: &str) {
    let started = Instant::now();
    let report = node
        .run(
            RunOptions::new("bench", "user-load"),
            |ctx: Ctx| async move {
                let mut lat = Vec::with_capacity(n as usize);
                for i in 0..n {
                    let t = Instant::now();
                    let v = ctx.call(square, i).await.expect("call");
                    lat.push(t.elapsed());
                    assert_eq!(v, i * i);
                }
                lat
            },
        )
        .await;
    let wall = started.elapsed();
    let mut lat = report.output;
    lat.sort_unstable();
    println!(
        "sequential {round}: {n} calls in {:.3} s = {:.0} calls/s; per call p50 {}, p99 {}",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        us(percentile(&lat, 0.5)),
        us(percentile(&lat, 0.99))
    );
}

async fn fan_out(node: &cairn::Node, n: i64, round: &str, expect: CacheStatus) {
    let counters = node.catalog().store().counters();
    let (conflicts, retries) = (counters.conflicts(), counters.retries());
    let memo_hits = || {
        node.catalog()
            .store()
            .memo()
            .map_or(0, |memo| memo.counters().hits())
    };
    let recalled = memo_hits();
    let faults = minor_faults();
    let started = Instant::now();
    let report = node
        .run(
            RunOptions::new("bench", "user-load"),
            |ctx: Ctx| async move {
                let calls = (0..n).map(|i| {
                    let ctx = ctx.clone();
                    async move {
                        let v = ctx.call(square, i).await.expect("call");
                        (v, started.elapsed())
                    }
                });
                futures::future::join_all(calls).await
            },
        )
        .await;
    let wall = started.elapsed();
    let faults = minor_faults() - faults;
    assert!(
        report
            .output
            .iter()
            .enumerate()
            .all(|(i, (v, _))| *v == (i as i64) * (i as i64))
    );
    let mut done: Vec<Duration> = report.output.iter().map(|(_, at)| *at).collect();
    done.sort();
    let statuses = report.calls.iter().filter(|c| c.status == expect).count();
    println!(
        "fan-out {round}: {n} calls in {:.3} s = {:.0} calls/s ({statuses} {expect:?} of the \
         {} calls summarised); answered by first {}, p50 {}, p99 {}, last {}; store conflicts \
         {}, retries {}; from the store's memo {}; minor page faults {faults}",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        report.calls.len(),
        us(done[0]),
        us(percentile(&done, 0.5)),
        us(percentile(&done, 0.99)),
        us(*done.last().expect("calls")),
        counters.conflicts() - conflicts,
        counters.retries() - retries,
        memo_hits() - recalled,
    );
}

async fn identical(node: &cairn::Node, n: usize) {
    let report = node
        .run(
            RunOptions::new("bench", "user-load"),
            |ctx: Ctx| async move {
                let calls = (0..n).map(|_| {
                    let ctx = ctx.clone();
                    async move {
                        let issued = Instant::now();
                        let v = ctx.call(slow, 41).await.expect("call");
                        (v, issued, Instant::now())
                    }
                });
                futures::future::join_all(calls).await
            },
        )
        .await;
    let returned = BODY_RETURNED.lock().expect("the body ran");
    assert!(report.output.iter().all(|(v, _, _)| *v == 42));
    // When each caller heard back, from the body's return.
    let mut heard: Vec<Duration> = report
        .output
        .iter()
        .map(|(_, _, t)| t.saturating_duration_since(returned))
        .collect();
    heard.sort_unstable();
    // The measure holds only if every call was made before the body returned (else the last
    // answers wait for the workflow to make its calls, not for the engine).
    let issued = report.output.iter().map(|(_, t, _)| *t).max().unwrap();
    let margin = returned.checked_duration_since(issued).map_or_else(
        || {
            format!(
                "AFTER the body returned ({:.2} ms): raise USER_LOAD_BODY_MS",
                issued.duration_since(returned).as_secs_f64() * 1e3
            )
        },
        |d| format!("{:.2} ms before the body returned", d.as_secs_f64() * 1e3),
    );
    println!(
        "{n} identical concurrent calls: {} execution(s); from the body's return, the first \
         answer after {}, half of them after {:.2} ms, the last after {:.2} ms (the last call \
         made {margin})",
        SLOW_RUNS.load(Ordering::SeqCst),
        us(heard[0]),
        percentile(&heard, 0.5).as_secs_f64() * 1e3,
        heard[heard.len() - 1].as_secs_f64() * 1e3
    );
    assert_eq!(SLOW_RUNS.load(Ordering::SeqCst), 1, "one execution");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = match args.get(1).filter(|a| !a.is_empty()) {
        Some(url) if url.starts_with("postgres") => {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}table=user_{:08x}", rand::random::<u32>())
        }
        Some(url) => url.clone(),
        None => format!("embedded:{}", dir.path().display()),
    };
    let n: i64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rt = cairn_benches::runtime();
    rt.block_on(async {
        let node = cairn::Node::builder()
            .store_url(&store)
            .task(square)
            .task(slow)
            .call_limits(cairn::CallLimits {
                max_in_flight: n as usize,
                ..Default::default()
            })
            .concurrency(env_number("USER_LOAD_CONCURRENCY").map_or(64, |c| c as usize))
            .start()
            .await
            .expect("node");
        println!("store: {}", cairn_engine::store::redact(&store));
        let only = std::env::var("USER_LOAD_ONLY").ok();
        let run = |w: &str| only.as_deref().is_none_or(|o| o.split(',').any(|o| o == w));
        if run("sequential") {
            sequential(&node, n, "cold").await;
            sequential(&node, n, "hits").await;
        }
        if run("fan-out") {
            fan_out_offset(&node, n, run("sequential")).await;
        }
        if run("identical") {
            identical(&node, n as usize).await;
        }
        node.shutdown().await.expect("shutdown");
    });
}

/// The fan-out over keys the sequential rounds did not touch: cold, then hits.
async fn fan_out_offset(node: &cairn::Node, n: i64, after_sequential: bool) {
    // `square` keys 0..n may be hits already (from the sequential rounds); a second task version
    // would need another task, so the cold round evicts them first (a real eviction, through the
    // catalog): its calls are `Evicted` or, when the sequential rounds did not run, `Populated`.
    node.catalog()
        .evict(&cairn_engine::catalog::EvictScope::Task {
            project: "bench".into(),
            domain: "user-load".into(),
            task: "square".into(),
            version: None,
        })
        .await
        .expect("evict");
    let cold = if after_sequential {
        CacheStatus::Evicted
    } else {
        CacheStatus::Populated
    };
    fan_out(node, n, "cold", cold).await;
    if let Some(ms) = env_number("USER_LOAD_PAUSE_MS") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    // More hits rounds in one process (default 1), for profiles.
    for _ in 0..env_number("USER_LOAD_HIT_ROUNDS").unwrap_or(1) {
        fan_out(node, n, "hits", CacheStatus::Hit).await;
    }
}
