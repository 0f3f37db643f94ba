//! `cairn runs`: lists runs, shows one, cancels one.

use super::run::{duration_ms, print_run};
use super::{Remote, client, show};
use crate::api::types::*;
use std::time::Duration;

/// `cairn runs`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(in crate::cli) struct RunsArgs {
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

pub(in crate::cli) async fn runs(args: RunsArgs) -> u8 {
    if let Some(RunsAction::Cancel { run_id, remote }) = &args.action {
        let c = match client(remote) {
            Ok(c) => c,
            Err(code) => return code,
        };
        return show(remote, c.cancel(run_id).await, |r| {
            println!("{} {:?}", r.run_id, r.status)
        });
    }
    let c = match client(&args.remote) {
        Ok(c) => c,
        Err(code) => return code,
    };
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
