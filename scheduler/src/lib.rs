//! Cairn's schedulers: every task call passes through one. A scheduler resolves the call's cache
//! key against the store *before* anything runs, shares one resolution among identical calls in
//! flight (single flight), waits behind another execution's lease when there is one, and
//! dispatches a job to a worker only when it holds the lease.
//!
//! - [`machine`]: the scheduling decisions as a pure state machine (input → actions), tested
//!   without actors, stores or time.
//! - [`actor`]: the scheduler actor, which performs the machine's actions.
//! - [`SchedulerHandle`]: how callers submit calls (sharded over several scheduler actors).
//! - [`workflow`]: [`Ctx`], the context workflows call tasks through.
//! - [`registry`]: workflows by name, with their input and output types erased to JSON.
//! - [`launch`]: starting and recording runs of workflows by name (API, CLI, schedules).
//! - [`schedules`]: the loop that fires scheduled workflows.
//! - [`keeper`]: node liveness, takeover of runs whose node is gone, cancellation notices.

// Every dependency of the library is used by it (the lint runs per target; tests and
// benchmarks have their own dev-dependencies).
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod actor;
mod follow;
mod handle;
pub mod keeper;
pub mod launch;
pub mod machine;
pub mod registry;
pub mod schedules;
mod summaries;
mod supervise;
pub mod workflow;

pub use actor::{CallRequest, CallResult};
pub use handle::SchedulerHandle;
pub use keeper::{KeeperConfig, RunKeeper};
pub use launch::{LaunchConfig, Launcher, Started, SubmitError, SubmitRun};
pub use registry::{Workflow, WorkflowRegistry};
pub use schedules::{ScheduleRunner, ScheduledInput};
pub use workflow::{CallError, CallLimits, CallSummary, Ctx, Durability, PastCall, RunOptions};
