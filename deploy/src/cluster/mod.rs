//! Cairn nodes as a cluster (ractor_cluster): every node runs a `NodeServer` on its cluster
//! address, joins its seeds with a shared secret cookie — a node without the cookie is refused
//! at the handshake, so it can neither see the others' workers nor be dispatched to — and runs
//! one [`agent::Agent`] in the `cairn.nodes` process group (and `cairn.workers` when it is a
//! worker). Each agent reports the addresses of the nodes it is linked to, and every node dials
//! those it is not linked to yet, so the cluster becomes a full mesh whatever seeds each node was
//! given. (Cairn dials them itself, rather than ractor_cluster's transitive mode, because that
//! mode dials in clear even when the cluster uses TLS.)
//!
//! With [`ClusterTls`] every link is mutual TLS 1.3: both ends present a certificate the cluster
//! CA signed, on top of the cookie. A node whose cluster address is not loopback refuses to start
//! without TLS unless told it is meant to be insecure.
//!
//! - [`agent`]: the per-node actor remote schedulers talk to (run a job, report load);
//! - [`dispatch`]: where this node's schedulers send jobs (local first, then least loaded;
//!   re-dispatch when a worker node is lost).
//!
//! Deduplication does not depend on the cluster: every scheduler resolves cache keys against
//! the shared store, so identical calls on different nodes meet at the same lease. The cluster
//! only spreads execution and carries jobs and reports.

pub mod agent;
pub mod dispatch;

use crate::error::Error;
use crate::tls::ClusterTls;
use agent::{AgentArgs, AgentMsg, Load, NODES_GROUP, WORKERS_GROUP};
use cairn_worker::WorkerPoolHandle;
use dispatch::ClusterDispatch;
use parking_lot::Mutex;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use ractor_cluster::{NodeServer, NodeServerMessage};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How often peers' loads are refreshed and absent seeds redialled (at first: redials back off).
const REFRESH: Duration = Duration::from_millis(500);

/// Why a seed that accepted a connection is still not joined.
const REFUSED: &str =
    "its node refused the handshake (a different cookie, or a certificate its CA did not sign?)";

/// A dial (TCP connect and TLS handshake) that takes longer fails.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// What a node does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Runs scheduler actors (accepts runs and calls, dispatches jobs).
    pub scheduler: bool,
    /// Runs jobs for any node's schedulers.
    pub worker: bool,
}

impl Roles {
    /// Parses `scheduler`, `worker` or both, comma-separated.
    pub fn parse(s: &str) -> Result<Roles, Error> {
        let mut roles = Roles {
            scheduler: false,
            worker: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "scheduler" => roles.scheduler = true,
                "worker" => roles.worker = true,
                other => {
                    return Err(Error::Config(format!(
                        "role {other:?} is not one of `scheduler`, `worker`"
                    )));
                }
            }
        }
        if !roles.scheduler && !roles.worker {
            return Err(Error::Config(
                "a node needs at least one role: scheduler, worker".into(),
            ));
        }
        Ok(roles)
    }

    /// The roles' names.
    pub fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.scheduler {
            out.push("scheduler".into());
        }
        if self.worker {
            out.push("worker".into());
        }
        out
    }
}

/// How a node joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The address the cluster server binds.
    pub listen: SocketAddr,
    /// The host other nodes reach this one at (default: the listen IP); e.g. a DNS name when
    /// listening on 0.0.0.0 in a container.
    pub advertise: Option<String>,
    /// Nodes to join (`host:port` of their cluster address).
    pub seeds: Vec<String>,
    /// The shared secret; nodes with another cookie are refused.
    pub cookie: String,
    /// This node's roles.
    pub roles: Roles,
    /// Mutual TLS for every link; `None` for plain TCP.
    pub tls: Option<ClusterTls>,
    /// Allows plain TCP on an address that is not loopback.
    pub insecure: bool,
}

impl ClusterConfig {
    /// Refuses a configuration that would carry jobs in clear beyond this host: a cluster
    /// address that is not loopback, without TLS, unless `insecure`. Also refuses an empty
    /// cookie.
    pub fn check(&self) -> Result<(), Error> {
        if self.cookie.is_empty() {
            return Err(Error::Config(
                "a cluster needs a cookie (--cookie, CAIRN_COOKIE or [cluster] cookie)".into(),
            ));
        }
        if self.tls.is_none() && !self.insecure && !self.listen.ip().is_loopback() {
            return Err(Error::Config(format!(
                "the cluster address {} is not loopback, so its links would carry every job's \
                 input and output in clear: give --cluster-tls-cert, --cluster-tls-key and \
                 --cluster-tls-ca (mutual TLS), or --cluster-insecure to accept plain TCP",
                self.listen
            )));
        }
        Ok(())
    }

    /// This node's address as the others dial it: the advertised host (or the listen IP) and
    /// the port.
    pub fn address(&self) -> String {
        let host = self
            .advertise
            .clone()
            .unwrap_or_else(|| self.listen.ip().to_string());
        format!("{host}:{}", self.listen.port())
    }
}

/// A node's membership in the cluster.
pub struct Cluster {
    name: String,
    roles: Roles,
    server: ActorRef<NodeServerMessage>,
    agent: agent::Supervised,
    agent_supervisor: ActorRef<()>,
    dispatch: Arc<ClusterDispatch>,
    loads: Arc<Mutex<BTreeMap<String, Load>>>,
    seeds: Arc<Mutex<BTreeMap<String, SeedState>>>,
    background: tokio::task::JoinHandle<()>,
    reload: Option<tokio::task::JoinHandle<()>>,
}

/// What this node knows of one of its seeds.
#[derive(Debug, Clone)]
struct SeedState {
    /// Learnt from another member's report rather than configured: not listed while absent,
    /// and forgotten once no member reports it.
    discovered: bool,
    joined: bool,
    /// Failed attempts in a row.
    failures: u32,
    /// Not dialled again before this.
    next_try: tokio::time::Instant,
    /// Why it is not joined.
    problem: Option<String>,
    /// A session was opened at the last attempt (closed since, if not joined: refused).
    dialled: bool,
    /// The socket addresses the seed resolved to at the last dial.
    resolved: Vec<String>,
}

impl SeedState {
    fn new() -> Self {
        SeedState {
            discovered: false,
            joined: false,
            failures: 0,
            next_try: tokio::time::Instant::now(),
            problem: None,
            dialled: false,
            resolved: Vec::new(),
        }
    }

    /// Backs off after a failure: 0.5 s, doubling up to 30 s.
    fn failed(&mut self, problem: String) {
        self.failures += 1;
        self.problem = Some(problem);
        let backoff = REFRESH * 2u32.saturating_pow(self.failures.min(6));
        self.next_try = tokio::time::Instant::now() + backoff.min(Duration::from_secs(30));
    }
}

impl Cluster {
    /// Starts the node server, the agent and the loops that dial seeds and refresh loads.
    pub async fn start(
        name: &str,
        config: ClusterConfig,
        pool: WorkerPoolHandle,
    ) -> Result<Cluster, Error> {
        config.check()?;
        let encryption = config
            .tls
            .as_ref()
            .map(|tls| ractor_cluster::IncomingEncryptionMode::Tls(tls.acceptor.clone()));
        let server = NodeServer::new(
            config.listen.port(),
            config.cookie.clone(),
            name.to_string(),
            config
                .advertise
                .clone()
                .unwrap_or_else(|| config.listen.ip().to_string()),
            encryption,
            Some(ractor_cluster::node::NodeConnectionMode::Isolated),
        )
        .with_listen_addr(config.listen.ip());
        let (server, _) = Actor::spawn(Some(format!("cairn-node-server-{name}")), server, ())
            .await
            .map_err(|e| Error::Start {
                part: "cluster",
                detail: format!("its server on {}: {e}", config.listen),
            })?;
        let linked = Arc::new(Mutex::new(Vec::new()));
        let agent = agent::Supervised::default();
        let (agent_supervisor, _) = Actor::spawn(
            None,
            agent::AgentSupervisor,
            (
                AgentArgs {
                    name: name.to_string(),
                    scheduler: config.roles.scheduler,
                    worker: config.roles.worker,
                    pool: pool.clone(),
                    peers: linked.clone(),
                },
                agent.clone(),
            ),
        )
        .await
        .map_err(|e| Error::Start {
            part: "cluster",
            detail: format!("its agent: {e}"),
        })?;
        let dispatch = ClusterDispatch::new(config.roles.worker.then_some(pool));
        let loads = Arc::new(Mutex::new(BTreeMap::new()));
        let seeds = Arc::new(Mutex::new(
            config
                .seeds
                .iter()
                .map(|s| (s.clone(), SeedState::new()))
                .collect::<BTreeMap<_, _>>(),
        ));
        let reload = config.tls.as_ref().map(|tls| tls.watch());
        let background = tokio::spawn(maintain(Links {
            server: server.clone(),
            address: config.address(),
            tls: config.tls.clone(),
            seeds: seeds.clone(),
            linked,
            dispatch: dispatch.clone(),
            loads: loads.clone(),
        }));
        Ok(Cluster {
            name: name.to_string(),
            roles: config.roles,
            server,
            agent,
            agent_supervisor,
            dispatch,
            loads,
            seeds,
            background,
            reload,
        })
    }

    /// Where this node's schedulers send jobs.
    pub fn dispatcher(&self) -> Arc<dyn cairn_worker::Dispatch> {
        Arc::new(dispatch::Dispatcher(self.dispatch.clone()))
    }

    /// Cluster agents restarted since the node started (an agent that panics or is killed is
    /// replaced, and rejoins the node's process groups).
    pub fn agent_restarts(&self) -> u64 {
        self.agent
            .restarts
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Kills the node's agent (as a panic in it would), for tests of supervision.
    #[doc(hidden)]
    pub fn kill_agent(&self) {
        if let Some(agent) = self.agent.agent.lock().as_ref() {
            agent.kill();
        }
    }

    /// This node's roles.
    pub fn roles(&self) -> Roles {
        self.roles
    }

    /// Leaves the cluster.
    pub fn stop(&self) {
        self.background.abort();
        if let Some(reload) = &self.reload {
            reload.abort();
        }
        self.agent
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(agent) = self.agent.agent.lock().as_ref() {
            agent.stop(None);
        }
        self.agent_supervisor.stop(None);
        self.server.stop(None);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the cluster loop works with.
struct Links {
    server: ActorRef<NodeServerMessage>,
    /// This node's own address (never dialled).
    address: String,
    tls: Option<ClusterTls>,
    seeds: Arc<Mutex<BTreeMap<String, SeedState>>>,
    /// The addresses this node is linked to, which its agent reports.
    linked: Arc<Mutex<Vec<String>>>,
    dispatch: Arc<ClusterDispatch>,
    loads: Arc<Mutex<BTreeMap<String, Load>>>,
}

/// Why a dial failed.
enum DialError {
    /// The TLS handshake failed: the peer refused this node's certificate or presented one the
    /// cluster CA did not sign, or it does not speak TLS.
    Refused(String),
    /// No connection (yet).
    Unreachable(String),
}

/// Opens a link to `address` (TLS when configured), bounded by [`DIAL_TIMEOUT`].
async fn dial(
    server: &ActorRef<NodeServerMessage>,
    address: &str,
    tls: Option<&ClusterTls>,
) -> Result<(), DialError> {
    let attempt = async {
        match tls {
            None => ractor_cluster::client_connect(server, address)
                .await
                .map_err(|e| DialError::Unreachable(e.to_string())),
            Some(tls) => {
                let name = crate::tls::server_name(address).map_err(DialError::Refused)?;
                ractor_cluster::client_connect_enc(server, address, tls.connector.clone(), name)
                    .await
                    .map_err(|e| match e {
                        ractor_cluster::ClientConnectErr::Encryption(e) => {
                            DialError::Refused(format!("TLS handshake failed: {e}"))
                        }
                        other => DialError::Unreachable(other.to_string()),
                    })
            }
        }
    };
    tokio::time::timeout(DIAL_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(DialError::Unreachable("timed out".into())))
}

/// Dials seeds and reported peers that are not linked (with backoff; a refusal is reported
/// once), and asks every member for its load.
async fn maintain(links: Links) {
    let Links {
        server,
        address,
        tls,
        seeds,
        linked,
        dispatch,
        loads,
    } = links;
    loop {
        let sessions = ractor::call!(server, NodeServerMessage::GetSessions).unwrap_or_default();
        *linked.lock() = sessions
            .values()
            .filter_map(|s| s.peer_name.as_ref().map(|n| n.connection_string.clone()))
            .collect();
        let names: Vec<String> = seeds.lock().keys().cloned().collect();
        for seed in names {
            // Joined: a session with a name, which only an accepted handshake gives, whose
            // address is the seed's as written or as it resolved (`localhost:7100` is joined
            // by a session with 127.0.0.1:7100).
            let resolved = seeds
                .lock()
                .get(&seed)
                .map(|s| s.resolved.clone())
                .unwrap_or_default();
            let is_seed = |a: &str| a == seed || resolved.iter().any(|r| r == a);
            let joined = sessions.values().any(|s| {
                s.peer_name
                    .as_ref()
                    .is_some_and(|n| is_seed(&n.connection_string) || is_seed(&s.peer_addr))
            });
            let due = {
                let mut all = seeds.lock();
                let Some(state) = all.get_mut(&seed) else {
                    continue;
                };
                if joined {
                    if !state.joined && state.failures > 0 {
                        tracing::info!(%seed, "joined seed");
                    }
                    *state = SeedState {
                        joined: true,
                        discovered: state.discovered,
                        resolved: std::mem::take(&mut state.resolved),
                        ..SeedState::new()
                    };
                    continue;
                }
                state.joined = false;
                if state.dialled {
                    // Connected at the last attempt, and no named session now: the seed's
                    // node closed it during the handshake.
                    state.dialled = false;
                    refused(&seed, state, REFUSED.to_string());
                }
                tokio::time::Instant::now() >= state.next_try
            };
            if !due {
                continue;
            }
            let resolved: Vec<String> = tokio::net::lookup_host(seed.as_str())
                .await
                .map(|addrs| addrs.map(|a| a.to_string()).collect())
                .unwrap_or_default();
            let result = dial(&server, &seed, tls.as_ref()).await;
            let mut all = seeds.lock();
            if let Some(state) = all.get_mut(&seed) {
                state.resolved = resolved;
                match result {
                    Ok(()) => state.dialled = true,
                    Err(DialError::Refused(problem)) => refused(&seed, state, problem),
                    Err(DialError::Unreachable(e)) => {
                        tracing::debug!(%seed, error = %e, "seed not reachable yet");
                        state.failed(format!("not reachable: {e}"));
                    }
                }
            }
        }
        let workers: Vec<_> = ractor::pg::get_members(&WORKERS_GROUP.to_string())
            .iter()
            .map(|c| c.get_id())
            .collect();
        let mut seen = BTreeMap::new();
        for member in ractor::pg::get_members(&NODES_GROUP.to_string()) {
            let id = member.get_id();
            let agent: ActorRef<AgentMsg> = ActorRef::from(member);
            if let Ok(CallResult::Success(raw)) = agent
                .call(AgentMsg::Load, Some(Duration::from_secs(2)))
                .await
                && let Ok(load) = rmp_serde::from_slice::<Load>(&raw)
            {
                if workers.contains(&id) {
                    dispatch.observed(id, &load);
                }
                seen.insert(load.name.clone(), load);
            }
        }
        discover(&seeds, &seen, &address);
        *loads.lock() = seen;
        tokio::time::sleep(REFRESH).await;
    }
}

/// Records a refusal, logging it when it is new for this seed.
fn refused(seed: &str, state: &mut SeedState, problem: String) {
    let first = state.failures == 0 || state.problem.as_deref() != Some(problem.as_str());
    state.failed(problem);
    if first {
        tracing::warn!(
            %seed,
            "could not join seed: {}; retrying with backoff (up to 30 s)",
            state.problem.as_deref().unwrap_or_default()
        );
    }
}

/// Adds the addresses members report and this node is not linked to (those greater than its
/// own: the other node dials the smaller ones), and forgets discovered addresses no member
/// reports any more.
fn discover(
    seeds: &Mutex<BTreeMap<String, SeedState>>,
    members: &BTreeMap<String, Load>,
    own: &str,
) {
    let reported: std::collections::BTreeSet<&String> =
        members.values().flat_map(|l| l.peers.iter()).collect();
    let mut all = seeds.lock();
    all.retain(|address, state| !state.discovered || state.joined || reported.contains(address));
    for address in reported {
        // Of two nodes that learn of each other, only the one with the smaller address dials:
        // two dials at once make two links, and ractor_cluster closing the duplicate looks,
        // for a moment, like a lost node whose jobs are sent elsewhere.
        if address.as_str() > own && !all.contains_key(address) {
            all.insert(
                address.clone(),
                SeedState {
                    discovered: true,
                    ..SeedState::new()
                },
            );
        }
    }
}

/// Another member as this node last saw it, or a seed it has not joined.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The node's name (a seed's address when it has not joined).
    pub name: String,
    /// Its roles (none known for a seed not joined).
    pub roles: Roles,
    /// Its workers.
    pub capacity: usize,
    /// Jobs running on it.
    pub busy: usize,
    /// Jobs waiting for one of its workers.
    pub queued: usize,
    /// Jobs it has run.
    pub executed: u64,
    /// Joined (a member), or a seed still dialled.
    pub joined: bool,
    /// Why a seed is not joined (e.g. its handshake refused the cookie).
    pub problem: Option<String>,
}

impl Cluster {
    /// Every other member with its last reported load, then every seed not joined.
    pub fn peers(&self) -> Vec<Peer> {
        let mut out: Vec<Peer> = self
            .loads
            .lock()
            .iter()
            .filter(|(name, _)| **name != self.name)
            .map(|(name, load)| Peer {
                name: name.clone(),
                roles: Roles {
                    scheduler: load.scheduler,
                    worker: load.worker,
                },
                capacity: load.capacity,
                busy: load.busy,
                queued: load.queued,
                executed: load.executed,
                joined: true,
                problem: None,
            })
            .collect();
        for (seed, state) in self.seeds.lock().iter() {
            if !state.joined && !state.discovered {
                out.push(Peer {
                    name: seed.clone(),
                    roles: Roles {
                        scheduler: false,
                        worker: false,
                    },
                    capacity: 0,
                    busy: 0,
                    queued: 0,
                    executed: 0,
                    joined: false,
                    problem: state.problem.clone(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster agent that dies (here killed, as a panic in it would) is replaced: the new one
    /// rejoins the node's process groups, the dead one leaves them, and it answers peers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_agent_is_restarted_and_rejoins_its_groups() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let node = crate::Node::builder()
            .name("agent-test")
            .store_url("memory:")
            .cluster(ClusterConfig {
                listen: format!("127.0.0.1:{port}").parse().unwrap(),
                advertise: None,
                seeds: Vec::new(),
                cookie: "c".into(),
                roles: Roles {
                    scheduler: true,
                    worker: true,
                },
                tls: None,
                insecure: false,
            })
            .start()
            .await
            .unwrap();
        let cluster = node.cluster().unwrap().clone();
        let current = || cluster.agent.agent.lock().clone().unwrap();
        let old = current();
        let in_group = |group: &str, agent: &ActorRef<AgentMsg>| {
            ractor::pg::get_members(&group.to_string())
                .iter()
                .any(|m| m.get_id() == agent.get_id())
        };
        assert!(in_group(WORKERS_GROUP, &old) && in_group(NODES_GROUP, &old));
        cluster.kill_agent();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while cluster.agent_restarts() < 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the agent was not restarted"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let new = current();
        assert_ne!(new.get_id(), old.get_id());
        assert!(in_group(WORKERS_GROUP, &new) && in_group(NODES_GROUP, &new));
        assert!(
            !in_group(WORKERS_GROUP, &old),
            "the dead agent left its groups"
        );
        match new
            .call(AgentMsg::Load, Some(Duration::from_secs(2)))
            .await
            .unwrap()
        {
            CallResult::Success(raw) => {
                let load: Load = rmp_serde::from_slice(&raw).unwrap();
                assert_eq!((load.name.as_str(), load.worker), ("agent-test", true));
            }
            other => panic!("the new agent did not answer: {other:?}"),
        }
        node.shutdown().await.unwrap();
    }
}
