//! How every supervisor of the runtime (scheduler shards, worker pool and its workers, cluster
//! agent) reads a child's death from a supervision event.

use ractor::{ActorCell, SupervisionEvent};

/// The actor a supervision event reports dead (failed, or stopped), and why; `None` for any
/// other event.
pub fn death(event: SupervisionEvent) -> Option<(ActorCell, String)> {
    match event {
        SupervisionEvent::ActorFailed(cell, e) => Some((cell, e.to_string())),
        SupervisionEvent::ActorTerminated(cell, _, reason) => {
            Some((cell, reason.unwrap_or_else(|| "stopped".into())))
        }
        _ => None,
    }
}
