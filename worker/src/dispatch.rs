//! Where schedulers send jobs: anything that runs a job somewhere and reports back exactly once.
//! A node on its own dispatches to its [`WorkerPoolHandle`]; a node in a cluster dispatches
//! through `cairn::cluster`, which picks a worker node (this one or a remote one).

use crate::handle::WorkerPoolHandle;
use crate::report::ReportTo;
use cairn_engine::task::Job;

/// Runs jobs and reports each exactly once (a dropped [`ReportTo`] reports the job as lost).
pub trait Dispatch: Send + Sync + 'static {
    /// Hands `job` over; never blocks.
    fn submit(&self, job: Job, report: ReportTo);
}

impl Dispatch for WorkerPoolHandle {
    fn submit(&self, job: Job, report: ReportTo) {
        WorkerPoolHandle::submit(self, job, report);
    }
}
