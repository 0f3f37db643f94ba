//! Command tasks, workflows and schedules declared in a TOML tasks file.
//!
//! A command task is an ordinary Cairn task whose body runs a process: its cache key is its
//! command, its environment, its tools' digests and the content digests of its input files, one
//! named component each, so `explain` says which one changed. Its output files are blobs in the
//! store ([`cairn_engine::blobs`]), so a step on another node gets its inputs from the store and
//! identical outputs are stored once; a downstream step keyed by an upstream output's digest hits
//! when that output's bytes did not change (early cutoff).
//!
//! ```toml
//! [task.compile]
//! command = ["cc", "-c", "${src}", "-o", "${outputs.obj}"]
//! inputs = { src = "file", headers = "glob" }
//! outputs = { obj = "${src}.o" }
//!
//! [workflow.build]
//! inputs = { srcs = "glob", headers = "glob" }
//! output = { objs = "${steps.compile.outputs.obj}" }
//! steps.compile = { task = "compile", for_each = "${inputs.srcs}", with = { src = "${item}", headers = "${inputs.headers}" } }
//! ```

mod decl;
mod exec;
mod hash;
mod task;
mod template;
mod workflow;

pub use decl::{InputType, LoadError, ScheduleDecl, Settings, TaskDecl};
pub use hash::{FileHasher, Hashed, MEMO_MAX};
pub use task::{ArgValue, CommandInput, CommandOutput, CommandTask, FileRef, Shared};

use cairn_engine::blobs::Blobs;
use cairn_engine::schedule::{ScheduleSpec, Trigger};
use cairn_engine::store::AnyStore;
use cairn_scheduler::WorkflowRegistry;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A loaded tasks file.
pub struct TasksFile {
    path: PathBuf,
    shared: Arc<Shared>,
    tasks: BTreeMap<String, CommandTask>,
    workflows: Vec<Arc<workflow::Runnable>>,
    schedules: Vec<ScheduleDecl>,
}

impl TasksFile {
    /// Reads and checks `path`. Tools are looked up on this process's `PATH`.
    pub fn load(path: &Path) -> Result<TasksFile, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            field: String::new(),
            message: format!("cannot read the tasks file: {e}"),
        })?;
        Self::parse(path, &text, &find_on_path)
    }

    /// Checks `text` as the content of `path`, finding tools with `resolve_tool`.
    pub fn parse(
        path: &Path,
        text: &str,
        resolve_tool: &dyn Fn(&str) -> Option<PathBuf>,
    ) -> Result<TasksFile, LoadError> {
        let decls = decl::load(path, text, resolve_tool)?;
        let shared = Shared::new(decls.settings);
        let tasks: BTreeMap<String, CommandTask> = decls
            .tasks
            .into_iter()
            .map(|t| (t.name.clone(), CommandTask::new(t, shared.clone())))
            .collect();
        let workflows = decls
            .workflows
            .into_iter()
            .map(|w| {
                let used: BTreeMap<String, CommandTask> = w
                    .steps
                    .iter()
                    .map(|s| (s.task.clone(), tasks[&s.task].clone()))
                    .collect();
                Arc::new(workflow::Runnable {
                    decl: w,
                    tasks: used,
                    shared: shared.clone(),
                })
            })
            .collect();
        Ok(TasksFile {
            path: path.to_path_buf(),
            shared,
            tasks,
            workflows,
            schedules: decls.schedules,
        })
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What its tasks share (settings, hasher, blobs).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Its command tasks.
    pub fn tasks(&self) -> impl Iterator<Item = &CommandTask> {
        self.tasks.values()
    }

    /// Names of its workflows.
    pub fn workflow_names(&self) -> impl Iterator<Item = &str> {
        self.workflows.iter().map(|w| w.decl.name.as_str())
    }

    /// Registers its workflows (JSON in, JSON out).
    pub fn register_workflows(&self, registry: &mut WorkflowRegistry) {
        for w in &self.workflows {
            let (check, run) = (w.clone(), w.clone());
            registry.register_json(
                w.decl.name.clone(),
                (w.input_schema(), serde_json::json!({"type": "object"})),
                move |input| check.check(input),
                move |ctx, input| Box::pin(run.clone().run(ctx, input)),
            );
        }
    }

    /// Its schedules.
    pub fn schedules(&self) -> Vec<ScheduleSpec> {
        self.schedules
            .iter()
            .map(|s| {
                let trigger = match (&s.cron, s.every) {
                    (Some(expr), _) => Trigger::Cron {
                        expr: expr.clone(),
                        tz: s.time_zone.clone(),
                    },
                    (None, every) => Trigger::Every {
                        period_ms: every.map_or(60_000, |d| d.as_millis() as u64).max(1),
                        anchor_ms: 0,
                    },
                };
                let mut spec = ScheduleSpec::new(&s.name, &s.workflow, trigger);
                spec.project = s.project.clone();
                spec.domain = s.domain.clone();
                spec.input = serde_json::to_vec(&s.input).unwrap_or_default();
                spec
            })
            .collect()
    }

    /// Writes the file digest memo (`[settings] digest_memo`) if digests were added since it was
    /// last written, so the next start does not read unchanged files again.
    pub fn save_memo(&self) -> Result<(), String> {
        self.shared.hasher.save().map(drop)
    }

    /// Gives the tasks the node's blobs ([`cairn_engine::catalog::Catalog::blobs`]), where
    /// their files are kept. Calls wait until this is done.
    pub fn attach(&self, blobs: Blobs<AnyStore>) {
        self.shared.attach(blobs);
    }
}

/// The executable `name` on `PATH` (or `name` itself when it is an absolute path).
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return (p.is_absolute() && executable(&p)).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
}
