//! The tasks file: its TOML shape, and the checks that turn it into declarations. Every error
//! names the file, the line and column, and the field; nothing is registered from a file with an
//! error.

use crate::template::Template;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// An error in a tasks file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (0 when the file could not be read).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The field, as a dotted path (`task.compile.inputs.src`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The type of a command task's input, or of a workflow's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InputType {
    /// Text.
    String,
    /// A 64-bit integer.
    Int,
    /// One file of the workspace (or an upstream step's output).
    File,
    /// A list of files.
    Files,
    /// A glob pattern over the workspace; its matches, as a list of files.
    Glob,
}

impl InputType {
    fn parse(text: &str) -> Option<InputType> {
        Some(match text {
            "string" => InputType::String,
            "int" => InputType::Int,
            "file" => InputType::File,
            "file[]" => InputType::Files,
            "glob" => InputType::Glob,
            _ => return None,
        })
    }

    /// Its name in a tasks file.
    pub fn name(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Int => "int",
            InputType::File => "file",
            InputType::Files => "file[]",
            InputType::Glob => "glob",
        }
    }

    /// The kind of value it holds once resolved.
    pub fn value(self) -> ValueType {
        match self {
            InputType::String => ValueType::Str,
            InputType::Int => ValueType::Int,
            InputType::File => ValueType::File,
            InputType::Files | InputType::Glob => ValueType::Files,
        }
    }

    /// Whether a value of type `v` may be passed to an input of this type.
    pub fn accepts(self, v: ValueType) -> bool {
        match self {
            InputType::String => matches!(v, ValueType::Str | ValueType::Int),
            InputType::Int => v == ValueType::Int,
            InputType::File => v == ValueType::File,
            InputType::Files | InputType::Glob => matches!(v, ValueType::File | ValueType::Files),
        }
    }
}

/// The type of a value flowing through a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// Text.
    Str,
    /// An integer.
    Int,
    /// One file.
    File,
    /// Several files.
    Files,
}

impl ValueType {
    fn name(self) -> &'static str {
        match self {
            ValueType::Str => "string",
            ValueType::Int => "int",
            ValueType::File => "file",
            ValueType::Files => "file[]",
        }
    }
}

/// A command task, checked.
#[derive(Debug, Clone)]
pub struct TaskDecl {
    /// Its name.
    pub name: String,
    /// The argv template; `argv[0]` names a tool.
    pub argv: Vec<Template>,
    /// Inputs by name.
    pub inputs: BTreeMap<String, InputType>,
    /// Output files by name: paths relative to the sandbox root, templated by inputs.
    pub outputs: BTreeMap<String, Template>,
    /// Tools by name, as resolved when the file loaded (`argv[0]` is one of them).
    pub tools: BTreeMap<String, PathBuf>,
    /// Environment variables set to a value.
    pub env: BTreeMap<String, String>,
    /// Environment variables passed from the node's environment.
    pub env_pass: Vec<String>,
    /// Working directory inside the sandbox.
    pub workdir: String,
    /// Longest one attempt may run.
    pub timeout: Option<Duration>,
    /// Attempts after the first.
    pub retries: u32,
    /// Exit codes that mean success.
    pub success_exit_codes: Vec<i32>,
    /// Cached (default yes).
    pub cache: bool,
    /// Cache version (`auto`: a digest of this declaration).
    pub cache_version: String,
    /// Entries older than this are misses.
    pub max_age: Option<Duration>,
    /// Inputs left out of the key.
    pub cache_ignore_inputs: Vec<String>,
}

/// A value a workflow step refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ValueRef {
    /// `${inputs.NAME}`.
    Input(String),
    /// `${item}`: the element of the step's `for_each`.
    Item,
    /// `${steps.STEP.outputs.NAME}`.
    Output {
        /// The step.
        step: String,
        /// The output.
        output: String,
    },
    /// `${steps.STEP.stdout}` or `.stderr` (`stderr = true`).
    Stream {
        /// The step.
        step: String,
        /// Standard error instead of standard output.
        stderr: bool,
    },
    /// `${steps.STEP.exit_code}`.
    ExitCode(String),
}

impl ValueRef {
    fn step(&self) -> Option<&str> {
        match self {
            ValueRef::Output { step, .. } | ValueRef::Stream { step, .. } => Some(step),
            ValueRef::ExitCode(step) => Some(step),
            _ => None,
        }
    }
}

/// An argument of a step, or an output of a workflow.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    /// Exactly one reference: its value, typed.
    Value(ValueRef),
    /// Text with references to strings and integers in it.
    Text(Template, Vec<ValueRef>),
}

/// A workflow step, checked.
#[derive(Debug, Clone)]
pub(crate) struct StepDecl {
    /// Its name.
    pub name: String,
    /// The command task it calls.
    pub task: String,
    /// One call per element of this list, if set.
    pub for_each: Option<ValueRef>,
    /// The task's inputs.
    pub with: BTreeMap<String, Arg>,
    /// Steps it reads from.
    pub after: BTreeSet<String>,
}

/// A workflow, checked: its steps in an order where every step comes after those it reads.
#[derive(Debug, Clone)]
pub(crate) struct WorkflowDecl {
    /// Its name.
    pub name: String,
    /// Inputs by name.
    pub inputs: BTreeMap<String, InputType>,
    /// Its output: an object of these.
    pub output: BTreeMap<String, Arg>,
    /// Steps, dependencies first.
    pub steps: Vec<StepDecl>,
}

/// A schedule, checked.
#[derive(Debug, Clone)]
pub struct ScheduleDecl {
    /// Its name.
    pub name: String,
    /// The workflow it runs.
    pub workflow: String,
    /// Cron expression, or …
    pub cron: Option<String>,
    /// … a fixed period.
    pub every: Option<Duration>,
    /// IANA time zone of `cron`.
    pub time_zone: String,
    /// The workflow's input.
    pub input: serde_json::Value,
    /// Project of its runs.
    pub project: String,
    /// Domain of its runs.
    pub domain: String,
}

/// Limits and places, from `[settings]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The workspace root: input paths are relative to it.
    pub workspace: PathBuf,
    /// Where sandboxes are made.
    pub sandbox: PathBuf,
    /// Where the file digest memo is kept across restarts (`digest_memo`; by default
    /// `digest-memo` in the sandbox directory).
    pub digest_memo: PathBuf,
    /// Largest input or output file.
    pub max_file_bytes: u64,
    /// Largest stdout or stderr of one command.
    pub max_output_bytes: u64,
}

/// A whole file, checked.
#[derive(Debug, Clone)]
pub(crate) struct Declarations {
    /// `[settings]`.
    pub settings: Settings,
    /// `[task.*]`.
    pub tasks: Vec<TaskDecl>,
    /// `[workflow.*]`.
    pub workflows: Vec<WorkflowDecl>,
    /// `[schedule.*]`.
    pub schedules: Vec<ScheduleDecl>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    settings: RawSettings,
    #[serde(default)]
    task: BTreeMap<Spanned<String>, RawTask>,
    #[serde(default)]
    workflow: BTreeMap<Spanned<String>, RawWorkflow>,
    #[serde(default)]
    schedule: BTreeMap<Spanned<String>, RawSchedule>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    workspace: Option<Spanned<String>>,
    sandbox: Option<Spanned<String>>,
    digest_memo: Option<Spanned<String>>,
    max_file_bytes: Option<u64>,
    max_output_bytes: Option<u64>,
}

#[derive(Deserialize, Debug, Hash)]
#[serde(deny_unknown_fields)]
struct RawTask {
    command: Option<Spanned<Vec<Spanned<String>>>>,
    script: Option<Spanned<String>>,
    shell: Option<Vec<String>>,
    #[serde(default)]
    inputs: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    outputs: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    tools: Vec<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    env_pass: Vec<String>,
    workdir: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    retries: u32,
    success_exit_codes: Option<Vec<i32>>,
    cache: Option<bool>,
    cache_version: Option<String>,
    max_age: Option<Spanned<String>>,
    #[serde(default)]
    cache_ignore_inputs: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkflow {
    #[serde(default)]
    inputs: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    output: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    steps: BTreeMap<Spanned<String>, RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    task: Spanned<String>,
    for_each: Option<Spanned<String>>,
    #[serde(default)]
    with: BTreeMap<Spanned<String>, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    workflow: Spanned<String>,
    cron: Option<Spanned<String>>,
    every: Option<Spanned<String>>,
    time_zone: Option<String>,
    #[serde(default)]
    input: toml::Table,
    project: Option<String>,
    domain: Option<String>,
}

/// Where errors point.
struct Source<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn error(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> LoadError {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        LoadError {
            file: self.file.to_path_buf(),
            line,
            column,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Parses and checks a tasks file. `resolve_tool` finds a tool by name (on `PATH`, normally).
pub(crate) fn load(
    file: &Path,
    text: &str,
    resolve_tool: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<Declarations, LoadError> {
    let src = Source { file, text };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        src.error(span, "", e.message().to_string())
    })?;
    let base = file.parent().unwrap_or(Path::new("."));
    let workspace = match &raw.settings.workspace {
        Some(w) => base.join(w.get_ref()),
        None => base.to_path_buf(),
    };
    let workspace = workspace.canonicalize().map_err(|e| {
        let span = raw.settings.workspace.as_ref().map_or(0..0, |w| w.span());
        src.error(
            span,
            "settings.workspace",
            format!("{}: {e}", workspace.display()),
        )
    })?;
    let sandbox = match &raw.settings.sandbox {
        Some(s) => base.join(s.get_ref()),
        None => std::env::temp_dir().join("cairn-sandbox"),
    };
    let digest_memo = match &raw.settings.digest_memo {
        Some(m) => base.join(m.get_ref()),
        None => sandbox.join("digest-memo"),
    };
    let settings = Settings {
        workspace,
        sandbox,
        digest_memo,
        max_file_bytes: raw.settings.max_file_bytes.unwrap_or(1 << 30),
        max_output_bytes: raw.settings.max_output_bytes.unwrap_or(64 << 20),
    };
    let mut tasks = Vec::new();
    for (name, t) in &raw.task {
        tasks.push(check_task(&src, name, t, resolve_tool)?);
    }
    let by_name: BTreeMap<&str, &TaskDecl> = tasks.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut workflows = Vec::new();
    for (name, w) in &raw.workflow {
        workflows.push(check_workflow(&src, name, w, &by_name)?);
    }
    let mut schedules = Vec::new();
    for (name, s) in &raw.schedule {
        let field = |f: &str| format!("schedule.{}.{f}", name.get_ref());
        if !raw
            .workflow
            .keys()
            .any(|w| w.get_ref() == s.workflow.get_ref())
        {
            return Err(src.error(
                s.workflow.span(),
                field("workflow"),
                format!("no workflow {:?} in this file", s.workflow.get_ref()),
            ));
        }
        let every = match &s.every {
            Some(e) => Some(duration(&src, e, &field("every"))?),
            None => None,
        };
        if s.cron.is_some() == every.is_some() {
            return Err(src.error(
                name.span(),
                field("cron"),
                "give exactly one of `cron` or `every`",
            ));
        }
        let input = serde_json::to_value(&s.input)
            .map_err(|e| src.error(name.span(), field("input"), e.to_string()))?;
        schedules.push(ScheduleDecl {
            name: name.get_ref().clone(),
            workflow: s.workflow.get_ref().clone(),
            cron: s.cron.as_ref().map(|c| c.get_ref().clone()),
            every,
            time_zone: s.time_zone.clone().unwrap_or_else(|| "UTC".into()),
            input,
            project: s.project.clone().unwrap_or_else(|| "default".into()),
            domain: s.domain.clone().unwrap_or_else(|| "development".into()),
        });
    }
    Ok(Declarations {
        settings,
        tasks,
        workflows,
        schedules,
    })
}

fn duration(src: &Source, text: &Spanned<String>, field: &str) -> Result<Duration, LoadError> {
    cairn_engine::clock::parse_duration(text.get_ref())
        .map_err(|m| src.error(text.span(), field, m))
}

/// A path relative to the workspace or sandbox that stays inside it: no root, no `..`.
pub(crate) fn inside(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty()
        && p.components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
}

fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The `inputs` table of a task or workflow (`owner` is `task.NAME` or `workflow.NAME`): names
/// and types checked.
fn input_types(
    src: &Source,
    inputs: &BTreeMap<Spanned<String>, Spanned<String>>,
    owner: &str,
) -> Result<BTreeMap<String, InputType>, LoadError> {
    let mut out = BTreeMap::new();
    for (n, ty) in inputs {
        let field = format!("{owner}.inputs.{}", n.get_ref());
        if !name_ok(n.get_ref()) {
            return Err(src.error(
                n.span(),
                field,
                "an input name is letters, digits, '_' and '-'",
            ));
        }
        let parsed = InputType::parse(ty.get_ref()).ok_or_else(|| {
            src.error(
                ty.span(),
                field,
                format!(
                    "unknown input type {:?} (expected string, int, file, file[] or glob)",
                    ty.get_ref()
                ),
            )
        })?;
        out.insert(n.get_ref().clone(), parsed);
    }
    Ok(out)
}

fn check_task(
    src: &Source,
    name: &Spanned<String>,
    t: &RawTask,
    resolve_tool: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<TaskDecl, LoadError> {
    let tname = name.get_ref();
    let field = |f: &str| format!("task.{tname}.{f}");
    if !name_ok(tname) {
        return Err(src.error(
            name.span(),
            format!("task.{tname}"),
            "a task name is letters, digits, '_' and '-'",
        ));
    }
    let inputs = input_types(src, &t.inputs, &format!("task.{tname}"))?;
    let template =
        |text: &Spanned<String>, f: &str, outputs_ok: bool| -> Result<Template, LoadError> {
            let parsed =
                Template::parse(text.get_ref()).map_err(|m| src.error(text.span(), field(f), m))?;
            for r in parsed.refs() {
                let known = inputs.contains_key(r)
                    || (outputs_ok
                        && r.strip_prefix("outputs.")
                            .is_some_and(|o| t.outputs.keys().any(|k| k.get_ref() == o)));
                if !known {
                    return Err(src.error(
                        text.span(),
                        field(f),
                        format!(
                            "the template refers to an unknown input \"${{{r}}}\" (declared: {})",
                            describe(inputs.keys().map(String::as_str))
                        ),
                    ));
                }
            }
            Ok(parsed)
        };
    let mut outputs = BTreeMap::new();
    for (n, path) in &t.outputs {
        let f = format!("outputs.{}", n.get_ref());
        let parsed = template(path, &f, false)?;
        let literal = parsed.render(|_| "x".into());
        if !inside(&literal) {
            return Err(src.error(
                path.span(),
                field(&f),
                format!(
                    "output path {:?} is outside the workspace: give a relative path without '..'",
                    path.get_ref()
                ),
            ));
        }
        outputs.insert(n.get_ref().clone(), parsed);
    }
    let (program, argv, argv_span) = match (&t.command, &t.script) {
        (Some(cmd), None) => {
            let Some(first) = cmd.get_ref().first() else {
                return Err(src.error(cmd.span(), field("command"), "the command is empty"));
            };
            let argv = cmd
                .get_ref()
                .iter()
                .map(|a| template(a, "command", true))
                .collect::<Result<Vec<_>, _>>()?;
            if argv[0].refs().next().is_some() {
                return Err(src.error(
                    first.span(),
                    field("command"),
                    "the program (command[0]) must be a tool name, not a template",
                ));
            }
            (first.get_ref().clone(), argv, first.span())
        }
        (None, Some(script)) => {
            let shell = t
                .shell
                .clone()
                .unwrap_or_else(|| vec!["sh".into(), "-c".into()]);
            let Some(program) = shell.first().cloned() else {
                return Err(src.error(script.span(), field("shell"), "the shell is empty"));
            };
            let mut argv: Vec<Template> = shell
                .iter()
                .map(|s| Template {
                    parts: vec![crate::template::Part::Lit(s.clone())],
                })
                .collect();
            argv.push(template(script, "script", true)?);
            (program, argv, script.span())
        }
        _ => {
            return Err(src.error(
                name.span(),
                format!("task.{tname}"),
                "give exactly one of `command` or `script`",
            ));
        }
    };
    let mut tools = BTreeMap::new();
    let mut wanted: Vec<(String, Range<usize>, String)> =
        vec![(program.clone(), argv_span, field("command"))];
    for tool in &t.tools {
        wanted.push((tool.get_ref().clone(), tool.span(), field("tools")));
    }
    for (tool, span, f) in wanted {
        let path = resolve_tool(&tool).ok_or_else(|| {
            src.error(
                span,
                f,
                format!("tool {tool:?} is not an executable on this node's PATH"),
            )
        })?;
        tools.insert(tool, path);
    }
    for n in &t.cache_ignore_inputs {
        if !inputs.contains_key(n.get_ref()) {
            return Err(src.error(
                n.span(),
                field("cache_ignore_inputs"),
                format!("no input {:?}", n.get_ref()),
            ));
        }
    }
    let workdir = match &t.workdir {
        Some(w) if !inside(w.get_ref()) => {
            return Err(src.error(
                w.span(),
                field("workdir"),
                "the working directory must be a relative path inside the workspace",
            ));
        }
        Some(w) => w.get_ref().clone(),
        None => ".".into(),
    };
    let timeout = t
        .timeout
        .as_ref()
        .map(|d| duration(src, d, &field("timeout")))
        .transpose()?;
    let max_age = t
        .max_age
        .as_ref()
        .map(|d| duration(src, d, &field("max_age")))
        .transpose()?;
    let mut decl = TaskDecl {
        name: tname.clone(),
        argv,
        inputs,
        outputs,
        tools,
        env: t.env.clone(),
        env_pass: t.env_pass.clone(),
        workdir,
        timeout,
        retries: t.retries,
        success_exit_codes: t.success_exit_codes.clone().unwrap_or_else(|| vec![0]),
        cache: t.cache.unwrap_or(true),
        cache_version: t.cache_version.clone().unwrap_or_else(|| "auto".into()),
        max_age,
        cache_ignore_inputs: t
            .cache_ignore_inputs
            .iter()
            .map(|s| s.get_ref().clone())
            .collect(),
    };
    if decl.cache_version == "auto" {
        let text = format!("{decl:?}");
        decl.cache_version = format!("auto-{:016x}", declaration_digest(&text));
    }
    Ok(decl)
}

fn declaration_digest(text: &str) -> u64 {
    let h = blake3::hash(text.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

fn describe<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = names.collect();
    if all.is_empty() {
        "none".into()
    } else {
        all.join(", ")
    }
}

pub(crate) fn parse_ref(r: &str) -> Option<ValueRef> {
    let parts: Vec<&str> = r.split('.').collect();
    Some(match parts.as_slice() {
        ["inputs", n] => ValueRef::Input(n.to_string()),
        ["item"] => ValueRef::Item,
        ["steps", s, "outputs", o] => ValueRef::Output {
            step: s.to_string(),
            output: o.to_string(),
        },
        ["steps", s, "stdout"] => ValueRef::Stream {
            step: s.to_string(),
            stderr: false,
        },
        ["steps", s, "stderr"] => ValueRef::Stream {
            step: s.to_string(),
            stderr: true,
        },
        ["steps", s, "exit_code"] => ValueRef::ExitCode(s.to_string()),
        _ => return None,
    })
}

struct WorkflowScope<'a> {
    inputs: &'a BTreeMap<String, InputType>,
    steps: &'a BTreeMap<Spanned<String>, RawStep>,
    tasks: &'a BTreeMap<&'a str, &'a TaskDecl>,
}

impl WorkflowScope<'_> {
    /// The type of `r` seen from a step with (`in_for_each`) or without a `for_each`.
    fn type_of(&self, r: &ValueRef, in_for_each: bool) -> Result<ValueType, String> {
        let step = |s: &str| {
            self.steps
                .iter()
                .find(|(k, _)| k.get_ref() == s)
                .map(|(_, v)| v)
                .ok_or_else(|| format!("no step {s:?} in this workflow"))
        };
        let many = |st: &RawStep| st.for_each.is_some();
        Ok(match r {
            ValueRef::Input(n) => self
                .inputs
                .get(n)
                .ok_or_else(|| format!("the workflow has no input {n:?}"))?
                .value(),
            ValueRef::Item if in_for_each => ValueType::File,
            ValueRef::Item => {
                return Err("${item} is only defined in a step with `for_each`".into());
            }
            ValueRef::Output { step: s, output } => {
                let st = step(s)?;
                let task = self.tasks.get(st.task.get_ref().as_str());
                if let Some(task) = task
                    && !task.outputs.contains_key(output)
                {
                    return Err(format!(
                        "task {:?} (step {s:?}) has no output {output:?}",
                        task.name
                    ));
                }
                if many(st) {
                    ValueType::Files
                } else {
                    ValueType::File
                }
            }
            ValueRef::Stream { step: s, .. } => {
                if many(step(s)?) {
                    ValueType::Files
                } else {
                    ValueType::File
                }
            }
            ValueRef::ExitCode(s) => {
                if many(step(s)?) {
                    return Err(format!(
                        "step {s:?} runs once per item: it has no single exit code"
                    ));
                }
                ValueType::Int
            }
        })
    }

    fn arg(&self, text: &str, in_for_each: bool) -> Result<(Arg, ValueType), String> {
        let t = Template::parse(text)?;
        let parse = |r: &str| {
            parse_ref(r).ok_or_else(|| {
                format!(
                    "unknown reference \"${{{r}}}\" (expected inputs.NAME, item, steps.STEP.outputs.NAME, steps.STEP.stdout, .stderr or .exit_code)"
                )
            })
        };
        if let Some(r) = t.whole_ref() {
            let r = parse(r)?;
            let ty = self.type_of(&r, in_for_each)?;
            return Ok((Arg::Value(r), ty));
        }
        let mut refs = Vec::new();
        for r in t.refs() {
            let parsed = parse(r)?;
            let ty = self.type_of(&parsed, in_for_each)?;
            if !matches!(ty, ValueType::Str | ValueType::Int) {
                return Err(format!(
                    "\"${{{r}}}\" is a {}: only strings and ints can be part of a longer text",
                    ty.name()
                ));
            }
            refs.push(parsed);
        }
        Ok((Arg::Text(t, refs), ValueType::Str))
    }
}

fn check_workflow(
    src: &Source,
    name: &Spanned<String>,
    w: &RawWorkflow,
    tasks: &BTreeMap<&str, &TaskDecl>,
) -> Result<WorkflowDecl, LoadError> {
    let wname = name.get_ref();
    let field = |f: &str| format!("workflow.{wname}.{f}");
    let inputs = input_types(src, &w.inputs, &format!("workflow.{wname}"))?;
    let scope = WorkflowScope {
        inputs: &inputs,
        steps: &w.steps,
        tasks,
    };
    let mut steps = BTreeMap::new();
    for (sname, step) in &w.steps {
        let sf = |f: &str| field(&format!("steps.{}.{f}", sname.get_ref()));
        let task = tasks.get(step.task.get_ref().as_str()).ok_or_else(|| {
            src.error(
                step.task.span(),
                sf("task"),
                format!("no command task {:?} in this file", step.task.get_ref()),
            )
        })?;
        let for_each = match &step.for_each {
            None => None,
            Some(fe) => {
                let (arg, ty) = scope
                    .arg(fe.get_ref(), false)
                    .map_err(|m| src.error(fe.span(), sf("for_each"), m))?;
                match (arg, ty) {
                    (Arg::Value(r), ValueType::Files) => Some(r),
                    _ => {
                        return Err(src.error(
                            fe.span(),
                            sf("for_each"),
                            "for_each takes one reference to a list of files (a glob or file[] input, or a for_each step's output)",
                        ));
                    }
                }
            }
        };
        let mut with = BTreeMap::new();
        for (arg_name, value) in &step.with {
            let f = sf(&format!("with.{}", arg_name.get_ref()));
            let Some(want) = task.inputs.get(arg_name.get_ref()) else {
                return Err(src.error(
                    arg_name.span(),
                    f,
                    format!(
                        "task {:?} has no input {:?} (its inputs: {})",
                        task.name,
                        arg_name.get_ref(),
                        describe(task.inputs.keys().map(String::as_str))
                    ),
                ));
            };
            let (arg, ty) = scope
                .arg(value.get_ref(), for_each.is_some())
                .map_err(|m| src.error(value.span(), f.clone(), m))?;
            if !want.accepts(ty) {
                return Err(src.error(
                    value.span(),
                    f,
                    format!(
                        "type mismatch: input {:?} of task {:?} is a {}, and {:?} is a {}",
                        arg_name.get_ref(),
                        task.name,
                        want.name(),
                        value.get_ref(),
                        ty.name()
                    ),
                ));
            }
            with.insert(arg_name.get_ref().clone(), arg);
        }
        for n in task.inputs.keys() {
            if !with.contains_key(n) {
                return Err(src.error(
                    sname.span(),
                    sf("with"),
                    format!("input {n:?} of task {:?} is not given", task.name),
                ));
            }
        }
        let mut after = BTreeSet::new();
        for arg in with.values() {
            match arg {
                Arg::Value(r) => after.extend(r.step().map(str::to_string)),
                Arg::Text(_, refs) => {
                    after.extend(refs.iter().filter_map(|r| r.step().map(str::to_string)))
                }
            }
        }
        if let Some(fe) = &for_each {
            after.extend(fe.step().map(str::to_string));
        }
        steps.insert(
            sname.get_ref().clone(),
            (
                sname.span(),
                StepDecl {
                    name: sname.get_ref().clone(),
                    task: task.name.clone(),
                    for_each,
                    with,
                    after,
                },
            ),
        );
    }
    let mut output = BTreeMap::new();
    for (n, value) in &w.output {
        let (arg, _) = scope
            .arg(value.get_ref(), false)
            .map_err(|m| src.error(value.span(), field(&format!("output.{}", n.get_ref())), m))?;
        output.insert(n.get_ref().clone(), arg);
    }
    // Order the steps, refusing cycles.
    let mut ordered: Vec<StepDecl> = Vec::new();
    let mut state: BTreeMap<String, u8> = BTreeMap::new(); // 1 visiting, 2 done
    fn visit(
        name: &str,
        steps: &BTreeMap<String, (Range<usize>, StepDecl)>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
        ordered: &mut Vec<StepDecl>,
    ) -> Result<(), (Range<usize>, String)> {
        match state.get(name) {
            Some(2) => return Ok(()),
            Some(1) => {
                let start = path.iter().position(|p| p == name).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(name.to_string());
                return Err((steps[name].0.clone(), cycle.join(" -> ")));
            }
            _ => {}
        }
        state.insert(name.to_string(), 1);
        path.push(name.to_string());
        let (_, step) = &steps[name];
        for dep in &step.after {
            visit(dep, steps, state, path, ordered)?;
        }
        path.pop();
        state.insert(name.to_string(), 2);
        ordered.push(step.clone());
        Ok(())
    }
    for name in steps.keys() {
        let mut path = Vec::new();
        visit(name, &steps, &mut state, &mut path, &mut ordered).map_err(|(span, cycle)| {
            src.error(
                span,
                field("steps"),
                format!("the steps form a cycle: {cycle}"),
            )
        })?;
    }
    Ok(WorkflowDecl {
        name: wname.clone(),
        inputs,
        output,
        steps: ordered,
    })
}
