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
}
