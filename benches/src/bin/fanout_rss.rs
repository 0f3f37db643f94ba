//! Peak memory of a run that fans out over N cached calls, in a fresh process:
//! `cargo run --release -p cairn-benches --bin fanout-rss -- 1000000 [STORE_URL]` (default: a
//! fresh embedded store; with a PostgreSQL URL the store's memory is another process's, so the
//! figure is the engine's alone).
//!
//! The run is started by name (recorded, durable) on a node over a fresh embedded store; its
//! workflow issues the calls as a stream with a bounded number in flight and sums the outputs
//! without keeping them. Prints the calls per second and the process's peak RSS (VmHWM), which
//! must not grow with N: the run's in-flight bound, the records written in batches, and no
//! per-call summaries kept for durable runs are what keep it flat.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cairn::{CallError, Ctx};
use futures::{StreamExt, TryStreamExt};
use std::time::Instant;

/// `square(n)`, cached.
#[cairn::task(cache = true, cache_version = "rss")]
async fn square(n: i64) -> i64 {
    n * n
}

/// Sums `square(0..n)` with at most 4,096 calls in flight, keeping nothing per call.
async fn fan(ctx: Ctx, n: i64) -> Result<i64, CallError> {
    futures::stream::iter(0..n)
        .map(|i| {
            let ctx = ctx.clone();
            async move { ctx.call(square, i).await }
        })
        .buffered(4_096)
        .try_fold(0i64, |acc, s| async move { Ok(acc.wrapping_add(s)) })
        .await
}

/// Peak and current resident set size of this process, in MiB.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn main() {
    let n: i64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let rt = cairn_benches::runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = std::env::args()
        .nth(2)
        .map(|url| {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}table=rss_{:08x}", rand::random::<u32>())
        })
        .unwrap_or_else(|| format!("embedded:{}", dir.path().display()));
    rt.block_on(async {
        let node = cairn::Node::builder()
            .store_url(&store)
            .task(square)
            .workflow("fan", fan)
            .start()
            .await
            .expect("node");
        let (peak_before, _) = rss_mib();
        let started = Instant::now();
        let run = node
            .submit(cairn::SubmitRun {
                workflow: "fan".into(),
                input: serde_json::json!(n),
                options: cairn::RunOptions::new("bench", "rss"),
                schedule: None,
                idempotency_key: None,
            })
            .await
            .expect("submit");
        let record = run.finished.await.expect("run task").expect("run end");
        let elapsed = started.elapsed();
        let expected: i64 = (0..n).fold(0i64, |acc, i| acc.wrapping_add(i * i));
        assert_eq!(
            record.output.and_then(|o| o.text),
            Some(expected.to_string()),
            "{:?}",
            record.error
        );
        let (peak, now) = rss_mib();
        println!(
            "{} fan-out of {n} cached calls in one run: {:.1} s, {:.0} calls/s; peak RSS {peak:.0} MiB \
             (before the run {peak_before:.0} MiB, at the end {now:.0} MiB)",
            store.split(':').next().unwrap_or_default(),
            elapsed.as_secs_f64(),
            n as f64 / elapsed.as_secs_f64()
        );
        node.shutdown().await.expect("shutdown");
    });
}
