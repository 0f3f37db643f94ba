//! Where a job's report goes: a callback, so a scheduler gets the report as one of its own
//! messages without a task waiting for it. A report that is never sent (the pool stopped, the
//! job was dropped) is sent as [`TaskError::WorkerLost`] when the `ReportTo` is dropped, so no
//! caller waits forever.

use cairn_engine::AnyStore;
use cairn_engine::catalog::{Catalog, Lease};
use cairn_engine::task::JobReport;
use std::time::Duration;

/// How long the report of a lost job waits for its lease to be given up (see
/// [`give_up_then`]); past that, the store is out of reach and the lease is given up once it
/// answers, or expires after its TTL.
const GIVE_UP_GRACE: Duration = Duration::from_secs(2);

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

/// Gives up `lease`, the lease of a job that was lost (its worker or pool died), with `error`,
/// then calls `report`. Ordered this way so that whoever hears of the loss finds the lease
/// already given up: the key's next caller runs the job, where it would otherwise find the
/// lost job's lease still held, wait for it, and (for a task without retries) be answered with
/// the lost job's error. `report` waits at most two seconds for the store; it is called
/// at once outside a runtime.
pub fn give_up_then(
    catalog: Catalog<AnyStore>,
    lease: Lease,
    error: String,
    report: impl FnOnce() + Send + 'static,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        report();
        return;
    };
    runtime.spawn(async move {
        let mut giving_up = tokio::spawn(async move {
            if let Err(e) = catalog.fail(&lease, &error).await {
                tracing::warn!(error = %e, "could not give up the lease of a lost job; it expires after its TTL");
            }
        });
        if tokio::time::timeout(GIVE_UP_GRACE, &mut giving_up)
            .await
            .is_err()
        {
            tracing::warn!("the lease of a lost job is not given up yet (the store is slow or out of reach); reporting the loss anyway");
        }
        report();
    });
}

#[cfg(test)]
mod tests {
    use super::give_up_then;
    use cairn_engine::AnyStore;
    use cairn_engine::catalog::{
        CacheKey, Catalog, KeyInputs, Resolution, ResolveRequest, TaskSignature, TypeDesc,
    };
    use cairn_engine::store::memory::MemoryStore;
    use std::time::Duration;

    fn request<'a>(key: &'a CacheKey, execution: &'a str) -> ResolveRequest<'a> {
        ResolveRequest {
            key,
            owner: "test-node",
            execution,
            lease_ttl: Duration::from_secs(3600),
            max_age: None,
            overwrite: false,
            takeover: None,
            trace: None,
        }
    }

    /// The loss of a job is reported only once its lease is given up: a caller told of the
    /// loss who calls again acquires the lease at once (and runs the job), instead of finding
    /// the lost job's lease still held.
    #[tokio::test]
    async fn a_lost_jobs_lease_is_given_up_before_the_loss_is_reported() {
        let catalog = Catalog::new(AnyStore::from(MemoryStore::new(7)));
        let signature =
            TaskSignature::new("t", TypeDesc::of::<i64>()).input("n", TypeDesc::of::<i64>());
        let mut inputs = KeyInputs::new();
        inputs.add("n", &1i64).unwrap();
        let key = CacheKey::new("p", "d", &signature, "1", &inputs).unwrap();
        let Resolution::Acquired(lease) = catalog.resolve(&request(&key, "e-1")).await.unwrap()
        else {
            panic!("a fresh key's lease is acquired");
        };
        let (reported, heard) = tokio::sync::oneshot::channel();
        give_up_then(
            catalog.clone(),
            lease,
            "worker lost: gone".into(),
            move || {
                let _ = reported.send(());
            },
        );
        heard.await.unwrap();
        match catalog.resolve(&request(&key, "e-2")).await.unwrap() {
            Resolution::Acquired(lease) => {
                assert_eq!(lease.previous_failure.as_deref(), Some("worker lost: gone"));
            }
            other => panic!("the lost job's lease is still held when its loss is heard: {other:?}"),
        }
    }
}
