//! What the HTTP API sends and receives: plain JSON types, shared by the server, the client and
//! the OpenAPI document (their schemas come from these definitions).

use cairn_engine::names;
use schemars::generate::SchemaGenerator;
use schemars::{JsonSchema, Schema, json_schema};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Cache statuses, as the engine names them.
pub use cairn_engine::catalog::CacheStatus;

/// An error: a stable machine-readable `code` and a message naming the bad input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error inside [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    /// Stable code: `unauthorized`, `not_found`, `unknown_workflow`, `unknown_task`,
    /// `invalid_input`, `malformed_json`, `body_too_large`, `unsupported_media_type`,
    /// `conflict`, `store_unavailable`, `internal`.
    pub code: String,
    /// What went wrong, naming the input.
    pub message: String,
}

/// The node answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    /// The node's name.
    pub node: String,
    /// The store backend.
    pub store: String,
}

/// A workflow runs can be started of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkflowInfo {
    /// Its name.
    pub name: String,
    /// JSON schema of its input.
    pub input_schema: Value,
    /// JSON schema of its output.
    pub output_schema: Value,
}

/// The schema of a name: exactly what [`names::check`] accepts.
pub fn name_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": names::MAX_NAME_CHARS,
        "pattern": names::PATTERN,
    })
}

/// [`name_schema`], or null.
pub fn optional_name_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "nullable": true,
        "minLength": 1,
        "maxLength": names::MAX_NAME_CHARS,
        "pattern": names::PATTERN,
    })
}

/// The schema of a cache key: 32 hexadecimal digits.
pub fn key_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "pattern": "^[0-9a-fA-F]{32}$"})
}

/// The schema of a blob digest: 64 hexadecimal digits (BLAKE3).
pub fn blob_digest_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "pattern": "^[0-9a-fA-F]{64}$"})
}

/// A name, refused when [`names::check`] would refuse it (the JSON path names the field).
fn name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let value = String::deserialize(d)?;
    match names::problem(&value) {
        None => Ok(value),
        Some(reason) => Err(serde::de::Error::custom(format!("the name {reason}"))),
    }
}

fn optional_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let value = Option::<String>::deserialize(d)?;
    match value.as_deref().and_then(names::problem) {
        None => Ok(value),
        Some(reason) => Err(serde::de::Error::custom(format!("the name {reason}"))),
    }
}

/// Name checks that say which field they check: inside the internally tagged
/// [`EvictRequest`], serde's error path does not reach the field.
macro_rules! named {
    ($fn:ident, $field:literal) => {
        fn $fn<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
            let value = String::deserialize(d)?;
            match names::problem(&value) {
                None => Ok(value),
                Some(reason) => Err(serde::de::Error::custom(format!(
                    "{}: the name {reason}",
                    $field
                ))),
            }
        }
    };
}
named!(project_name, "project");
named!(domain_name, "domain");
named!(task_name, "task");
named!(execution_name, "execution");

fn version_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let value = Option::<String>::deserialize(d)?;
    match value.as_deref().and_then(names::problem) {
        None => Ok(value),
        Some(reason) => Err(serde::de::Error::custom(format!(
            "version: the name {reason}"
        ))),
    }
}

/// A cache key: 32 hexadecimal digits.
fn key<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let value = String::deserialize(d)?;
    if cairn_engine::catalog::Digest::from_hex(&value).is_some() {
        Ok(value)
    } else {
        Err(serde::de::Error::custom(format!(
            "cache key {value:?} is not 32 hexadecimal digits"
        )))
    }
}

fn default_project() -> String {
    "default".into()
}

fn default_domain() -> String {
    "development".into()
}

/// Starts a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({"workflow": "sum_of_squares", "input": 3}))]
pub struct SubmitRunRequest {
    /// The registered workflow.
    #[serde(deserialize_with = "name")]
    #[schemars(schema_with = "name_schema")]
    pub workflow: String,
    /// Its input (JSON matching the workflow's input schema).
    #[serde(default)]
    pub input: Value,
    /// Project (default `default`).
    #[serde(default = "default_project", deserialize_with = "name")]
    #[schemars(schema_with = "name_schema")]
    pub project: String,
    /// Domain (default `development`).
    #[serde(default = "default_domain", deserialize_with = "name")]
    #[schemars(schema_with = "name_schema")]
    pub domain: String,
    /// Re-execute every cacheable task and replace its entry.
    #[serde(default)]
    pub overwrite_cache: bool,
}

/// Run states.
pub use cairn_engine::runs::RunStatus;

/// A run without its calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunSummary {
    /// The run id.
    pub run_id: String,
    /// The workflow.
    pub workflow: String,
    /// The project: entries and runs are never shared across projects.
    pub project: String,
    /// The domain (development, staging, production…): never shared across domains.
    pub domain: String,
    /// Running, succeeded, failed or cancelled.
    pub status: RunStatus,
    /// The node that runs it (or ran its last attempt).
    pub node: String,
    /// How many attempts it took: more than 1 when a node running it died and another (or
    /// the same, restarted) took it over.
    pub attempts: u32,
    /// The schedule that fired it.
    pub schedule: Option<String>,
    /// Start (Unix ms).
    pub started_at_ms: i64,
    /// End (Unix ms).
    pub finished_at_ms: Option<i64>,
}

/// One task call of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CallInfo {
    /// The execution id.
    pub execution: String,
    /// The task.
    pub task: String,
    /// Its cache version.
    pub version: String,
    /// The cache key (hex), for cacheable calls.
    pub key: Option<String>,
    /// How the cache answered.
    pub status: CacheStatus,
    /// Start (Unix ms).
    pub started_at_ms: i64,
    /// From submission to answer (µs).
    pub duration_us: u64,
    /// Time spent waiting behind another execution's lease (µs).
    pub wait_us: u64,
    /// The execution it waited for.
    pub waited_for: Option<String>,
    /// The error, if it failed.
    pub error: Option<String>,
    /// The task's body ran for this call (count these to count executions: a body whose
    /// output lost to one stored first reports `Hit` with `executed` true).
    pub executed: bool,
    /// Why the cache failed the call (LookupFailure, PutFailure), e.g. the output's size and
    /// the limit.
    pub cache_error: Option<String>,
    /// The run's attempt that made the call.
    pub attempt: u32,
}

/// A run with its calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunDetail {
    /// The run.
    #[serde(flatten)]
    pub run: RunSummary,
    /// Every cacheable call re-executed and replaced its entry.
    pub overwrite_cache: bool,
    /// Its input.
    pub input: Value,
    /// Its output, when it succeeded (absent when it was larger than the node keeps).
    pub output: Option<Value>,
    /// Size of the output's JSON text.
    pub output_bytes: Option<u64>,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// Every attempt, oldest first: the first start, then each takeover with its reason.
    pub attempt_list: Vec<AttemptInfo>,
    /// The idempotency key it was submitted with.
    pub idempotency_key: Option<String>,
    /// Calls recorded so far, by cache status.
    pub counts: BTreeMap<CacheStatus, u64>,
    /// The W3C trace id of the run's trace (32 hex digits), when it was traced.
    pub trace_id: Option<String>,
    /// Calls recorded so far (records are written in batches: a running run may not list its
    /// latest calls yet; a finished run lists all).
    pub calls: Vec<CallInfo>,
}

/// One attempt at running a run's workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AttemptInfo {
    /// 1 for the first.
    pub attempt: u32,
    /// The node that ran it.
    pub node: String,
    /// Which start of that node it was.
    pub incarnation: u64,
    /// When it started (Unix ms).
    pub started_at_ms: i64,
    /// Why the attempt before it was taken over.
    pub reason: Option<String>,
}

/// Query of `GET /v1/runs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// Only this workflow.
    #[serde(default, deserialize_with = "optional_name")]
    #[schemars(schema_with = "optional_name_schema")]
    pub workflow: Option<String>,
    /// Only this project.
    #[serde(default, deserialize_with = "optional_name")]
    #[schemars(schema_with = "optional_name_schema")]
    pub project: Option<String>,
    /// Only this domain.
    #[serde(default, deserialize_with = "optional_name")]
    #[schemars(schema_with = "optional_name_schema")]
    pub domain: Option<String>,
    /// Only runs in this state.
    pub status: Option<RunStatus>,
    /// Only runs fired by this schedule.
    #[serde(default, deserialize_with = "optional_name")]
    #[schemars(schema_with = "optional_name_schema")]
    pub schedule: Option<String>,
    /// Page size (default 50).
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<usize>,
    /// Cursor from the previous page's `next`.
    pub cursor: Option<String>,
}

/// Query of `GET /v1/runs/{run_id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunQuery {
    /// Wait up to this long (ms) for the run to end before answering.
    #[schemars(range(max = 60000))]
    pub wait_ms: Option<u64>,
    /// List the calls (default true); `false` keeps only their counts (for polling a large run).
    pub calls: Option<bool>,
}

/// A page of runs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunPage {
    /// The runs.
    pub runs: Vec<RunSummary>,
    /// Cursor of the next page.
    pub next: Option<String>,
}

/// A schedule and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ScheduleInfo {
    /// Its name.
    pub name: String,
    /// The workflow it runs.
    pub workflow: String,
    /// Project of its runs.
    pub project: String,
    /// Domain of its runs.
    pub domain: String,
    /// Its trigger, e.g. `cron "0 * * * *" UTC` or `every 300 ms`.
    pub trigger: String,
    /// Paused: its ticks pass as missed.
    pub paused: bool,
    /// Next fire time (Unix ms).
    pub next_fire_ms: i64,
    /// Runs in progress.
    pub running: u32,
    /// Ticks fired.
    pub fired: u64,
    /// Ticks missed.
    pub missed: u64,
    /// Ticks skipped because a run was in progress.
    pub skipped_overlap: u64,
    /// Runs that failed.
    pub failed: u64,
    /// Worst lateness of a fired tick (ms).
    pub late_ms_max: u64,
    /// Backfill ticks queued.
    pub pending_backfill: usize,
}

/// Queues the unfired ticks of a time range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({"from_ms": 1_700_000_000_000_i64, "to_ms": 1_700_003_600_000_i64}))]
pub struct BackfillRequest {
    /// Start of the range (Unix ms, inclusive).
    #[schemars(range(min = 0))]
    pub from_ms: i64,
    /// End of the range (Unix ms, inclusive; at least `from_ms`, not in the future).
    #[schemars(range(min = 0))]
    pub to_ms: i64,
}

/// How many ticks were queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BackfillResult {
    /// Ticks queued.
    pub queued: u64,
}

/// Query of `GET /v1/cache/entries`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    /// Project (default `default`).
    #[serde(default, deserialize_with = "optional_name")]
    #[schemars(schema_with = "optional_name_schema")]
    pub project: Option<String>,
    /// Domain (default `development`).
    #[serde(default, deserialize_with = "optional_name")]
    #[schemars(schema_with = "optional_name_schema")]
    pub domain: Option<String>,
    /// Only this task.
    #[serde(default, deserialize_with = "optional_name")]
    #[schemars(schema_with = "optional_name_schema")]
    pub task: Option<String>,
    /// Only this cache version (needs `task`).
    #[serde(default, deserialize_with = "optional_name")]
    #[schemars(schema_with = "optional_name_schema")]
    pub version: Option<String>,
    /// Page size (default 50).
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<usize>,
    /// Cursor from the previous page's `next`.
    pub cursor: Option<String>,
}

/// Query of `GET /v1/cache/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// The task.
    #[serde(deserialize_with = "name")]
    #[schemars(schema_with = "name_schema")]
    pub task: String,
    /// Project (default `default`).
    #[serde(default, deserialize_with = "optional_name")]
    #[schemars(schema_with = "optional_name_schema")]
    pub project: Option<String>,
    /// Domain (default `development`).
    #[serde(default, deserialize_with = "optional_name")]
    #[schemars(schema_with = "optional_name_schema")]
    pub domain: Option<String>,
}

/// What the cache did for one task in a project and domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskStatsInfo {
    /// The task.
    pub task: String,
    /// The project.
    pub project: String,
    /// The domain.
    pub domain: String,
    /// Entries stored (every version).
    pub entries: u64,
    /// Bytes of output they hold.
    pub bytes: u64,
    /// Entries per cache version.
    pub entries_by_version: BTreeMap<String, u64>,
    /// Recorded calls by cache status.
    pub calls: BTreeMap<CacheStatus, u64>,
    /// Calls answered without running the body (`Hit` and `Waited`): duplicate executions
    /// avoided.
    pub executions_avoided: u64,
    /// `executions_avoided` over the calls that consulted the cache (`Hit`, `Waited`,
    /// `Populated`, `Miss`, `Evicted`); absent before any.
    pub hit_ratio: Option<f64>,
    /// Index rows that did not decode (skipped).
    pub corrupt: u64,
}

/// Where an execution that ran a cached task's body belongs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExecutionInfo {
    /// The execution id.
    pub execution: String,
    /// Its run (absent for a call made outside any run).
    pub run_id: Option<String>,
    /// Its call, as its run lists it.
    pub call: Option<CallInfo>,
}

/// A cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EntryInfo {
    /// The cache key (hex).
    pub key: String,
    /// The project: entries and runs are never shared across projects.
    pub project: String,
    /// The domain (development, staging, production…): never shared across domains.
    pub domain: String,
    /// The task's registered name.
    pub task: String,
    /// Cache version.
    pub version: String,
    /// Digest of the task signature (hex).
    pub signature: String,
    /// Digests of the inputs in the key, by name (hex).
    pub inputs: BTreeMap<String, String>,
    /// When it was stored (Unix ms).
    pub created_at_ms: i64,
    /// The execution that produced it.
    pub execution: String,
    /// Output size (bytes).
    pub size: u64,
    /// When it expires (Unix ms), if its task has a max age.
    pub expires_at_ms: Option<i64>,
}

/// A page of cache entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EntryPage {
    /// The entries, in (task, version, key) order.
    pub entries: Vec<EntryInfo>,
    /// Entries of this page whose metadata does not decode (evict them, or `cairn cache
    /// verify --repair`).
    pub corrupt: Vec<CorruptEntry>,
    /// Cursor of the next page.
    pub next: Option<String>,
}

/// Which entries to verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// Project (default `default`).
    #[serde(default = "default_project", deserialize_with = "name")]
    #[schemars(schema_with = "name_schema")]
    pub project: String,
    /// Domain (default `development`).
    #[serde(default = "default_domain", deserialize_with = "name")]
    #[schemars(schema_with = "name_schema")]
    pub domain: String,
    /// Only this task's entries.
    #[serde(default, deserialize_with = "optional_name")]
    #[schemars(schema_with = "optional_name_schema")]
    pub task: Option<String>,
    /// Remove the corrupt entries found (as an eviction: the next call reports `Evicted`).
    #[serde(default)]
    pub repair: bool,
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VerifyResult {
    /// Entries read back and checked.
    pub checked: u64,
    /// Corrupt entries: metadata that does not decode, or an output that fails its checks.
    pub corrupt: Vec<CorruptEntry>,
    /// Corrupt entries removed (with `repair`).
    pub repaired: u64,
}

/// A stored entry that does not decode or whose output fails its checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CorruptEntry {
    /// The cache key (hex).
    pub key: String,
    /// What is wrong with it.
    pub detail: String,
}

/// One entry with its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EntryDetail {
    /// The entry.
    #[serde(flatten)]
    pub entry: EntryInfo,
    /// The output as JSON, when this node knows the task (otherwise only its size is known).
    pub output: Option<Value>,
}

/// Which entries to evict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "scope", rename_all = "snake_case", deny_unknown_fields)]
pub enum EvictRequest {
    /// One key.
    Key {
        /// The cache key (32 hexadecimal digits).
        #[serde(deserialize_with = "key")]
        #[schemars(schema_with = "key_schema")]
        key: String,
    },
    /// Every entry of a task, or of one of its cache versions.
    Task {
        /// The project the entries were stored under.
        #[serde(deserialize_with = "project_name")]
        #[schemars(schema_with = "name_schema")]
        project: String,
        /// Their domain.
        #[serde(deserialize_with = "domain_name")]
        #[schemars(schema_with = "name_schema")]
        domain: String,
        /// The task's registered name.
        #[serde(deserialize_with = "task_name")]
        #[schemars(schema_with = "name_schema")]
        task: String,
        /// Only this cache version; every version when absent.
        #[serde(default, deserialize_with = "version_name")]
        #[schemars(schema_with = "optional_name_schema")]
        version: Option<String>,
    },
    /// Every entry of a project and domain.
    ProjectDomain {
        /// The project.
        #[serde(deserialize_with = "project_name")]
        #[schemars(schema_with = "name_schema")]
        project: String,
        /// The domain.
        #[serde(deserialize_with = "domain_name")]
        #[schemars(schema_with = "name_schema")]
        domain: String,
    },
    /// Every entry an execution produced.
    Execution {
        /// The execution id, as runs and entries show it.
        #[serde(deserialize_with = "execution_name")]
        #[schemars(schema_with = "name_schema")]
        execution: String,
    },
}

/// How many entries were evicted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EvictResult {
    /// Entries evicted.
    pub evicted: u64,
}

/// A task call to explain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({"task": "square", "input": {"n": 3}}))]
pub struct ExplainRequest {
    /// The task (registered on the node asked).
    #[serde(deserialize_with = "name")]
    #[schemars(schema_with = "name_schema")]
    pub task: String,
    /// Its input: an object of the inputs by name, or the input value itself.
    pub input: Value,
    /// Project (default `default`).
    #[serde(default = "default_project", deserialize_with = "name")]
    #[schemars(schema_with = "name_schema")]
    pub project: String,
    /// Domain (default `development`).
    #[serde(default = "default_domain", deserialize_with = "name")]
    #[schemars(schema_with = "name_schema")]
    pub domain: String,
}

/// How one input differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InputChange {
    /// The input.
    pub name: String,
    /// `changed` (another value), `added` (in the call, not the entry's key) or `removed`.
    pub change: String,
}

/// How a stored entry's key differs from the call's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DifferenceInfo {
    /// The stored entry (hex key).
    pub entry: String,
    /// The entry's cache version, when it differs.
    pub stored_version: Option<String>,
    /// The call's cache version, when it differs.
    pub called_version: Option<String>,
    /// The task's signature (input or output types, input names) changed.
    pub signature_changed: bool,
    /// Inputs that differ.
    pub inputs: Vec<InputChange>,
    /// Every differing component, in words.
    pub summary: Vec<String>,
}

/// Why a call hits or misses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Explanation {
    /// The call's cache key (hex).
    pub key: String,
    /// `hit` (stored under this key), `evicted`, `corrupt` (stored, but its metadata does not
    /// decode: the next call replaces it) or `miss`.
    pub verdict: String,
    /// For `evicted`: what evicted it; for `corrupt`: what does not decode.
    pub reason: Option<String>,
    /// For `miss`: the nearest stored entries of the task (at most 5 of those at the smallest
    /// distance).
    pub nearest: Vec<DifferenceInfo>,
    /// For `miss`: how many entries are at that distance.
    pub tied: usize,
    /// Entries of the task compared.
    pub compared: usize,
    /// Entries of the task whose metadata does not decode.
    pub corrupt: usize,
}

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeInfo {
    /// Its name.
    pub name: String,
    /// The node answering this request.
    pub local: bool,
    /// Roles: `scheduler`, `worker`.
    pub roles: Vec<String>,
    /// Worker concurrency.
    pub concurrency: usize,
    /// Jobs running.
    pub busy: usize,
    /// Jobs queued.
    pub queued: usize,
    /// Jobs its workers finished since it started.
    pub executed: u64,
    /// A member of the cluster. `false` for a configured seed this node could not join (its
    /// address is the name; `problem` says why, e.g. a refused cookie).
    pub joined: bool,
    /// Why a seed is not joined.
    pub problem: Option<String>,
}
