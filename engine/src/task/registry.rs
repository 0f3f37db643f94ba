//! The task registry: every node knows its tasks by name, so a job naming a task can run on any
//! worker.

use super::{Task, TaskError, TaskSpec};
use crate::error::{Error, Result};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;

/// A task with its types erased: MessagePack input in, MessagePack output out.
pub trait DynTask: Send + Sync {
    /// The spec.
    fn spec(&self) -> &'static TaskSpec;
    /// Decodes the input, runs the task, encodes the output.
    fn invoke_bytes(
        &self,
        input: &[u8],
    ) -> BoxFuture<'static, std::result::Result<Vec<u8>, TaskError>>;
}

impl<T: Task> DynTask for T {
    fn spec(&self) -> &'static TaskSpec {
        Task::spec(self)
    }

    fn invoke_bytes(
        &self,
        input: &[u8],
    ) -> BoxFuture<'static, std::result::Result<Vec<u8>, TaskError>> {
        let decoded: std::result::Result<T::Input, _> = rmp_serde::from_slice(input);
        match decoded {
            Err(e) => Box::pin(std::future::ready(Err(TaskError::BadInput {
                detail: format!("input of task {:?}: {e}", Task::spec(self).name()),
            }))),
            Ok(input) => {
                let run = self.invoke(input);
                Box::pin(async move {
                    let output = run.await?;
                    rmp_serde::to_vec_named(&output).map_err(|e| TaskError::Engine {
                        detail: format!("encoding the output: {e}"),
                    })
                })
            }
        }
    }
}

/// Tasks by name.
#[derive(Clone, Default)]
pub struct TaskRegistry {
    tasks: HashMap<String, Arc<dyn DynTask>>,
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
