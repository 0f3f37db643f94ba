//! Running a workflow of a tasks file: its inputs resolved (globs expanded, files hashed and
//! stored as blobs), then its steps as a DAG, every step started as soon as the steps it reads
//! have ended, a `for_each` step's calls all at once. Each call is an ordinary `Ctx::call`.

use crate::decl::{Arg, InputType, ValueRef, WorkflowDecl};
use crate::task::{ArgValue, CommandInput, CommandOutput, CommandTask, FileRef, Shared, paths_of};
use cairn_scheduler::Ctx;
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What one step produced.
#[derive(Debug, Clone)]
enum StepResult {
    One(CommandOutput),
    Many(Vec<CommandOutput>),
}

/// A workflow ready to run.
pub(crate) struct Runnable {
    pub decl: WorkflowDecl,
    pub tasks: BTreeMap<String, CommandTask>,
    pub shared: Arc<Shared>,
}

impl Runnable {
    /// The JSON schema of its input.
    pub(crate) fn input_schema(&self) -> Value {
        let props: serde_json::Map<String, Value> = self
            .decl
            .inputs
            .iter()
            .map(|(n, ty)| {
                let schema = match ty {
                    InputType::String | InputType::File => json!({"type": "string"}),
                    InputType::Int => json!({"type": "integer"}),
                    InputType::Files => json!({"type": "array", "items": {"type": "string"}}),
                    InputType::Glob => json!({"type": "string", "description": "a glob pattern relative to the workspace"}),
                };
                (n.clone(), schema)
            })
            .collect();
        json!({
            "type": "object",
            "properties": props,
            "required": self.decl.inputs.keys().collect::<Vec<_>>(),
            "additionalProperties": false,
        })
    }

    /// Refuses an input that does not give every declared input with the right JSON type.
    pub(crate) fn check(&self, input: &Value) -> Result<(), String> {
        let input = unwrap_scheduled(input)?;
        let Value::Object(fields) = &input else {
            return Err("expected an object of the workflow's inputs by name".into());
        };
        for k in fields.keys() {
            if !self.decl.inputs.contains_key(k) {
                return Err(format!("unknown input {k:?}"));
            }
        }
        for (n, ty) in &self.decl.inputs {
            let v = fields
                .get(n)
                .ok_or_else(|| format!("missing input {n:?}"))?;
            let ok = match ty {
                InputType::String | InputType::File | InputType::Glob => v.is_string(),
                InputType::Int => v.is_i64(),
                InputType::Files => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            };
            if !ok {
                return Err(format!("input {n:?} must be a {}", ty.name()));
            }
        }
        Ok(())
    }

    /// Runs it.
    pub(crate) async fn run(self: Arc<Self>, ctx: Ctx, input: Value) -> Result<Value, String> {
        self.check(&input)?;
        let input = unwrap_scheduled(&input)?;
        let blobs = self.shared.blobs().await;
        let mut inputs: BTreeMap<String, ArgValue> = BTreeMap::new();
        for (n, ty) in &self.decl.inputs {
            let v = &input[n];
            let value = match ty {
                InputType::String => ArgValue::Str(v.as_str().unwrap_or_default().to_string()),
                InputType::Int => ArgValue::Int(v.as_i64().unwrap_or_default()),
                InputType::File => ArgValue::File(
                    self.shared
                        .file_ref(v.as_str().unwrap_or_default(), Some(&blobs))
                        .await
                        .map_err(|e| format!("input {n:?}: {e}"))?,
                ),
                InputType::Files | InputType::Glob => {
                    let paths =
                        paths_of(&self.shared, v).map_err(|e| format!("input {n:?}: {e}"))?;
                    let refs = futures::future::try_join_all(
                        paths.iter().map(|p| self.shared.file_ref(p, Some(&blobs))),
                    )
                    .await
                    .map_err(|e| format!("input {n:?}: {e}"))?;
                    ArgValue::Files(refs)
                }
            };
            inputs.insert(n.clone(), value);
        }
        let mut results: BTreeMap<String, StepResult> = BTreeMap::new();
        let mut pending: Vec<&crate::decl::StepDecl> = self.decl.steps.iter().collect();
        let mut running = FuturesUnordered::new();
        loop {
            let (ready, rest): (Vec<_>, Vec<_>) = pending
                .into_iter()
                .partition(|s| s.after.iter().all(|d| results.contains_key(d)));
            pending = rest;
            for step in ready {
                let task = self.tasks[&step.task].clone();
                let items: Option<Vec<FileRef>> =
                    step.for_each
                        .as_ref()
                        .map(|r| match resolve(r, &inputs, &results, None) {
                            ArgValue::Files(fs) => fs,
                            ArgValue::File(f) => vec![f],
                            _ => Vec::new(),
                        });
                let calls: Vec<BTreeMap<String, ArgValue>> = match &items {
                    None => vec![args_of(step, &inputs, &results, None)],
                    Some(items) => items
                        .iter()
                        .map(|item| args_of(step, &inputs, &results, Some(item)))
                        .collect(),
                };
                let ctx = ctx.clone();
                let name = step.name.clone();
                let many = items.is_some();
                running.push(async move {
                    // The environment and tool digests are the same for every call of a step:
                    // taken once, not once per item.
                    let base = task
                        .input(BTreeMap::new())
                        .await
                        .map_err(|e| format!("step {name:?}: {e}"))?;
                    let outputs = futures::future::try_join_all(calls.into_iter().map(|args| {
                        let task = task.clone();
                        let ctx = ctx.clone();
                        let name = name.clone();
                        let input = CommandInput {
                            args,
                            ..base.clone()
                        };
                        async move {
                            let label = label_of(&input.args);
                            ctx.call(task, input)
                                .await
                                .map_err(|e| format!("step {name:?}{label}: {e}"))
                        }
                    }))
                    .await?;
                    let result = if many {
                        StepResult::Many(outputs)
                    } else {
                        StepResult::One(outputs.into_iter().next().expect("one call"))
                    };
                    Ok::<_, String>((name, result))
                });
            }
            match running.next().await {
                Some(done) => {
                    let (name, result) = done?;
                    results.insert(name, result);
                }
                None if pending.is_empty() => break,
                None => {
                    return Err(
                        "steps left that can never start (a bug: the file's DAG was checked)"
                            .into(),
                    );
                }
            }
        }
        let mut output = serde_json::Map::new();
        for (n, arg) in &self.decl.output {
            let value = match arg {
                Arg::Value(r) => to_json(&resolve(r, &inputs, &results, None)),
                Arg::Text(t, _) => Value::String(text(t, &inputs, &results, None)),
            };
            output.insert(n.clone(), value);
        }
        Ok(Value::Object(output))
    }
}

/// A scheduled run's input is `{"kickoff_ms", "input": [bytes of the JSON], "backfill"}`.
fn unwrap_scheduled(input: &Value) -> Result<Value, String> {
    if let Some(obj) = input.as_object()
        && obj.contains_key("kickoff_ms")
        && let Some(Value::Array(bytes)) = obj.get("input")
    {
        let bytes: Vec<u8> = bytes
            .iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect::<Option<_>>()
            .ok_or("a scheduled input that is not bytes")?;
        if bytes.is_empty() {
            return Ok(json!({}));
        }
        return serde_json::from_slice(&bytes).map_err(|e| format!("the schedule's input: {e}"));
    }
    Ok(input.clone())
}

fn label_of(args: &BTreeMap<String, ArgValue>) -> String {
    let files: Vec<&str> = args
        .values()
        .filter_map(|v| match v {
            ArgValue::File(f) => Some(f.path.as_str()),
            _ => None,
        })
        .collect();
    if files.is_empty() {
        String::new()
    } else {
        format!(" ({})", files.join(", "))
    }
}

fn args_of(
    step: &crate::decl::StepDecl,
    inputs: &BTreeMap<String, ArgValue>,
    results: &BTreeMap<String, StepResult>,
    item: Option<&FileRef>,
) -> BTreeMap<String, ArgValue> {
    step.with
        .iter()
        .map(|(n, arg)| {
            let v = match arg {
                Arg::Value(r) => resolve(r, inputs, results, item),
                Arg::Text(t, _) => ArgValue::Str(text(t, inputs, results, item)),
            };
            (n.clone(), v)
        })
        .collect()
}

fn text(
    t: &crate::template::Template,
    inputs: &BTreeMap<String, ArgValue>,
    results: &BTreeMap<String, StepResult>,
    item: Option<&FileRef>,
) -> String {
    t.render(|r| {
        let parsed = crate::decl::parse_ref(r);
        match parsed.map(|p| resolve(&p, inputs, results, item)) {
            Some(ArgValue::Str(s)) => s,
            Some(ArgValue::Int(i)) => i.to_string(),
            _ => String::new(),
        }
    })
}

fn resolve(
    r: &ValueRef,
    inputs: &BTreeMap<String, ArgValue>,
    results: &BTreeMap<String, StepResult>,
    item: Option<&FileRef>,
) -> ArgValue {
    let pick = |step: &str, f: &dyn Fn(&CommandOutput) -> FileRef| match &results[step] {
        StepResult::One(o) => ArgValue::File(f(o)),
        StepResult::Many(os) => ArgValue::Files(os.iter().map(f).collect()),
    };
    match r {
        ValueRef::Input(n) => inputs[n].clone(),
        ValueRef::Item => ArgValue::File(item.cloned().expect("checked: item only in for_each")),
        ValueRef::Output { step, output } => pick(step, &|o| o.files[output].clone()),
        ValueRef::Stream { step, stderr } => pick(step, &|o| {
            if *stderr {
                o.stderr.clone()
            } else {
                o.stdout.clone()
            }
        }),
        ValueRef::ExitCode(step) => match &results[step] {
            StepResult::One(o) => ArgValue::Int(i64::from(o.exit_code)),
            StepResult::Many(_) => ArgValue::Int(0),
        },
    }
}

fn to_json(v: &ArgValue) -> Value {
    match v {
        ArgValue::Str(s) => Value::String(s.clone()),
        ArgValue::Int(i) => json!(i),
        ArgValue::File(f) => serde_json::to_value(f).unwrap_or(Value::Null),
        ArgValue::Files(fs) => serde_json::to_value(fs).unwrap_or(Value::Null),
    }
}
