//! Cairn's workers: they run task bodies and write their outputs back through the catalog.
//!
//! - [`mod@execute`]: one job from start to report: keep the lease beating (through the
//!   catalog's beater), run the task with its timeout and retries, catch panics, then commit the output (or fail the lease at once).
//!   Its halves, [`run`] and [`Settling::settle`], let a worker hand the commit over.
//! - [`pool`]: the worker pool actor, which supervises one [`worker`] actor per unit of
//!   concurrency, queues jobs while all are busy, and replaces a worker that dies, releasing or
//!   retrying its job per the task's policy. A worker runs a job's body; where commits wait for
//!   the store (a server's round trip, a disk sync: `Store::commits_wait`) it hands the commit
//!   to the pool, which makes it on a task of its own (up to 256 at once), so the pool's
//!   concurrency bounds task bodies, not commits waiting for their group. Elsewhere, and when
//!   256 are in flight, the worker commits itself.
//! - [`WorkerPoolHandle`]: how schedulers hand jobs to a pool; the pool is supervised
//!   (`supervise.rs`): a pool that dies is replaced, its jobs reported lost.

// Every dependency of the library is used by it (the lint runs per target; tests and
// benchmarks have their own dev-dependencies).
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

mod death;
mod dispatch;
pub mod execute;
mod handle;
pub mod pool;
mod report;
mod supervise;
pub mod worker;

pub use death::death;
pub use dispatch::Dispatch;
pub use execute::{Context, Ran, Settling, execute, run};
pub use handle::WorkerPoolHandle;
pub use pool::{BusyWorker, PoolOptions, PoolStatus};
pub use report::{ReportTo, give_up_then};
