//! The task model shared by schedulers and workers: what a task is ([`Task`], usually generated
//! by `#[cairn::task]`), its options, the registry that finds a task by name on any node, and the
//! serializable job a scheduler sends a worker.

mod job;
mod registry;

pub use job::{Job, JobCache, JobReport, TaskError, decode_outcome, encode_outcome};
pub use registry::{DynTask, Produced, TaskRegistry};

use crate::catalog::{CacheKey, KeyInputs, PreparedSignature, TaskSignature};
use crate::error::Result;
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::OnceLock;
use std::time::Duration;

/// How a task is cached and run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOptions {
    /// Cacheable: runs once per cache key.
    pub cache: bool,
    /// Cache version; bumping it invalidates. `auto` versions are a hash of the task's code.
    pub cache_version: String,
    /// Inputs left out of the cache key.
    pub ignore_inputs: Vec<String>,
    /// Entries older than this are misses.
    pub max_age: Option<Duration>,
    /// Attempts after the first when the task fails, panics or times out.
    pub retries: u32,
    /// Longest one attempt may run.
    pub timeout: Option<Duration>,
    /// Lease TTL while the task runs (heartbeats every third of it).
    pub lease_ttl: Duration,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            cache: false,
            cache_version: "0".into(),
            ignore_inputs: Vec::new(),
            max_age: None,
            retries: 0,
            timeout: None,
            lease_ttl: Duration::from_secs(30),
        }
    }
}

/// A task's identity and options; built once per task.
#[derive(Debug)]
pub struct TaskSpec {
    name: std::sync::Arc<str>,
    version: std::sync::Arc<str>,
    /// The signature (name, inputs, output).
    pub signature: TaskSignature,
    /// How the task runs and caches: cache version, max age, timeout, retries, lease TTL.
    pub options: TaskOptions,
    prepared: OnceLock<PreparedSignature>,
}

impl TaskSpec {
    /// A spec.
    pub fn new(signature: TaskSignature, options: TaskOptions) -> Self {
        TaskSpec {
            name: signature.name.as_str().into(),
            version: options.cache_version.as_str().into(),
            signature,
            options,
            prepared: OnceLock::new(),
        }
    }

    /// The task name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cache version, shared.
    pub fn shared_version(&self) -> &std::sync::Arc<str> {
        &self.version
    }

    /// The task name, shared.
    pub fn shared_name(&self) -> &std::sync::Arc<str> {
        &self.name
    }

    /// The signature, hashed once.
    pub fn prepared(&self) -> &PreparedSignature {
        self.prepared.get_or_init(|| self.signature.prepare())
    }

    /// The cache key of a call in `project`/`domain` with `inputs` (ignored inputs applied).
    pub fn cache_key(
        &self,
        project: &str,
        domain: &str,
        mut inputs: KeyInputs,
    ) -> Result<CacheKey> {
        for name in &self.options.ignore_inputs {
            inputs.ignore(name);
        }
        CacheKey::prepared(
            project,
            domain,
            self.prepared(),
            &self.options.cache_version,
            &inputs,
        )
    }
}

/// A task: a typed async function with a spec. `#[cairn::task]` implements it for a unit struct
/// named after the function.
pub trait Task: Send + Sync + 'static {
    /// The input: the single argument, or a tuple of the arguments.
    type Input: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// The output (the `Ok` type for tasks returning `Result`).
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// The task's spec.
    fn spec(&self) -> &'static TaskSpec;

    /// The named inputs of a call, for its cache key.
    fn key_inputs(&self, input: &Self::Input) -> Result<KeyInputs>;

    /// The typed input of a call given as JSON (by the API's and CLI's `explain`): by default
    /// the JSON decoded as [`Task::Input`], from an object of the inputs by name or the input
    /// value itself (a tuple as an array). Tasks whose input is not plain data override it:
    /// a command task reads and hashes the files the JSON names.
    fn input_from_json(&self, input: &serde_json::Value) -> Result<Self::Input> {
        let spec = self.spec();
        serde_json::from_value(registry::positional(&spec.signature, input)).map_err(|e| {
            crate::Error::InvalidInput {
                what: format!("input of task {:?}", spec.name()),
                reason: e.to_string(),
            }
        })
    }

    /// The blobs an output refers to ([`crate::blobs`]): its entry holds a reference to each
    /// while it exists, so they are deleted only when no entry refers to them. None by default;
    /// a command task's are its output files, stdout and stderr.
    fn blobs(output: &Self::Output) -> Vec<crate::blobs::BlobDigest>
    where
        Self: Sized,
    {
        let _ = output;
        Vec::new()
    }

    /// Says how input component `name` of a call (`called`) differs from the one behind a
    /// stored output (`stored`), for `explain`, when the task knows more than "changed": a
    /// command task names the file whose content changed, or the files of a list that were
    /// added, removed or changed. `None` by default.
    fn describe_change<'a>(
        &'a self,
        name: &'a str,
        called: &'a Self::Input,
        stored: &'a Self::Output,
    ) -> BoxFuture<'a, Option<String>> {
        let _ = (name, called, stored);
        Box::pin(std::future::ready(None))
    }

    /// Runs the task body.
    fn invoke(
        &self,
        input: Self::Input,
    ) -> BoxFuture<'static, std::result::Result<Self::Output, TaskError>>;
}
