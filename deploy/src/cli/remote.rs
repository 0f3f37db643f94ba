//! Commands that talk to a running node through its HTTP API: human tables by default, the
//! node's JSON with `--json`, and exit codes from [`crate::client::exit`].

use super::Remote;
use crate::api::types::*;
use crate::client::{Client, ClientError, exit};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

fn client(r: &Remote) -> Client {
    // `--node 127.0.0.1:7070` means http://127.0.0.1:7070.
    let node = if r.node.contains("://") {
        r.node.clone()
    } else {
        format!("http://{}", r.node)
    };
    Client::new(&node, r.token.clone())
}

/// Prints `value` as JSON or with `human`, or the error; returns the exit code.
fn show<T: Serialize>(r: &Remote, result: Result<T, ClientError>, human: impl FnOnce(&T)) -> u8 {
    match result {
        Ok(value) => {
            if r.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                );
            } else {
                human(&value);
            }
            exit::OK
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &ClientError) -> u8 {
    eprintln!("error: {e}");
    e.exit_code()
}

fn parse_json(what: &str, text: &str) -> Result<serde_json::Value, u8> {
    serde_json::from_str(text).map_err(|e| {
        eprintln!("error: {what} is not valid JSON: {e}");
        exit::INVALID
    })
}

/// Only the node options.
#[derive(clap::Args)]
pub(super) struct Plain {
    #[command(flatten)]
    remote: Remote,
}

/// `cairn run`.
#[derive(clap::Args)]
pub(super) struct RunArgs {
    /// The workflow.
    workflow: String,
    /// Its input, as JSON.
    #[arg(long, default_value = "null", allow_hyphen_values = true)]
    input: String,
    /// Project.
    #[arg(long, default_value = "default")]
    project: String,
    /// Domain.
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

pub(super) async fn run(args: RunArgs) -> u8 {
    let input = match parse_json("--input", &args.input) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let c = client(&args.remote);
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

fn duration_ms(start: i64, end: Option<i64>) -> String {
    end.map(|e| format!("{} ms", e - start))
        .unwrap_or_else(|| "-".into())
}

fn print_run(d: &RunDetail) {
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

/// `cairn runs`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(super) struct RunsArgs {
    #[command(subcommand)]
    action: Option<RunsAction>,
    /// Show this run with its calls instead of listing.
    run_id: Option<String>,
    /// Only this workflow.
    #[arg(long)]
    workflow: Option<String>,
    /// Only this project.
    #[arg(long)]
    project: Option<String>,
    /// Only this domain.
    #[arg(long)]
    domain: Option<String>,
    /// Only runs in this state: running, succeeded, failed, cancelled.
    #[arg(long, value_parser = parse_status)]
    status: Option<RunStatus>,
    /// Only runs fired by this schedule.
    #[arg(long)]
    schedule: Option<String>,
    /// Page size.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Cursor from a previous page.
    #[arg(long)]
    cursor: Option<String>,
    #[command(flatten)]
    remote: Remote,
}

#[derive(clap::Subcommand)]
enum RunsAction {
    /// Cancels a run: it ends as cancelled, makes no new call, and its running tasks are
    /// aborted.
    Cancel {
        /// The run.
        run_id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

fn parse_status(s: &str) -> Result<RunStatus, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("{s:?} is not one of running, succeeded, failed, cancelled"))
}

pub(super) async fn runs(args: RunsArgs) -> u8 {
    if let Some(RunsAction::Cancel { run_id, remote }) = &args.action {
        let c = client(remote);
        return show(remote, c.cancel(run_id).await, |r| {
            println!("{} {:?}", r.run_id, r.status)
        });
    }
    let c = client(&args.remote);
    if let Some(id) = &args.run_id {
        return show(&args.remote, c.run(id, Duration::ZERO).await, print_run);
    }
    let q = RunsQuery {
        workflow: args.workflow,
        project: args.project,
        domain: args.domain,
        status: args.status,
        schedule: args.schedule,
        limit: Some(args.limit),
        cursor: args.cursor,
    };
    show(&args.remote, c.runs(&q).await, |page| {
        println!(
            "{:<40} {:<18} {:<10} {:<12} {:>10}",
            "run", "workflow", "status", "node", "duration"
        );
        for r in &page.runs {
            println!(
                "{:<40} {:<18} {:<10} {:<12} {:>10}",
                r.run_id,
                r.workflow,
                format!("{:?}", r.status),
                r.node,
                duration_ms(r.started_at_ms, r.finished_at_ms)
            );
        }
        if let Some(next) = &page.next {
            println!("more: --cursor {next}");
        }
    })
}

/// `cairn cache`.
#[derive(clap::Args)]
pub(super) struct CacheArgs {
    #[command(subcommand)]
    action: CacheAction,
    #[command(flatten)]
    remote: Remote,
}

#[derive(clap::Subcommand)]
enum CacheAction {
    /// Lists entries of a project and domain (optionally one task and version).
    Ls {
        /// Project.
        #[arg(long, default_value = "default")]
        project: String,
        /// Domain.
        #[arg(long, default_value = "development")]
        domain: String,
        /// Only this task.
        #[arg(long)]
        task: Option<String>,
        /// Only this cache version (with --task).
        #[arg(long, requires = "task")]
        version: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Cursor from a previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Shows one entry with its output.
    Show {
        /// The cache key (hex).
        key: String,
    },
    /// Evicts entries: one key, a task (and version), a project/domain, or an execution's.
    Evict {
        /// One key (hex).
        #[arg(long, conflicts_with_all = ["task", "execution", "all"])]
        key: Option<String>,
        /// Every entry of this task (in --project/--domain).
        #[arg(long, conflicts_with_all = ["execution", "all"])]
        task: Option<String>,
        /// Only this cache version of --task.
        #[arg(long, requires = "task")]
        version: Option<String>,
        /// Every entry this execution produced.
        #[arg(long, conflicts_with = "all")]
        execution: Option<String>,
        /// Every entry of --project/--domain.
        #[arg(long)]
        all: bool,
        /// Project.
        #[arg(long, default_value = "default")]
        project: String,
        /// Domain.
        #[arg(long, default_value = "development")]
        domain: String,
    },
    /// Reads back every entry and checks it; reports the corrupt ones (and removes them with
    /// --repair).
    Verify {
        /// Only this task's entries.
        #[arg(long)]
        task: Option<String>,
        /// Remove the corrupt entries found.
        #[arg(long)]
        repair: bool,
        /// Project.
        #[arg(long, default_value = "default")]
        project: String,
        /// Domain.
        #[arg(long, default_value = "development")]
        domain: String,
    },
    /// Explains whether a task call would hit, and what differs from the nearest entries.
    Explain {
        /// The task.
        task: String,
        /// Its input as JSON: an object of the inputs by name, or the input value.
        #[arg(long, allow_hyphen_values = true)]
        input: String,
        /// Project.
        #[arg(long, default_value = "default")]
        project: String,
        /// Domain.
        #[arg(long, default_value = "development")]
        domain: String,
    },
}

pub(super) async fn cache(args: CacheArgs) -> u8 {
    let c = client(&args.remote);
    let r = &args.remote;
    match args.action {
        CacheAction::Ls {
            project,
            domain,
            task,
            version,
            limit,
            cursor,
        } => {
            let q = EntriesQuery {
                project: Some(project),
                domain: Some(domain),
                task,
                version,
                limit: Some(limit),
                cursor,
            };
            show(r, c.entries(&q).await, |page| {
                println!(
                    "{:<32} {:<16} {:<8} {:>9} {:<24}",
                    "key", "task", "version", "bytes", "execution"
                );
                for e in &page.entries {
                    println!(
                        "{:<32} {:<16} {:<8} {:>9} {:<24}",
                        e.key, e.task, e.version, e.size, e.execution
                    );
                }
                if let Some(next) = &page.next {
                    println!("more: --cursor {next}");
                }
            })
        }
        CacheAction::Show { key } => show(r, c.entry(&key).await, |d| {
            let e = &d.entry;
            println!("key        {}", e.key);
            println!("task       {} version {}", e.task, e.version);
            println!("project    {}/{}", e.project, e.domain);
            println!("signature  {}", e.signature);
            for (name, digest) in &e.inputs {
                println!("input      {name} = {digest}");
            }
            println!("stored at  {} ms by {}", e.created_at_ms, e.execution);
            println!("size       {} bytes", e.size);
            match &d.output {
                Some(v) => println!("output     {v}"),
                None => println!("output     (task not registered on this node)"),
            }
        }),
        CacheAction::Evict {
            key,
            task,
            version,
            execution,
            all,
            project,
            domain,
        } => {
            let req = match (key, task, execution, all) {
                (Some(key), ..) => EvictRequest::Key { key },
                (_, Some(task), ..) => EvictRequest::Task {
                    project,
                    domain,
                    task,
                    version,
                },
                (_, _, Some(execution), _) => EvictRequest::Execution { execution },
                (.., true) => EvictRequest::ProjectDomain { project, domain },
                _ => {
                    eprintln!("error: say what to evict: --key, --task, --execution or --all");
                    return exit::INVALID;
                }
            };
            show(r, c.evict(&req).await, |res| {
                println!(
                    "evicted {} entr{}",
                    res.evicted,
                    if res.evicted == 1 { "y" } else { "ies" }
                )
            })
        }
        CacheAction::Verify {
            task,
            repair,
            project,
            domain,
        } => {
            let req = VerifyRequest {
                project,
                domain,
                task,
                repair,
            };
            let result = c.verify(&req).await;
            let found = result
                .as_ref()
                .is_ok_and(|v| !v.corrupt.is_empty() && !repair);
            let code = show(r, result, |v| {
                println!(
                    "checked {} entries: {} corrupt{}",
                    v.checked,
                    v.corrupt.len(),
                    if repair {
                        format!(", {} removed", v.repaired)
                    } else {
                        String::new()
                    }
                );
                for e in &v.corrupt {
                    println!("  {}: {}", e.key, e.detail);
                }
            });
            // Corrupt entries left in place are a failure a script can see.
            if code == exit::OK && found {
                exit::FAILED
            } else {
                code
            }
        }
        CacheAction::Explain {
            task,
            input,
            project,
            domain,
        } => {
            let input = match parse_json("--input", &input) {
                Ok(v) => v,
                Err(code) => return code,
            };
            let req = ExplainRequest {
                task,
                input,
                project,
                domain,
            };
            show(r, c.explain(&req).await, |e| {
                println!("key      {}", e.key);
                match e.verdict.as_str() {
                    "hit" => println!("verdict  hit: an entry is stored under this key"),
                    "evicted" => println!(
                        "verdict  miss: the entry was evicted ({})",
                        e.reason.as_deref().unwrap_or("")
                    ),
                    "corrupt" => println!(
                        "verdict  miss: the stored entry is corrupt ({}); the next call replaces it",
                        e.reason.as_deref().unwrap_or("")
                    ),
                    _ if e.nearest.is_empty() => println!(
                        "verdict  miss: no entry of this task in this project/domain ({} compared)",
                        e.compared
                    ),
                    _ => {
                        println!(
                            "verdict  miss; {} of {} stored entr{} differ{} least:",
                            e.tied,
                            e.compared,
                            if e.compared == 1 { "y" } else { "ies" },
                            if e.tied == 1 { "s" } else { "" }
                        );
                        for d in &e.nearest {
                            println!("  {}: {}", d.entry, d.summary.join("; "));
                        }
                        if e.tied > e.nearest.len() {
                            println!("  … and {} more like these", e.tied - e.nearest.len());
                        }
                    }
                }
            })
        }
    }
}

/// `cairn schedules`.
#[derive(clap::Args)]
pub(super) struct SchedulesArgs {
    #[command(subcommand)]
    action: Option<ScheduleAction>,
    #[command(flatten)]
    remote: Remote,
}

#[derive(clap::Subcommand)]
enum ScheduleAction {
    /// Every schedule with its state and counters (the default).
    Ls,
    /// Pauses a schedule: its ticks pass as missed.
    Pause {
        /// The schedule.
        name: String,
    },
    /// Resumes a schedule from now on.
    Resume {
        /// The schedule.
        name: String,
    },
    /// Queues the unfired ticks of a time range; the next node polling the schedule runs them.
    Backfill {
        /// The schedule.
        name: String,
        /// Start of the range (Unix ms, inclusive).
        #[arg(long)]
        from_ms: i64,
        /// End of the range (Unix ms, inclusive).
        #[arg(long)]
        to_ms: i64,
    },
}

fn print_schedules(list: &[ScheduleInfo]) {
    println!(
        "{:<22} {:<16} {:<18} {:<7} {:>15} {:>6} {:>6} {:>7} {:>6}",
        "schedule",
        "workflow",
        "trigger",
        "paused",
        "next fire (ms)",
        "fired",
        "missed",
        "overlap",
        "failed"
    );
    for s in list {
        println!(
            "{:<22} {:<16} {:<18} {:<7} {:>15} {:>6} {:>6} {:>7} {:>6}",
            s.name,
            s.workflow,
            s.trigger,
            s.paused,
            s.next_fire_ms,
            s.fired,
            s.missed,
            s.skipped_overlap,
            s.failed
        );
    }
}

pub(super) async fn schedules(args: SchedulesArgs) -> u8 {
    let c = client(&args.remote);
    let r = &args.remote;
    match args.action.unwrap_or(ScheduleAction::Ls) {
        ScheduleAction::Ls => show(r, c.schedules().await, |l| print_schedules(l)),
        ScheduleAction::Pause { name } => {
            show(r, c.pause(&name).await, |s| println!("paused {}", s.name))
        }
        ScheduleAction::Resume { name } => show(r, c.resume(&name).await, |s| {
            println!("resumed {}; next fire at {} ms", s.name, s.next_fire_ms)
        }),
        ScheduleAction::Backfill {
            name,
            from_ms,
            to_ms,
        } => show(
            r,
            c.backfill(&name, &BackfillRequest { from_ms, to_ms }).await,
            |b| println!("queued {} tick(s) of {name}", b.queued),
        ),
    }
}

pub(super) async fn workflows(args: Plain) -> u8 {
    let c = client(&args.remote);
    show(&args.remote, c.workflows().await, |list| {
        for w in list {
            println!("{}  input: {}", w.name, w.input_schema);
        }
    })
}

pub(super) async fn nodes(args: Plain) -> u8 {
    let c = client(&args.remote);
    show(&args.remote, c.nodes().await, |list| {
        println!(
            "{:<24} {:<20} {:>11} {:>6} {:>7} {:>9}",
            "node", "roles", "concurrency", "busy", "queued", "executed"
        );
        for n in list.iter().filter(|n| n.joined) {
            println!(
                "{:<24} {:<20} {:>11} {:>6} {:>7} {:>9}",
                format!("{}{}", n.name, if n.local { " *" } else { "" }),
                n.roles.join(","),
                n.concurrency,
                n.busy,
                n.queued,
                n.executed
            );
        }
        for n in list.iter().filter(|n| !n.joined) {
            println!(
                "{:<24} not joined: {}",
                n.name,
                n.problem.as_deref().unwrap_or("not reachable yet")
            );
        }
    })
}

pub(super) async fn openapi(args: Plain) -> u8 {
    let c = client(&args.remote);
    match c.openapi().await {
        Ok(doc) => {
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            exit::OK
        }
        Err(e) => fail(&e),
    }
}
