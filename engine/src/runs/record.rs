//! What the run table stores about a run: what was asked, who owns it now, every attempt, and
//! how it ended.

use crate::nodes::Incarnation;
use serde::{Deserialize, Serialize};

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The workflow is running (or waiting to be resumed by a live node).
    Running,
    /// The workflow returned an output.
    Succeeded,
    /// The workflow returned an error or panicked.
    Failed,
    /// Someone cancelled it.
    Cancelled,
}

impl RunStatus {
    /// Whether the run has ended.
    pub fn is_final(self) -> bool {
        self != RunStatus::Running
    }
}

/// Which node incarnation runs a run, under which fencing generation. Every takeover bumps the
/// generation; only the owner of the current generation can end the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOwner {
    /// The node's name.
    pub node: String,
    /// Its incarnation.
    pub incarnation: u64,
    /// The run's generation under this owner.
    pub generation: u64,
}

impl RunOwner {
    /// The owning incarnation.
    pub fn incarnation(&self) -> Incarnation {
        Incarnation {
            node: self.node.clone(),
            incarnation: self.incarnation,
        }
    }
}

/// One attempt at running a run's workflow: the first start, then each takeover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAttempt {
    /// 1 for the first.
    pub attempt: u32,
    /// The node that ran it.
    pub node: String,
    /// Its incarnation.
    pub incarnation: u64,
    /// When it started (Unix ms, on that node's clock).
    pub started_at_ms: i64,
    /// Why the previous attempt was taken over (`None` for the first).
    pub reason: Option<String>,
}

/// A run's input, output or error: JSON (or message) text, kept inline in the record when it
/// is small and in chunks beside it otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunText {
    /// Its size in bytes (also when it was not kept).
    pub bytes: u64,
    /// Kept: a value over the configured limit is dropped (its size is still known).
    pub kept: bool,
    /// Chunks stored apart (0 when inline).
    pub chunks: u32,
    /// xxh3-64 of the text, checked when chunks are read back.
    pub checksum: u64,
    /// The text: inline, or read from its chunks by [`super::Runs::get`]; `None` when it was
    /// not kept or not read (listings do not read chunks).
    pub text: Option<String>,
}

impl RunText {
    /// The text, when present.
    pub fn as_str(&self) -> Option<&str> {
        self.text.as_deref()
    }
}

/// The tick a scheduled run was fired for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTick {
    /// The tick (Unix ms).
    pub tick_ms: i64,
    /// Fired by a backfill.
    pub backfill: bool,
}

/// A run started by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run id.
    pub run_id: String,
    /// The workflow's registered name.
    pub workflow: String,
    /// Project of every call in the run.
    pub project: String,
    /// Domain of every call in the run.
    pub domain: String,
    /// Every cacheable call re-executed and replaced its entry.
    pub overwrite_cache: bool,
    /// The input, as JSON text.
    pub input: RunText,
    /// Running, succeeded, failed or cancelled.
    pub status: RunStatus,
    /// The output as JSON text, when it succeeded.
    pub output: Option<RunText>,
    /// Why it failed or was cancelled.
    pub error: Option<RunText>,
    /// The node of the latest attempt.
    pub node: String,
    /// While running: who owns it.
    pub owner: Option<RunOwner>,
    /// Fencing generation: bumped by every takeover.
    pub generation: u64,
    /// Every attempt, oldest first.
    pub attempts: Vec<RunAttempt>,
    /// The schedule that fired it, if any.
    pub schedule: Option<String>,
    /// The tick it was fired for, if a schedule fired it.
    pub tick: Option<RunTick>,
    /// Start (Unix ms).
    pub started_at_ms: i64,
    /// End (Unix ms).
    pub finished_at_ms: Option<i64>,
    /// W3C `traceparent` of the first attempt's run span, so later attempts link to it.
    pub trace: Option<String>,
    /// The `Idempotency-Key` it was submitted with.
    pub idempotency_key: Option<String>,
    /// The operation that cancelled it: a retry of that cancel after an unknown commit result
    /// finds its own id here and reports the end as its own; any other cancel finds the run
    /// already ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<u64>,
}

/// A run to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun {
    /// Its id.
    pub run_id: String,
    /// The registered workflow.
    pub workflow: String,
    /// The project: entries and runs are never shared across projects.
    pub project: String,
    /// The domain (development, staging, production…): never shared across domains.
    pub domain: String,
    /// Overwrite the cache.
    pub overwrite_cache: bool,
    /// Input JSON text.
    pub input: String,
    /// The schedule firing it.
    pub schedule: Option<String>,
    /// Its tick.
    pub tick: Option<RunTick>,
}

/// What an `Idempotency-Key` maps to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The run created by the first submission with the key.
    pub run_id: String,
    /// Digest of the submission (workflow, input, project, domain, overwrite): the same key
    /// with a different request is a conflict.
    pub request: u128,
    /// When the key is forgotten (Unix ms).
    pub expires_at_ms: i64,
}

/// A submission's idempotency key and the digest of what it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The client's key.
    pub key: String,
    /// Digest of the request.
    pub request: u128,
}

/// One cancellation, broadcast to every node through the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelNotice {
    /// The cancelled run.
    pub run_id: String,
    /// When (Unix ms).
    pub at_ms: i64,
}
