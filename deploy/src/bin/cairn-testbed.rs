//! `cairn-testbed`: the `cairn` binary with the examples plus fixtures the process tests drive
//! (tasks that log when they start and end, so a test can count executions across kills, and
//! workflows shaped for kills, replays, cancellation and store outages). Not installed by the
//! deployment files; `cargo test` builds it for `deploy/tests/`.

use cairn::{CallError, Ctx};
use std::io::Write;
use std::time::Duration;

/// Appends `line` to the file at `log` (one `write` per line, so concurrent tasks, even in
/// different processes, never interleave within a line).
fn log_line(log: &str, line: &str) {
    if log.is_empty() {
        return;
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

/// A cached square that logs `start square n` and `end square n`.
#[cairn::task(cache = true, cache_version = "1", lease_ttl = "3s")]
async fn logged_square(n: i64, delay_ms: u64, log: String) -> i64 {
    log_line(&log, &format!("start square {n}"));
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    log_line(&log, &format!("end square {n}"));
    n * n
}

/// An uncached task with a side effect: logs `start note n` and `end note n`.
#[cairn::task(lease_ttl = "3s")]
async fn logged_note(n: i64, delay_ms: u64, log: String) -> i64 {
    log_line(&log, &format!("start note {n}"));
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    log_line(&log, &format!("end note {n}"));
    n
}

/// [`logged_square`] with the default 30 s lease.
#[cairn::task(cache = true, cache_version = "1", lease_ttl = "30s")]
async fn logged_square_long(n: i64, delay_ms: u64, log: String) -> i64 {
    logged_square::run(n, delay_ms, log).await
}

/// [`logged_note`] with the default 30 s lease.
#[cairn::task(lease_ttl = "30s")]
async fn logged_note_long(n: i64, delay_ms: u64, log: String) -> i64 {
    logged_note::run(n, delay_ms, log).await
}

/// Input of `waves`.
#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Waves {
    /// Waves, one after the other.
    waves: i64,
    /// Cached calls per wave (all at once).
    cached: i64,
    /// Uncached calls per wave (at once, with the cached ones).
    uncached: i64,
    /// How long each call sleeps.
    delay_ms: u64,
    /// The log file.
    log: String,
    /// Tasks with the default 30 s lease instead of 3 s.
    #[serde(default)]
    long_lease: bool,
}

/// One call of a logging task, short or long lease.
async fn call<S, L>(
    ctx: &Ctx,
    short: S,
    long: L,
    long_lease: bool,
    input: (i64, u64, String),
) -> Result<i64, CallError>
where
    S: cairn::Task<Input = (i64, u64, String), Output = i64>,
    L: cairn::Task<Input = (i64, u64, String), Output = i64>,
{
    if long_lease {
        ctx.call(long, input).await
    } else {
        ctx.call(short, input).await
    }
}

/// Waves of concurrent cached and uncached calls; returns the sum of every result.
async fn waves(ctx: Ctx, w: Waves) -> Result<i64, CallError> {
    let mut total = 0;
    for wave in 0..w.waves {
        let cached =
            futures::future::try_join_all(
                (0..w.cached).map(|i| {
                    let (ctx, log) = (ctx.clone(), w.log.clone());
                    let input = (wave * w.cached + i, w.delay_ms, log);
                    async move {
                        call(&ctx, logged_square, logged_square_long, w.long_lease, input).await
                    }
                }),
            );
        let uncached = futures::future::try_join_all((0..w.uncached).map(|i| {
            let (ctx, log) = (ctx.clone(), w.log.clone());
            let input = (wave * w.uncached + i, w.delay_ms, log);
            async move { call(&ctx, logged_note, logged_note_long, w.long_lease, input).await }
        }));
        let (a, b) = futures::future::try_join(cached, uncached).await?;
        total += a.iter().sum::<i64>() + b.iter().sum::<i64>();
    }
    Ok(total)
}

/// Input of `replay_probe`.
#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Probe {
    /// When this file exists, the first call is a different one (a nondeterministic workflow).
    marker: String,
    /// How long the second call sleeps.
    delay_ms: u64,
    /// The log file.
    log: String,
}

/// Calls `logged_note(0)`, or `logged_note(1000)` once `marker` exists, then a slow call.
async fn replay_probe(ctx: Ctx, p: Probe) -> Result<i64, CallError> {
    let first = if std::path::Path::new(&p.marker).exists() {
        1_000
    } else {
        0
    };
    let a = ctx.call(logged_note, (first, 0, p.log.clone())).await?;
    let b = ctx.call(logged_note, (1, p.delay_ms, p.log)).await?;
    Ok(a + b)
}

/// A cached task whose entries live one second.
#[cairn::task(cache = true, cache_version = "1", max_age = "1s")]
async fn short_lived(n: i64) -> i64 {
    n + 1
}

/// Calls `short_lived(0..n)`.
async fn short_lived_fan(ctx: Ctx, n: i64) -> Result<i64, CallError> {
    let out = futures::future::try_join_all((0..n).map(|i| {
        let ctx = ctx.clone();
        async move { ctx.call(short_lived, i).await }
    }))
    .await?;
    Ok(out.iter().sum())
}

/// Sleeps `ms` and returns it (a run with no calls, ending when the test wants).
async fn sleepy(_ctx: Ctx, ms: u64) -> Result<u64, String> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(ms)
}

/// Returns its input.
async fn echo(_ctx: Ctx, text: String) -> Result<String, String> {
    Ok(text)
}

fn main() -> std::process::ExitCode {
    cairn::cli::main(|node| {
        cairn::examples::register(node)
            .task(logged_square)
            .task(logged_note)
            .task(logged_square_long)
            .task(logged_note_long)
            .task(short_lived)
            .workflow("short_lived", short_lived_fan)
            .workflow("waves", waves)
            .workflow("replay_probe", replay_probe)
            .workflow("sleepy", sleepy)
            .workflow("echo", echo)
    })
}
