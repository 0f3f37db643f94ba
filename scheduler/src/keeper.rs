//! The run keeper: what keeps runs alive across node death, on every node.
//!
//! Every third of the node TTL it
//! - bumps this incarnation's heartbeat (and, if another process has started as the same node,
//!   stops running anything: that process owns it all now);
//! - reads every node's record into the [`Liveness`] view (so the catalog takes over leases of
//!   gone incarnations at once);
//! - walks the active-run index: runs owned by a gone incarnation are taken over (when this
//!   node takes runs over and knows the workflow); runs this incarnation owns but does not run
//!   are adopted; runs it runs but no longer owns are abandoned;
//!
//! it listens for cancellation notices (one watch on the cancellation counter) and passes them
//! to the launcher; and now and then it collects what ended runs leave behind.

use crate::launch::Launcher;
use cairn_engine::AnyStore;
use cairn_engine::det::{Map, Set};
use cairn_engine::keys;
use cairn_engine::nodes::{Heartbeat, Liveness, Nodes};
use cairn_engine::store::Store;
use std::time::Duration;

/// How a node keeps its runs.
#[derive(Debug, Clone)]
pub struct KeeperConfig {
    /// The node's liveness TTL: others judge it dead after this long without a heartbeat.
    pub ttl: Duration,
    /// Take over runs of gone nodes (nodes with the scheduler role).
    pub takes_over: bool,
    /// How often journals, idempotency keys and notices past their retention are removed.
    pub collect_every: Duration,
}

impl Default for KeeperConfig {
    fn default() -> Self {
        KeeperConfig {
            ttl: Duration::from_secs(10),
            takes_over: true,
            collect_every: Duration::from_secs(60),
        }
    }
}

/// The keeper's tasks; stopped when dropped.
pub struct RunKeeper {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RunKeeper {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Active-run rows read per page.
const PAGE: usize = 1_000;

impl RunKeeper {
    /// Starts keeping `launcher`'s runs, judging liveness into `liveness`.
    pub fn start(
        nodes: Nodes<AnyStore>,
        liveness: Liveness,
        launcher: Launcher,
        config: KeeperConfig,
    ) -> RunKeeper {
        let keep = tokio::spawn(keep(nodes, liveness, launcher.clone(), config));
        let listen = tokio::spawn(listen_for_cancels(launcher));
        RunKeeper {
            tasks: vec![keep, listen],
        }
    }
}

async fn keep(
    nodes: Nodes<AnyStore>,
    liveness: Liveness,
    launcher: Launcher,
    config: KeeperConfig,
) {
    let me = launcher.me().clone();
    let every = (config.ttl / 3).max(Duration::from_millis(10));
    let mut superseded = false;
    let mut last_collect = tokio::time::Instant::now();
    let mut failing = false;
    // Runs this incarnation owns but does not run, seen on the previous pass: adopted when
    // seen twice (a start in progress registers itself before the next pass).
    let mut orphans: Set<String> = Set::default();
    loop {
        if !superseded {
            match nodes.heartbeat(&me).await {
                Ok(Heartbeat::Current) => failing = false,
                Ok(Heartbeat::Superseded { by }) => {
                    tracing::error!(node = %me.node, incarnation = me.incarnation, newer = by,
                        "another process started as this node: this one stops running runs");
                    superseded = true;
                    launcher.abandon_all();
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "node heartbeat failed; retrying");
                    }
                    failing = true;
                }
            }
        }
        match nodes.list().await {
            Ok(records) => liveness.observe(&records, tokio::time::Instant::now()),
            // What was not seen is not silence: time it again from the next read.
            Err(_) => liveness.forget(),
        }
        if !superseded && !failing {
            match scan(&launcher, &liveness, &config, &orphans).await {
                Ok(next) => orphans = next,
                Err(e) => tracing::warn!(error = %e, "scanning running runs failed"),
            }
        }
        if last_collect.elapsed() >= config.collect_every {
            last_collect = tokio::time::Instant::now();
            match launcher.runs().collect().await {
                Ok(c) if c.journal_entries + c.idempotency_keys + c.cancel_notices > 0 => {
                    tracing::debug!(?c, "collected what ended runs left")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "collecting ended runs' journals failed"),
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// One pass over the active-run index; returns the orphans seen.
async fn scan(
    launcher: &Launcher,
    liveness: &Liveness,
    config: &KeeperConfig,
    orphans: &Set<String>,
) -> Result<Set<String>, cairn_engine::Error> {
    let me = launcher.me().clone();
    let mut owned_here: Map<String, u64> = Map::default();
    let mut seen_orphans = Set::default();
    let mut after: Option<String> = None;
    loop {
        let page = launcher.runs().active(after.as_deref(), PAGE).await?;
        let full = page.len() == PAGE;
        for (run, owner) in page {
            after = Some(run.clone());
            if owner.node == me.node && owner.incarnation == me.incarnation {
                owned_here.insert(run.clone(), owner.generation);
                if !launcher.is_local(&run) {
                    if orphans.contains(&run) {
                        launcher.adopt(&run).await?;
                    } else {
                        seen_orphans.insert(run);
                    }
                }
                continue;
            }
            if !config.takes_over {
                continue;
            }
            if let Some(gone) = liveness.gone(&owner.node, owner.incarnation) {
                let reason = format!(
                    "{} (incarnation {} of node {})",
                    gone, owner.incarnation, owner.node
                );
                if let Err(e) = launcher.take_over(&run, &owner, &reason).await {
                    tracing::warn!(%run, error = %e, "could not take a run over");
                }
            }
        }
        if !full {
            break;
        }
    }
    // Runs running here that this incarnation no longer owns (taken over while this node was
    // cut off, or cancelled): stop them.
    for (run, generation) in launcher.local_runs() {
        match owned_here.get(&run) {
            Some(g) if *g == generation => {}
            _ => {
                // Not in the index: it ended (or is about to be created). Only abandon what
                // the store says is owned by someone else or ended.
                if let Ok(Some(record)) = launcher.runs().get(&run).await {
                    let ours = record.owner.as_ref().is_some_and(|o| {
                        o.node == me.node
                            && o.incarnation == me.incarnation
                            && o.generation == generation
                    });
                    if !ours && !record.status.is_final() {
                        tracing::info!(%run, "this node no longer owns the run; stopping it here");
                        launcher.abandon(&run, generation);
                    }
                }
            }
        }
    }
    Ok(seen_orphans)
}

/// Passes every cancellation notice to the launcher, woken by the store's watch of the
/// cancellation counter.
async fn listen_for_cancels(launcher: Launcher) {
    let store: AnyStore = launcher.runs().store().clone();
    let key = keys::cancel_seq();
    let mut next = loop {
        match launcher.runs().cancel_seq().await {
            Ok(n) => break n,
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    loop {
        let mut changed = match store.subscribe(&key).await {
            Ok(s) => s.with_recheck(Some(Duration::from_secs(2))),
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Ok(notices) = launcher.runs().cancels_since(next).await {
            for (seq, notice) in notices {
                launcher.cancelled(&notice.run_id);
                next = seq + 1;
            }
        }
        let _ = changed.changed().await;
    }
}
