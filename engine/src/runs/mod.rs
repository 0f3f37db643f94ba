//! Runs started by name (through the API, the CLI or a schedule), durable across the death of
//! the node running them.
//!
//! A run record says what was asked (workflow, input, project, domain), who owns the run now
//! (a node incarnation and a fencing generation), every attempt so far, and how it ended. The
//! calls a run made are its execution records ([`crate::catalog::Catalog::run_executions`]).
//!
//! - A run is created owned by the node that accepted it ([`Runs::create`], idempotent with an
//!   `Idempotency-Key`), or by the node that fired its schedule tick, in the same transaction
//!   as the tick.
//! - While it runs, its row in the active-run index names its owner. When the owner's
//!   incarnation is gone (restarted, stopped, or silent for its TTL), a live node takes the run
//!   over ([`Runs::take_over`]: generation + 1, a new attempt) and runs the workflow again from
//!   the start; the run's journal and the cache make the replay repeat no work.
//! - It ends once ([`Runs::finish`], [`Runs::cancel`]): the first end wins, and an owner whose
//!   generation was taken over can never end it. A scheduled run's end updates its tick and
//!   schedule in the same transaction.
//! - Inputs, outputs and errors live beside the record when large ([`RunLimits`]).

mod cancellations;
mod record;
mod table;
mod text;

pub use cancellations::Cancellations;
pub use record::{
    CancelNotice, Idempotency, IdempotencyRecord, NewRun, RunAttempt, RunOwner, RunRecord,
    RunStatus, RunText, RunTick,
};
pub use table::{Collected, Created, Ended, RunFilter, RunLimits, RunPage, Runs};
pub(crate) use table::{insert_in, read_run_in};
