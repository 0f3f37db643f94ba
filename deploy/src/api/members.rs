//! Who the cluster's members are, for `GET /v1/nodes`: this node alone, or this node and its
//! cluster's peers. The cluster knows its peers; this module turns them into the API's view, so
//! the cluster depends on neither the API nor the node.

use super::types::NodeInfo;
use crate::cluster::Cluster;
use crate::node::Node;

/// Who the cluster's members are, for `GET /v1/nodes`.
pub trait Members: Send + Sync + 'static {
    /// Every member with its load (the local node included).
    fn nodes<'a>(&'a self, local: &'a Node) -> futures::future::BoxFuture<'a, Vec<NodeInfo>>;
}

/// A node on its own.
pub struct LocalOnly;

impl Members for LocalOnly {
    fn nodes<'a>(&'a self, local: &'a Node) -> futures::future::BoxFuture<'a, Vec<NodeInfo>> {
        Box::pin(async move { vec![local_info(local).await] })
    }
}

/// This node's entry in `GET /v1/nodes`.
pub async fn local_info(node: &Node) -> NodeInfo {
    let status = node.workers().status().await;
    NodeInfo {
        name: node.name().to_string(),
        local: true,
        roles: vec!["scheduler".into(), "worker".into()],
        concurrency: status.as_ref().map_or(0, |s| s.workers),
        busy: status.as_ref().map_or(0, |s| s.busy.len()),
        queued: status.as_ref().map_or(0, |s| s.queued),
        executed: status.as_ref().map_or(0, |s| s.finished),
        joined: true,
        problem: None,
    }
}

impl Members for Cluster {
    fn nodes<'a>(&'a self, local: &'a Node) -> futures::future::BoxFuture<'a, Vec<NodeInfo>> {
        Box::pin(async move {
            let mut me = local_info(local).await;
            me.roles = self.roles().names();
            let mut out = vec![me];
            out.extend(self.peers().into_iter().map(|p| NodeInfo {
                roles: if p.joined {
                    p.roles.names()
                } else {
                    Vec::new()
                },
                name: p.name,
                local: false,
                concurrency: p.capacity,
                busy: p.busy,
                queued: p.queued,
                executed: p.executed,
                joined: p.joined,
                problem: p.problem,
            }));
            out
        })
    }
}
