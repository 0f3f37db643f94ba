//! What a scheduler sends a worker and what comes back. Both are plain serializable data (they
//! cross nodes in a cluster).

use crate::catalog::{CacheKey, CacheStatus, Lease};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a task produced no output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskError {
    /// The task returned an error.
    Failed {
        /// Its message.
        message: String,
    },
    /// The task panicked.
    Panicked {
        /// The panic message.
        message: String,
    },
    /// An attempt ran longer than the task's timeout.
    TimedOut {
        /// The timeout in milliseconds.
        after_ms: u64,
    },
    /// The input bytes do not decode as the task's input type.
    BadInput {
        /// What failed to decode.
        detail: String,
    },
    /// No task of this name is registered on the worker's node.
    UnknownTask {
        /// The name.
        name: String,
    },
    /// The worker running the task was lost (crashed, or its node left).
    WorkerLost {
        /// What happened.
        detail: String,
    },
    /// The engine itself failed around the task (the store, a lost actor).
    Engine {
        /// What failed.
        detail: String,
    },
    /// The run the call belongs to was cancelled.
    Cancelled {
        /// The run.
        run: String,
    },
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Failed { message } => write!(f, "task failed: {message}"),
            TaskError::Panicked { message } => write!(f, "task panicked: {message}"),
            TaskError::TimedOut { after_ms } => write!(f, "task timed out after {after_ms} ms"),
            TaskError::BadInput { detail } => write!(f, "bad task input: {detail}"),
            TaskError::UnknownTask { name } => write!(f, "unknown task {name:?}"),
            TaskError::WorkerLost { detail } => write!(f, "worker lost: {detail}"),
            TaskError::Engine { detail } => write!(f, "engine error: {detail}"),
            TaskError::Cancelled { run } => write!(f, "run {run} was cancelled"),
        }
    }
}

impl std::error::Error for TaskError {}

/// The bytes a journal entry keeps: the call's outcome, output or error.
pub fn encode_outcome(outcome: &Result<Vec<u8>, TaskError>) -> Vec<u8> {
    // Plain data: encoding cannot fail.
    rmp_serde::to_vec_named(outcome).unwrap_or_default()
}

/// Decodes a journal entry written by [`encode_outcome`]; bytes that do not decode are an
/// engine error naming the journal.
pub fn decode_outcome(bytes: &[u8]) -> Result<Result<Vec<u8>, TaskError>, TaskError> {
    rmp_serde::from_slice(bytes).map_err(|e| TaskError::Engine {
        detail: format!("a journal entry does not decode: {e}"),
    })
}

impl TaskError {
    /// Whether this is the task's own outcome (what it returned, how it failed), as opposed
    /// to something that happened around it (a lost worker, an unknown task, the engine, a
    /// cancellation): only outcomes are journaled.
    pub fn is_outcome(&self) -> bool {
        matches!(
            self,
            TaskError::Failed { .. }
                | TaskError::Panicked { .. }
                | TaskError::TimedOut { .. }
                | TaskError::BadInput { .. }
        )
    }

    /// Whether another attempt could succeed (the task's own failures, panics and timeouts are
    /// retried per its `retries`; a bad input or an unknown task never succeeds).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TaskError::Failed { .. }
                | TaskError::Panicked { .. }
                | TaskError::TimedOut { .. }
                | TaskError::WorkerLost { .. }
        )
    }
}

/// The cache side of a job: the key and the lease the job runs under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCache {
    /// The key to store the output under.
    pub key: CacheKey,
    /// The lease acquired by the scheduler.
    pub lease: Lease,
}

/// One execution of a task, sent by a scheduler to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The execution id (also the lease's execution for cached jobs).
    pub execution: String,
    /// The task name.
    pub task: String,
    /// The input, MessagePack of the task's input type.
    pub input: Vec<u8>,
    /// For cacheable tasks: where to commit.
    pub cache: Option<JobCache>,
    /// The run this job belongs to.
    pub run: Option<String>,
    /// W3C `traceparent` of the call span that dispatched it (so the execute span, on any
    /// node, is its child); `None` when tracing export is off.
    #[serde(default)]
    pub trace: Option<String>,
}

/// What a worker reports for a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReport {
    /// The output (MessagePack of the task's output type) or why there is none.
    pub output: Result<Vec<u8>, TaskError>,
    /// Populated, Skipped, Evicted, Hit (another execution stored first), Miss, PutFailure, or
    /// Disabled for uncached jobs.
    pub status: CacheStatus,
    /// Attempts made (0: the body never ran).
    pub attempts: u32,
    /// Why the output could not be stored (with status `PutFailure`), e.g. its size and the
    /// limit.
    #[serde(default)]
    pub cache_error: Option<String>,
}

impl JobReport {
    /// The report of a job that never ran to a report (its worker, pool or node was lost);
    /// `cached` says whether it ran under a lease.
    pub fn lost(cached: bool, detail: impl Into<String>) -> JobReport {
        JobReport {
            output: Err(TaskError::WorkerLost {
                detail: detail.into(),
            }),
            status: if cached {
                CacheStatus::Miss
            } else {
                CacheStatus::Disabled
            },
            attempts: 0,
            cache_error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Digest, KeyInputs, TaskSignature, TypeDesc};
    use std::time::Duration;

    /// Jobs and reports cross nodes: they must survive MessagePack unchanged.
    #[test]
    fn jobs_and_reports_round_trip_through_messagepack() {
        let sig =
            TaskSignature::new("square", TypeDesc::of::<i64>()).input("n", TypeDesc::of::<i64>());
        let mut inputs = KeyInputs::new();
        inputs.add("n", &3).unwrap();
        let key = CacheKey::new("p", "d", &sig, "1.0", &inputs).unwrap();
        let job = Job {
            execution: "e-1".into(),
            task: "square".into(),
            input: rmp_serde::to_vec(&3i64).unwrap(),
            cache: Some(JobCache {
                key: key.clone(),
                lease: Lease {
                    digest: key.digest,
                    owner: "node-a".into(),
                    incarnation: 2,
                    execution: "e-1".into(),
                    generation: 4,
                    ttl: Duration::from_secs(30),
                    overwrite: false,
                    evicted: true,
                    previous_failure: Some("boom".into()),
                    took_over: false,
                    replaces_corrupt: None,
                },
            }),
            run: Some("run-1".into()),
            trace: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        };
        let bytes = rmp_serde::to_vec_named(&job).unwrap();
        assert_eq!(rmp_serde::from_slice::<Job>(&bytes).unwrap(), job);
        for output in [Ok(vec![1, 2, 3]), Err(TaskError::TimedOut { after_ms: 50 })] {
            let report = JobReport {
                output,
                status: CacheStatus::Populated,
                attempts: 2,
                cache_error: None,
            };
            let bytes = rmp_serde::to_vec_named(&report).unwrap();
            assert_eq!(rmp_serde::from_slice::<JobReport>(&bytes).unwrap(), report);
        }
        assert_ne!(key.digest, Digest(0));
    }

    proptest::proptest! {
        /// Jobs and reports arrive from other nodes: any bytes decode to a value or an error,
        /// never a panic; and a valid job with bytes flipped still never panics.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = rmp_serde::from_slice::<Job>(&bytes);
            let _ = rmp_serde::from_slice::<JobReport>(&bytes);
        }

        #[test]
        fn corrupted_jobs_never_panic(flips in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 1..8)) {
            let job = Job {
                execution: "e-1".into(),
                task: "square".into(),
                input: rmp_serde::to_vec(&3i64).unwrap(),
                cache: None,
                run: Some("run-1".into()),
                trace: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            };
            let mut bytes = rmp_serde::to_vec_named(&job).unwrap();
            for (at, b) in flips {
                let n = bytes.len();
                bytes[at % n] = b;
            }
            let _ = rmp_serde::from_slice::<Job>(&bytes);
        }
    }
}
