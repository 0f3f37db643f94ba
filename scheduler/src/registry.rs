//! Workflows by name: what schedules, the HTTP API and the CLI start runs of. A workflow is an
//! async function of a [`Ctx`] and a typed input; the registry keeps it with its types erased to
//! JSON, plus the JSON schemas of its input and output, so bad input is refused before a run
//! exists.

use crate::workflow::Ctx;
use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;

type RunFn = dyn Fn(Ctx, Value) -> BoxFuture<'static, Result<Value, String>> + Send + Sync;
type CheckFn = dyn Fn(&Value) -> Result<(), String> + Send + Sync;

/// A registered workflow.
#[derive(Clone)]
pub struct Workflow {
    name: String,
    input_schema: Value,
    output_schema: Value,
    check: Arc<CheckFn>,
    run: Arc<RunFn>,
}

impl Workflow {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// JSON schema of its input.
    pub fn input_schema(&self) -> &Value {
        &self.input_schema
    }

    /// JSON schema of its output.
    pub fn output_schema(&self) -> &Value {
        &self.output_schema
    }

    /// Whether `input` decodes as the workflow's input type; the error names what does not.
    pub fn check(&self, input: &Value) -> Result<(), String> {
        (self.check)(input)
    }

    /// Runs it on `input` (checked first: a bad input is an error, not a panic).
    pub fn run(&self, ctx: Ctx, input: Value) -> BoxFuture<'static, Result<Value, String>> {
        (self.run)(ctx, input)
    }
}

/// Workflows by name.
#[derive(Clone, Default)]
pub struct WorkflowRegistry {
    workflows: BTreeMap<String, Workflow>,
}

impl WorkflowRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `workflow` as `name` (replacing any workflow of that name).
    pub fn register<I, O, E, F, Fut>(&mut self, name: impl Into<String>, workflow: F) -> &mut Self
    where
        I: DeserializeOwned + JsonSchema + Send + 'static,
        O: Serialize + JsonSchema + 'static,
        E: Display + 'static,
        F: Fn(Ctx, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
    {
        let name = name.into();
        let workflow = Arc::new(workflow);
        let label = name.clone();
        let run: Arc<RunFn> = Arc::new(move |ctx, input| {
            let typed: Result<I, _> = serde_json::from_value(input);
            match typed {
                Err(e) => Box::pin(std::future::ready(Err(format!(
                    "input of workflow {label:?}: {e}"
                )))),
                Ok(input) => {
                    let run = workflow(ctx, input);
                    Box::pin(async move {
                        let output = run.await.map_err(|e| e.to_string())?;
                        serde_json::to_value(&output)
                            .map_err(|e| format!("encoding the output as JSON: {e}"))
                    })
                }
            }
        });
        let check: Arc<CheckFn> = Arc::new(|input| {
            serde_json::from_value::<I>(input.clone())
                .map(drop)
                .map_err(|e| e.to_string())
        });
        let schema = |s: schemars::Schema| serde_json::to_value(s).unwrap_or(Value::Null);
        self.workflows.insert(
            name.clone(),
            Workflow {
                input_schema: schema(schemars::schema_for!(I)),
                output_schema: schema(schemars::schema_for!(O)),
                name,
                check,
                run,
            },
        );
        self
    }

    /// Registers a workflow whose input and output are JSON already (declared in a tasks file,
    /// not in Rust): its schemas are given, `check` refuses a bad input before a run exists, and
    /// `run` runs it.
    pub fn register_json(
        &mut self,
        name: impl Into<String>,
        schemas: (Value, Value),
        check: impl Fn(&Value) -> Result<(), String> + Send + Sync + 'static,
        run: impl Fn(Ctx, Value) -> BoxFuture<'static, Result<Value, String>> + Send + Sync + 'static,
    ) -> &mut Self {
        let name = name.into();
        let (input_schema, output_schema) = schemas;
        self.workflows.insert(
            name.clone(),
            Workflow {
                name,
                input_schema,
                output_schema,
                check: Arc::new(check),
                run: Arc::new(run),
            },
        );
        self
    }

    /// The workflow called `name`.
    pub fn get(&self, name: &str) -> Option<&Workflow> {
        self.workflows.get(name)
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.workflows.contains_key(name)
    }

    /// Every workflow, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Workflow> {
        self.workflows.values()
    }
}
