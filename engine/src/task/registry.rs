//! The task registry: every node knows its tasks by name, so a job naming a task can run on any
//! worker.

use super::{Task, TaskError, TaskSpec};
use crate::catalog::{CacheKey, TaskSignature};
use crate::det::Map;
use crate::error::{Error, Result};
use futures::future::BoxFuture;
use std::sync::Arc;

/// What a task body produced, encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    /// The output (MessagePack of the output type).
    pub output: Vec<u8>,
    /// The blobs it refers to ([`Task::blobs`]).
    pub blobs: Vec<crate::blobs::BlobDigest>,
}

/// A task with its types erased: MessagePack input in, MessagePack output out.
pub trait DynTask: Send + Sync {
    /// The spec.
    fn spec(&self) -> &'static TaskSpec;
    /// Decodes the input, runs the task, encodes the output.
    fn invoke_bytes(
        &self,
        input: &[u8],
    ) -> BoxFuture<'static, std::result::Result<Produced, TaskError>>;
    /// The cache key of a call whose input is given as JSON: an object of the inputs by name,
    /// or the input value itself (a tuple as an array). The JSON is decoded as the task's typed
    /// input first, so the key is the one a typed call computes.
    fn key_for_json(
        &self,
        project: &str,
        domain: &str,
        input: &serde_json::Value,
    ) -> Result<CacheKey>;
    /// Stored output bytes (MessagePack of the output type) as JSON.
    fn output_to_json(&self, output: &[u8]) -> Result<serde_json::Value>;
    /// [`Task::describe_change`] of each of `names`, for a call whose input is given as JSON
    /// and a stored output; `None` for each when either does not decode.
    fn describe_changes<'a>(
        &'a self,
        input: &'a serde_json::Value,
        stored: &'a [u8],
        names: &'a [String],
    ) -> BoxFuture<'a, Vec<Option<String>>>;
}

/// An object naming exactly the signature's inputs becomes the positional form the input type
/// decodes from (the value for one input, an array for several); anything else is left as is.
pub(super) fn positional(
    signature: &TaskSignature,
    input: &serde_json::Value,
) -> serde_json::Value {
    let serde_json::Value::Object(fields) = input else {
        return input.clone();
    };
    let names = &signature.inputs;
    let named_exactly = !names.is_empty()
        && fields.len() == names.len()
        && names.iter().all(|(n, _)| fields.contains_key(n));
    if !named_exactly {
        return input.clone();
    }
    match names.as_slice() {
        [(one, _)] => fields[one].clone(),
        _ => serde_json::Value::Array(names.iter().map(|(n, _)| fields[n].clone()).collect()),
    }
}

impl<T: Task> DynTask for T {
    fn spec(&self) -> &'static TaskSpec {
        Task::spec(self)
    }

    fn invoke_bytes(
        &self,
        input: &[u8],
    ) -> BoxFuture<'static, std::result::Result<Produced, TaskError>> {
        let decoded: std::result::Result<T::Input, _> = rmp_serde::from_slice(input);
        match decoded {
            Err(e) => Box::pin(std::future::ready(Err(TaskError::BadInput {
                detail: format!("input of task {:?}: {e}", Task::spec(self).name()),
            }))),
            Ok(input) => {
                let run = self.invoke(input);
                Box::pin(async move {
                    let output = run.await?;
                    let bytes =
                        rmp_serde::to_vec_named(&output).map_err(|e| TaskError::Engine {
                            detail: format!("encoding the output: {e}"),
                        })?;
                    Ok(Produced {
                        blobs: T::blobs(&output),
                        output: bytes,
                    })
                })
            }
        }
    }

    fn key_for_json(
        &self,
        project: &str,
        domain: &str,
        input: &serde_json::Value,
    ) -> Result<CacheKey> {
        let spec = Task::spec(self);
        let typed = self.input_from_json(input)?;
        spec.cache_key(project, domain, self.key_inputs(&typed)?)
    }

    fn describe_changes<'a>(
        &'a self,
        input: &'a serde_json::Value,
        stored: &'a [u8],
        names: &'a [String],
    ) -> BoxFuture<'a, Vec<Option<String>>> {
        Box::pin(async move {
            let (Ok(called), Ok(output)) = (
                self.input_from_json(input),
                rmp_serde::from_slice::<T::Output>(stored),
            ) else {
                return vec![None; names.len()];
            };
            let mut out = Vec::with_capacity(names.len());
            for name in names {
                out.push(self.describe_change(name, &called, &output).await);
            }
            out
        })
    }

    fn output_to_json(&self, output: &[u8]) -> Result<serde_json::Value> {
        let name = Task::spec(self).name();
        let typed: T::Output = rmp_serde::from_slice(output).map_err(|e| Error::Corrupt {
            what: format!("output of task {name:?}"),
            detail: e.to_string(),
        })?;
        serde_json::to_value(&typed).map_err(|e| Error::Corrupt {
            what: format!("output of task {name:?} as JSON"),
            detail: e.to_string(),
        })
    }
}

/// Tasks by name.
#[derive(Clone, Default)]
pub struct TaskRegistry {
    tasks: Map<String, Arc<dyn DynTask>>,
}

impl TaskRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `task`. Registering the same task twice is harmless; two different tasks with
    /// one name are refused.
    pub fn register<T: Task>(&mut self, task: T) -> Result<&mut Self> {
        let spec = Task::spec(&task);
        if let Some(existing) = self.tasks.get(spec.name())
            && existing.spec().signature != spec.signature
        {
            return Err(Error::InvalidInput {
                what: format!("task {:?}", spec.name()),
                reason: "a different task with this name is already registered".into(),
            });
        }
        self.tasks.insert(spec.name().to_string(), Arc::new(task));
        Ok(self)
    }

    /// The task called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn DynTask>> {
        self.tasks.get(name)
    }

    /// Names of every registered task.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tasks.keys().map(String::as_str)
    }
}
