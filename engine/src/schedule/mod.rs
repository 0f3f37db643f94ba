//! Schedules: workflows fired on cron or fixed-rate triggers, exactly once per tick however many
//! scheduler instances run, without a leader.
//!
//! Each schedule's state (next fire time, counters, runs in flight) is one store record. An
//! instance fires a tick by advancing that record past it *and* writing the tick's record in the
//! same serializable transaction; instances racing for the same tick conflict, and the losers
//! retry and find the record already advanced. The decisions (catch-up after downtime, overlap,
//! pause) are a pure function ([`plan::step`]) of the spec, the state and the time.
//!
//! A fired tick *is* a run: the transaction that claims the tick also creates the run's record
//! (see [`crate::runs`]), owned by the claiming node. If that node dies, another takes the run
//! over; the run's end records the tick's outcome and updates the schedule in one transaction,
//! so a tick neither stays running forever nor is counted twice.

pub mod plan;
mod spec;
mod state;
mod table;

pub use spec::{CatchUp, Overlap, ScheduleSpec, Trigger};
pub use state::{LastPoll, ScheduleRecord, ScheduleState, TickRecord};
pub use table::{BACKFILL_SLICE, Fire, MAX_BACKFILL, ScheduledInput, Schedules};
pub(crate) use table::{run_ended_in, run_started_by_end};
