//! `cairn run`: submits a run (with an idempotency key) and waits for it, retrying through
//! restarts and dropped connections.

use super::{Remote, client, fail, parse_json, show};
use crate::api::types::*;
use crate::client::{ClientError, exit};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// `cairn run`.
#[derive(clap::Args)]
pub(in crate::cli) struct RunArgs {
    /// The workflow.
    workflow: String,
    /// Its input, as JSON.
    #[arg(long, default_value = "null", allow_hyphen_values = true)]
    input: String,
    /// The project: entries and runs are never shared across projects.
    #[arg(long, default_value = "default")]
    project: String,
    /// The domain (development, staging, production…): never shared across domains.
    #[arg(long, default_value = "development")]
    domain: String,
    /// Re-execute every cacheable task and replace its entry.
    #[arg(long)]
    overwrite_cache: bool,
    /// Print the run id and return without waiting.
    #[arg(long)]
    detach: bool,
    /// Idempotency key of the submission [default: a fresh one, so this command's own retries
    /// never start a second run].
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Give up waiting after this long (e.g. 90s, 30m); the run goes on. Exit 5.
    #[arg(long, value_parser = crate::config::parse_duration)]
    timeout: Option<Duration>,
    #[command(flatten)]
    remote: Remote,
}

/// Retries `attempt` while the node is unreachable or unavailable, with backoff and a line on
/// stderr, until `deadline`.
async fn retrying<T, F, Fut>(
    what: &str,
    deadline: Option<Instant>,
    mut attempt: F,
) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut backoff = Duration::from_millis(250);
    loop {
        match attempt().await {
            Err(e) if e.is_transient() && deadline.is_none_or(|d| Instant::now() + backoff < d) => {
                eprintln!("{what}: {e}; retrying in {backoff:.1?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            other => return other,
        }
    }
}

pub(in crate::cli) async fn run(args: RunArgs) -> u8 {
    let input = match parse_json("--input", &args.input) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let c = match client(&args.remote) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let deadline = args.timeout.map(|t| Instant::now() + t);
    let req = SubmitRunRequest {
        workflow: args.workflow,
        input,
        project: args.project,
        domain: args.domain,
        overwrite_cache: args.overwrite_cache,
    };
    let key = args
        .idempotency_key
        .unwrap_or_else(|| format!("cli-{:032x}", rand::random::<u128>()));
    let started = match retrying("submitting the run", deadline, || {
        c.submit_idempotent(&req, &key)
    })
    .await
    {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if args.detach {
        return show(&args.remote, Ok(started), |s| println!("{}", s.run_id));
    }
    let tty = std::io::stderr().is_terminal() && !args.remote.json;
    let clock = Instant::now();
    // Polls with counts only (a run may make thousands of calls), then fetches the calls once.
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            eprintln!(
                "error: run {} has not ended after {:.1?}; it goes on (cairn runs {} shows it)",
                started.run_id,
                clock.elapsed(),
                started.run_id
            );
            return exit::UNAVAILABLE;
        }
        let wait = deadline.map_or(Duration::from_secs(1), |d| {
            d.saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1))
        });
        match retrying("waiting for the run", deadline, || {
            c.run_with(&started.run_id, wait, false)
        })
        .await
        {
            Err(e) => return fail(&e),
            Ok(d) if d.run.status != RunStatus::Running => break,
            Ok(d) => {
                if tty {
                    eprint!(
                        "\r\x1b[2K{} running {:.1?} · {} calls: {}",
                        d.run.run_id,
                        clock.elapsed(),
                        d.counts.values().sum::<u64>(),
                        counts(&d)
                    );
                    let _ = std::io::stderr().flush();
                }
            }
        }
    }
    let detail = match retrying("reading the run", deadline, || {
        c.run(&started.run_id, Duration::ZERO)
    })
    .await
    {
        Ok(d) => d,
        Err(e) => return fail(&e),
    };
    if tty {
        eprint!("\r\x1b[2K");
    }
    let failed = matches!(detail.run.status, RunStatus::Failed | RunStatus::Cancelled);
    let code = show(&args.remote, Ok(detail), print_run);
    if code == exit::OK && failed {
        exit::FAILED
    } else {
        code
    }
}

fn counts(d: &RunDetail) -> String {
    d.counts
        .iter()
        .map(|(s, n)| format!("{n} {s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn duration_ms(start: i64, end: Option<i64>) -> String {
    end.map(|e| format!("{} ms", e - start))
        .unwrap_or_else(|| "-".into())
}

pub(super) fn print_run(d: &RunDetail) {
    let r = &d.run;
    println!("run       {}", r.run_id);
    println!("workflow  {} ({}/{})", r.workflow, r.project, r.domain);
    println!("status    {:?}", r.status);
    println!("node      {}", r.node);
    println!(
        "duration  {}",
        duration_ms(r.started_at_ms, r.finished_at_ms)
    );
    if let Some(s) = &r.schedule {
        println!("schedule  {s}");
    }
    if let Some(out) = &d.output {
        println!("output    {out}");
    } else if let Some(bytes) = d.output_bytes {
        println!("output    ({bytes} bytes of JSON, too large to keep)");
    }
    if let Some(e) = &d.error {
        println!("error     {e}");
    }
    if d.attempt_list.len() > 1 {
        println!("attempts  {}", d.attempt_list.len());
        for a in &d.attempt_list {
            println!(
                "  #{} on {} (incarnation {}) at {} ms{}",
                a.attempt,
                a.node,
                a.incarnation,
                a.started_at_ms,
                a.reason
                    .as_deref()
                    .map(|r| format!(": took over because {r}"))
                    .unwrap_or_default()
            );
        }
    }
    println!("calls     {} ({})", d.calls.len(), counts(d));
    // The first calls, and how many there are: `--json` lists them all.
    const SHOWN: usize = 20;
    {
        for c in d.calls.iter().take(SHOWN) {
            println!(
                "  {:<16} {:<14} {:>10.3} ms{}",
                c.task,
                format!("{:?}", c.status),
                c.duration_us as f64 / 1000.0,
                c.error
                    .as_deref()
                    .or(c.cache_error.as_deref())
                    .map(|e| format!("  error: {e}"))
                    .unwrap_or_default()
            );
        }
        if d.calls.len() > SHOWN {
            println!(
                "  ({SHOWN} of {} calls shown; --json lists them all)",
                d.calls.len()
            );
        }
    }
}
