//! Which runs this process has heard are cancelled: workers abort those runs' jobs, and the
//! launcher stops their workflows. Filled from the store's cancellation notices (every node
//! hears every cancellation), kept in memory, bounded.

use crate::det::Set;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::Notify;

/// Most cancelled run ids remembered; the oldest are forgotten first (their jobs ended long
/// ago).
const REMEMBERED: usize = 100_000;

#[derive(Default)]
struct Inner {
    runs: Mutex<(Set<String>, VecDeque<String>)>,
    notify: Notify,
}

/// Cancelled runs, shared by a node's workers and launcher. Cheap to clone.
#[derive(Clone, Default)]
pub struct Cancellations {
    inner: Arc<Inner>,
}

impl Cancellations {
    /// Records that `run` is cancelled and wakes everything waiting on it.
    pub fn cancel(&self, run: &str) {
        {
            let mut guard = self.inner.runs.lock();
            let (set, order) = &mut *guard;
            if set.insert(run.to_string()) {
                order.push_back(run.to_string());
                if order.len() > REMEMBERED
                    && let Some(old) = order.pop_front()
                {
                    set.remove(&old);
                }
            }
        }
        self.inner.notify.notify_waiters();
    }

    /// Whether `run` is cancelled.
    pub fn is_cancelled(&self, run: &str) -> bool {
        self.inner.runs.lock().0.contains(run)
    }

    /// Resolves once `run` is cancelled.
    pub async fn cancelled(&self, run: &str) {
        loop {
            let notified = self.inner.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a cancel in between still wakes us.
            notified.as_mut().enable();
            if self.is_cancelled(run) {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_waiter_wakes_when_its_run_is_cancelled_and_not_before() {
        let c = Cancellations::default();
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.cancelled("r1").await }
        });
        c.cancel("r2");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "another run's cancellation");
        c.cancel("r1");
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert!(c.is_cancelled("r1") && !c.is_cancelled("r3"));
    }
}
