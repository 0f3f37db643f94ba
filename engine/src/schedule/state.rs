//! What the store keeps about each schedule (`(SCHEDULE, name)`) and each fired tick
//! (`(TICK, name, tick)`).

use super::spec::ScheduleSpec;
use serde::{Deserialize, Serialize};

/// A schedule's state; survives restarts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ScheduleState {
    /// The next tick to fire (Unix ms).
    pub next_fire_ms: i64,
    /// Paused: ticks pass as missed.
    pub paused: bool,
    /// Runs fired and not yet finished.
    pub running: u32,
    /// A tick held back by `Overlap::BufferOne`.
    pub buffered: Option<i64>,
    /// Ticks fired (including backfills).
    pub fired: u64,
    /// Ticks passed over (downtime beyond the catch-up policy, or paused).
    pub missed: u64,
    /// Ticks skipped for overlap.
    pub skipped_overlap: u64,
    /// Runs that ended in an error.
    pub failed: u64,
    /// Sum and maximum of how late runs were fired after their tick (ms).
    pub late_ms_total: u64,
    /// The latest fire's lateness (ms).
    pub late_ms_max: u64,
    /// The last tick fired.
    pub last_tick_ms: Option<i64>,
    /// Past ticks queued by a backfill, fired by the next poll of any instance.
    #[serde(default)]
    pub pending_backfill: Vec<i64>,
    /// The last poll that fired ticks: its operation id and the ticks it claimed, so that a
    /// poll retried after "maybe committed" returns what its first attempt fired.
    #[serde(default)]
    pub last_poll: Option<LastPoll>,
}

/// A poll's operation id and the ticks it fired.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LastPoll {
    /// Random per poll.
    pub op: u64,
    /// The ticks it claimed (backfilled and live).
    pub ticks: Vec<i64>,
}

/// A schedule as stored: its spec (so the CLI can list it) and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// The spec, as last registered.
    pub spec: ScheduleSpec,
    /// The state.
    pub state: ScheduleState,
}

/// One fired tick: written in the transaction that claims it, so it fires once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickRecord {
    /// The run started for it.
    pub run_id: String,
    /// The scheduler instance that fired it.
    pub instance: String,
    /// When it fired (Unix ms).
    pub fired_at_ms: i64,
    /// A backfill rather than the live schedule.
    pub backfill: bool,
    /// `None` while running; then `Ok` or the error.
    pub outcome: Option<Result<(), String>>,
    /// The run of the buffered tick fired by this tick's end, so that an end retried after
    /// "maybe committed" finds the run its first attempt started.
    #[serde(default)]
    pub next_run: Option<String>,
    /// The poll that fired this tick (its operation id), so that a poll retried after "maybe
    /// committed" recognises the ticks its first attempt claimed.
    #[serde(default)]
    pub poll: Option<u64>,
}
