//! The quickstart's tasks and workflows: the seed's `square`, a fan-out, a failing task and a
//! slow task called by many runs at once.

use crate::{CallError, Ctx};
use std::time::Duration;

/// The seed's example: calling `square(n=2)` twice, in any run, multiplies once.
#[cairn::task(cache = true, cache_version = "1.0")]
pub async fn square(n: i64) -> i64 {
    n * n
}

/// Adds numbers up.
#[cairn::task(cache = true, cache_version = "1.0")]
pub async fn total(values: Vec<i64>) -> i64 {
    values.iter().sum()
}

/// Fails for negative inputs; failures are never cached, so a fixed input runs again.
#[cairn::task(cache = true, cache_version = "1.0")]
pub async fn integer_sqrt(n: i64) -> Result<i64, String> {
    if n < 0 {
        return Err(format!("{n} has no real square root"));
    }
    Ok((n as f64).sqrt().floor() as i64)
}

/// A slow task: many runs asking for the same report at once share one execution.
#[cairn::task(cache = true, cache_version = "1.0", timeout = "30s")]
pub async fn daily_report(day: String) -> String {
    tokio::time::sleep(Duration::from_millis(300)).await;
    format!("report for {day}: all systems nominal")
}

/// A scheduled workflow: every tick squares the same inputs, so after the first tick every call
/// is a cache hit.
pub async fn squares_report(ctx: Ctx, input: crate::ScheduledInput) -> Result<(), String> {
    let inputs: Vec<i64> = if input.input.is_empty() {
        vec![2, 3, 4]
    } else {
        rmp_serde_input(&input.input)?
    };
    let squares = futures::future::try_join_all(inputs.into_iter().map(|n| {
        let ctx = ctx.clone();
        async move { ctx.call(square, n).await }
    }))
    .await
    .map_err(|e| e.to_string())?;
    ctx.call(total, squares)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

fn rmp_serde_input(bytes: &[u8]) -> Result<Vec<i64>, String> {
    cairn_engine::catalog::records::decode(|| "the schedule's input".into(), bytes)
        .map_err(|e| e.to_string())
}

/// The largest `n` [`sum_of_squares`] takes.
pub const MAX_SUM_OF_SQUARES: i64 = 1_000_000;

/// Why [`sum_of_squares`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SumError {
    /// `n` is out of range.
    #[error("n = {0} is out of range: sum_of_squares takes 0 to {MAX_SUM_OF_SQUARES}")]
    OutOfRange(i64),
    /// A call failed.
    #[error(transparent)]
    Call(#[from] CallError),
}

/// Fans `square` out over `0..n` (at most 1,024 calls in flight, issued in order, so memory
/// stays bounded however large `n` is) and adds the results up.
pub async fn sum_of_squares(ctx: Ctx, n: i64) -> Result<i64, SumError> {
    use futures::{StreamExt, TryStreamExt};
    if !(0..=MAX_SUM_OF_SQUARES).contains(&n) {
        return Err(SumError::OutOfRange(n));
    }
    let squares: Vec<i64> = futures::stream::iter(0..n)
        .map(|i| {
            let ctx = ctx.clone();
            async move { ctx.call(square, i).await }
        })
        .buffered(1_024)
        .try_collect()
        .await?;
    Ok(ctx.call(total, squares).await?)
}

/// A slow cacheable square, for runs that take a while (its lease is short, so a node that
/// dies running it is taken over within seconds).
#[cairn::task(cache = true, cache_version = "1.0", lease_ttl = "3s")]
pub async fn slow_square(n: i64, delay_ms: u64) -> i64 {
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    n * n
}

/// Input of [`fan_out`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FanOut {
    /// Calls `slow_square(i, delay_ms)` for `i` in `0..n`.
    pub n: i64,
    /// How long each call sleeps.
    #[serde(default)]
    pub delay_ms: u64,
}

/// Fans `slow_square` out over `0..n` and adds the results up.
pub async fn fan_out(ctx: Ctx, input: FanOut) -> Result<i64, CallError> {
    let squares = futures::future::try_join_all((0..input.n).map(|i| {
        let ctx = ctx.clone();
        async move { ctx.call(slow_square, (i, input.delay_ms)).await }
    }))
    .await?;
    ctx.call(total, squares).await
}

/// Calls `daily_report(day)`.
pub async fn report_of(ctx: Ctx, day: String) -> Result<String, CallError> {
    ctx.call(daily_report, day).await
}

/// Registers every example task and workflow on `node` (what `cairn up` serves).
pub fn register(node: crate::NodeBuilder) -> crate::NodeBuilder {
    node.task(square)
        .task(total)
        .task(integer_sqrt)
        .task(daily_report)
        .task(slow_square)
        .workflow("sum_of_squares", sum_of_squares)
        .workflow("fan_out", fan_out)
        .workflow("daily_report", report_of)
        .workflow("squares_report", squares_report)
        .workflow("integer_sqrt", |ctx: Ctx, n: i64| async move {
            ctx.call(integer_sqrt, n).await
        })
}
