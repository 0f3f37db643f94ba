//! Where a job's report goes: a callback, so a scheduler gets the report as one of its own
//! messages without a task waiting for it. A report that is never sent (the pool stopped, the
//! job was dropped) is sent as [`TaskError::WorkerLost`] when the `ReportTo` is dropped, so no
//! caller waits forever.

use cairn_engine::task::JobReport;

/// The destination of one job's report.
pub struct ReportTo {
    deliver: Option<Box<dyn FnOnce(JobReport) + Send>>,
    cached: bool,
}

impl ReportTo {
    /// Calls `deliver` with the report. `cached` says whether the job ran under a lease (for
    /// the status of a lost job).
    pub fn new(cached: bool, deliver: impl FnOnce(JobReport) + Send + 'static) -> Self {
        ReportTo {
            deliver: Some(Box::new(deliver)),
            cached,
        }
    }

    /// Delivers the report.
    pub fn send(mut self, report: JobReport) {
        if let Some(deliver) = self.deliver.take() {
            deliver(report);
        }
    }
}

impl Drop for ReportTo {
    fn drop(&mut self) {
        if let Some(deliver) = self.deliver.take() {
            deliver(JobReport::lost(
                self.cached,
                "the worker pool dropped the job",
            ));
        }
    }
}
