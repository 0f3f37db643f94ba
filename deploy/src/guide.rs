//! Worked examples of what users write against, each one a doctest that runs.
//!
//! # A task, with every option
//!
//! ```
//! use std::time::Duration;
//!
//! /// Every option of `#[cairn::task]`:
//! /// - `cache`: the output is stored, and identical later or concurrent calls get it;
//! /// - `cache_version`: part of the key (`"auto"` hashes the body's tokens); bump it to invalidate;
//! /// - `cache_ignore_inputs`: inputs left out of the key;
//! /// - `max_age`: older entries are misses;
//! /// - `timeout`, `retries`: per attempt, then retried on failure, panic or timeout;
//! /// - `lease_ttl`: how long a silent holder keeps the key before a waiter takes it over;
//! /// - `name`: the registered name (the function's by default).
//! #[cairn::task(
//!     cache = true,
//!     cache_version = "2",
//!     cache_ignore_inputs = ["verbose"],
//!     max_age = "1h",
//!     timeout = "30s",
//!     retries = 2,
//!     lease_ttl = "10s",
//!     name = "area"
//! )]
//! async fn rectangle_area(width: i64, height: i64, verbose: bool) -> i64 {
//!     if verbose {
//!         eprintln!("computing {width} × {height}");
//!     }
//!     width * height
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let node = cairn::Node::builder()
//!     .store_url(format!("embedded:{}", dir.path().display()))
//!     .task(rectangle_area)
//!     .start()
//!     .await?;
//! let options = cairn::RunOptions::new("docs", "development");
//! let first = node
//!     .run(options.clone(), |ctx| async move { ctx.call(rectangle_area, (3, 4, false)).await })
//!     .await;
//! assert_eq!(first.output?, 12);
//! // `verbose` is not part of the key: the same entry.
//! let second = node
//!     .run(options, |ctx| async move { ctx.call(rectangle_area, (3, 4, true)).await })
//!     .await;
//! assert_eq!(second.output?, 12);
//! assert_eq!(second.calls[0].status, cairn::CacheStatus::Hit);
//! # Ok(())
//! # }
//! ```
//!
//! # Custom cache hashing: `CacheHash` and `#[hashed]`
//!
//! A parameter marked `#[hashed]` enters the key through its type's [`crate::CacheHash`]
//! instead of its encoding (Flyte's `HashMethod`): here a document is keyed by its content, so
//! the same bytes under another path hit.
//!
//! ```
//! use cairn::{CacheHash, JsonSchema};
//!
//! #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, JsonSchema)]
//! struct Document {
//!     path: String,
//!     bytes: Vec<u8>,
//! }
//!
//! impl CacheHash for Document {
//!     fn cache_hash(&self) -> Vec<u8> {
//!         self.bytes.clone()
//!     }
//! }
//!
//! #[cairn::task(cache = true, cache_version = "1")]
//! async fn word_count(#[hashed] doc: Document) -> usize {
//!     String::from_utf8_lossy(&doc.bytes).split_whitespace().count()
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! let node = cairn::Node::builder()
//!     .store_url(format!("embedded:{}", dir.path().display()))
//!     .task(word_count)
//!     .start()
//!     .await?;
//! let doc = |path: &str| Document { path: path.into(), bytes: b"one two three".to_vec() };
//! let report = node
//!     .run(cairn::RunOptions::new("docs", "development"), |ctx| async move {
//!         let a = ctx.call(word_count, doc("/tmp/a.txt")).await?;
//!         let b = ctx.call(word_count, doc("/srv/b.txt")).await?; // same content: a hit
//!         Ok::<_, cairn::CallError>((a, b))
//!     })
//!     .await;
//! assert_eq!(report.output?, (3, 3));
//! assert_eq!(report.calls[1].status, cairn::CacheStatus::Hit);
//! # Ok(())
//! # }
//! ```
//!
//! # Calling tasks from a workflow: `Ctx::call`
//!
//! A workflow is an async function of a [`crate::Ctx`]. `ctx.call(task, input)` resolves the
//! call's key, runs the task or returns the stored output, and says which in the run's record.
//! Calls may run concurrently (futures), in a deterministic order of issue: a workflow started
//! by name is replayed after a node dies, and its calls must line up (see docs/semantics.md).
//!
//! ```
//! use futures::{StreamExt, TryStreamExt};
//!
//! #[cairn::task(cache = true, cache_version = "1")]
//! async fn square(n: i64) -> i64 {
//!     n * n
//! }
//!
//! async fn sum_of_squares(ctx: cairn::Ctx, n: i64) -> Result<i64, cairn::CallError> {
//!     // At most 16 calls in flight; each result in order of issue.
//!     let squares: Vec<i64> = futures::stream::iter(0..n)
//!         .map(|i| ctx.call(square, i))
//!         .buffered(16)
//!         .try_collect()
//!         .await?;
//!     Ok(squares.iter().sum())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! let node = cairn::Node::builder()
//!     .store_url(format!("embedded:{}", dir.path().display()))
//!     .task(square)
//!     .workflow("sum_of_squares", sum_of_squares)
//!     .start()
//!     .await?;
//! // In-process, not durable:
//! let report = node
//!     .run(cairn::RunOptions::new("docs", "development"), |ctx| sum_of_squares(ctx, 4))
//!     .await;
//! assert_eq!(report.output?, 14);
//! // By name, durable (what the API and the CLI start): every call is a hit now.
//! let started = node
//!     .submit(cairn::SubmitRun {
//!         workflow: "sum_of_squares".into(),
//!         input: serde_json::json!(4),
//!         options: cairn::RunOptions::new("docs", "development"),
//!         schedule: None,
//!         idempotency_key: None,
//!     })
//!     .await?;
//! # let _ = started;
//! # Ok(())
//! # }
//! ```
//!
//! # Schedules: `ScheduleSpec`
//!
//! A schedule fires a registered workflow on a cron expression (with a time zone) or a fixed
//! period; each tick is one run, claimed by exactly one node of those sharing the store.
//!
//! ```
//! use cairn::{CatchUp, Overlap, ScheduleSpec, ScheduledInput, Trigger};
//!
//! async fn nightly(_ctx: cairn::Ctx, input: ScheduledInput) -> Result<i64, String> {
//!     Ok(input.kickoff_ms)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! let mut spec = ScheduleSpec::new(
//!     "nightly-report",
//!     "nightly",
//!     Trigger::Cron { expr: "0 30 2 * * *".into(), tz: "Europe/Paris".into() },
//! );
//! spec.project = "reports".into();
//! spec.catch_up = CatchUp::LatestOnly; // after an outage, one run for the missed ticks
//! spec.overlap = Overlap::Skip; // never two at once
//! let node = cairn::Node::builder()
//!     .store_url(format!("embedded:{}", dir.path().display()))
//!     .workflow("nightly", nightly)
//!     .schedule(spec)
//!     .start()
//!     .await?;
//! let stored = node.schedules().get("nightly-report").await?.expect("registered");
//! assert!(stored.state.next_fire_ms > 0);
//! # Ok(())
//! # }
//! ```
//!
//! # Talking to a node: `client::Client`
//!
//! The typed client of a node's HTTP API, what the `cairn` CLI uses.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! # let node = std::sync::Arc::new(
//! #     cairn::examples::register(cairn::Node::builder())
//! #         .store_url(format!("embedded:{}", dir.path().display()))
//! #         .start()
//! #         .await?,
//! # );
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let server = cairn::api::ApiServer::start(
//! #     node.clone(),
//! #     std::sync::Arc::new(cairn::api::LocalOnly),
//! #     listener,
//! #     &Default::default(),
//! # ).map_err(anyhow::Error::msg)?;
//! # let url = format!("http://{}", server.addr());
//! use cairn::api::types::SubmitRunRequest;
//! use cairn::client::Client;
//! use std::time::Duration;
//!
//! let client = Client::new(&url, None); // a token for protected nodes
//! let run = client
//!     .submit(&SubmitRunRequest {
//!         workflow: "sum_of_squares".into(),
//!         input: serde_json::json!(3),
//!         project: "docs".into(),
//!         domain: "development".into(),
//!         overwrite_cache: false,
//!     })
//!     .await?;
//! let done = client.run(&run.run_id, Duration::from_secs(30)).await?;
//! assert_eq!(done.output, Some(serde_json::json!(5)));
//! # server.stop().await;
//! # Ok(())
//! # }
//! ```
