//! A tasks file's command tasks, workflows and schedules on a node (`cairn up --tasks`).

use crate::NodeBuilder;
use cairn_commands::TasksFile;

/// Registers everything `tasks` declares with `builder`.
pub(crate) fn register(mut builder: NodeBuilder, tasks: &TasksFile) -> NodeBuilder {
    for task in tasks.tasks() {
        builder = builder.task(task.clone());
    }
    builder = builder.register_workflows(|registry| tasks.register_workflows(registry));
    for spec in tasks.schedules() {
        builder = builder.schedule(spec);
    }
    builder
}
