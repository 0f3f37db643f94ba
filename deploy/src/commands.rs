//! A tasks file's command tasks, workflows and schedules on a node (`cairn up --tasks`).
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let tasks = cairn::commands::TasksFile::load("tasks.toml".as_ref())?;
//! let builder = cairn::commands::register(cairn::Node::builder(), &tasks);
//! let node = builder.start().await?;
//! cairn::commands::attach(&node, &tasks);
//! # Ok(()) }
//! ```

use crate::{Node, NodeBuilder};
pub use cairn_commands::{CommandOutput, CommandTask, FileHasher, FileRef, LoadError, TasksFile};

/// Registers everything `tasks` declares with `builder`.
pub fn register(mut builder: NodeBuilder, tasks: &TasksFile) -> NodeBuilder {
    for task in tasks.tasks() {
        builder = builder.task(task.clone());
    }
    builder = builder.register_workflows(|registry| tasks.register_workflows(registry));
    for spec in tasks.schedules() {
        builder = builder.schedule(spec);
    }
    builder
}

/// Gives `tasks` the started node's store, where their files are kept (their calls wait for
/// it).
pub fn attach(node: &Node, tasks: &TasksFile) {
    tasks.attach(node.catalog().blobs());
}
