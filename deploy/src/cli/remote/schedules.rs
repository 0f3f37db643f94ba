//! `cairn schedules`: lists, pauses, resumes and backfills schedules.

use super::{Remote, client, show};
use crate::api::types::*;

/// `cairn schedules`.
#[derive(clap::Args)]
pub(in crate::cli) struct SchedulesArgs {
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

pub(in crate::cli) async fn schedules(args: SchedulesArgs) -> u8 {
    let c = match client(&args.remote) {
        Ok(c) => c,
        Err(code) => return code,
    };
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
