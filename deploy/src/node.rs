//! A node: one store, one catalog, one worker pool and a few scheduler actors, started together.

use crate::error::Error;
use cairn_engine::AnyStore;
use cairn_engine::catalog::{Catalog, CatalogConfig};
use cairn_engine::clock::{Clock, SystemClock};
use cairn_engine::entropy::Entropy;
use cairn_engine::nodes::{Incarnation, Nodes};
use cairn_engine::runs::{Cancellations, Ended, RunLimits, Runs};
use cairn_engine::schedule::{ScheduleSpec, Schedules};
use cairn_engine::task::{Task, TaskRegistry};
use cairn_scheduler::{
    CallLimits, CallSummary, Ctx, KeeperConfig, LaunchConfig, Launcher, RunKeeper, RunOptions,
    ScheduleRunner, SchedulerHandle, Started, SubmitError, SubmitRun, WorkflowRegistry,
};
use cairn_worker::{PoolOptions, WorkerPoolHandle};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

enum StoreSource {
    Url(String),
    Open(AnyStore),
}

/// Builds a [`Node`].
pub struct NodeBuilder {
    name: Option<String>,
    store: StoreSource,
    concurrency: usize,
    shards: usize,
    registry: TaskRegistry,
    workflows: WorkflowRegistry,
    schedules: Vec<ScheduleSpec>,
    schedule_poll: Duration,
    config: CatalogConfig,
    cluster: Option<crate::cluster::ClusterConfig>,
    keeper: KeeperConfig,
    run_limits: RunLimits,
    call_limits: CallLimits,
    cancel_grace: Duration,
    expiry_every: Option<Duration>,
    clock: Arc<dyn Clock>,
    entropy: Entropy,
    dispatch: Option<MakeDispatch>,
    error: Option<Error>,
}

/// Builds a node's dispatcher from its worker pool; see [`NodeBuilder::dispatch_with`].
type MakeDispatch = Box<dyn FnOnce(WorkerPoolHandle) -> Arc<dyn cairn_worker::Dispatch> + Send>;

impl NodeBuilder {
    /// The node's name: its identity in the store (lease and run owner), which must be unique
    /// among running nodes and should stay the same across restarts of the same node, so that a
    /// restart takes over what the previous process left at once. Default: the host name and a
    /// hash of the store directory for an embedded store (one process per directory), the host
    /// name and process id otherwise.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The wall clock the node stamps entries, expiry, runs and schedules with (default: the
    /// system's). Durations (lease TTLs, timeouts) are measured on tokio's clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Where the node's randomness comes from: execution and operation ids, node tokens,
    /// jitter (default: the operating system's). A seeded one makes a simulation replayable.
    pub fn entropy(mut self, entropy: Entropy) -> Self {
        self.entropy = entropy;
        self
    }

    /// Sends the schedulers' jobs through the dispatcher `make` builds from this node's worker
    /// pool, instead of through the pool itself (or the cluster's dispatcher): how the
    /// simulation routes jobs between simulated nodes.
    pub fn dispatch_with(
        mut self,
        make: impl FnOnce(WorkerPoolHandle) -> Arc<dyn cairn_worker::Dispatch> + Send + 'static,
    ) -> Self {
        self.dispatch = Some(Box::new(make));
        self
    }

    /// The node's liveness TTL (default 10 s): other nodes take its runs over after seeing no
    /// heartbeat from it for this long on their own clocks.
    pub fn node_ttl(mut self, ttl: Duration) -> Self {
        self.keeper.ttl = ttl.max(Duration::from_millis(30));
        self
    }

    /// Whether this node takes over runs of nodes that are gone (default yes; a node with only
    /// the worker role does not).
    pub fn takes_over_runs(mut self, yes: bool) -> Self {
        self.keeper.takes_over = yes;
        self
    }

    /// Limits of the run table (input, output and error sizes, journal and idempotency-key
    /// retention).
    pub fn run_limits(mut self, limits: RunLimits) -> Self {
        self.run_limits = limits;
        self
    }

    /// Bounds on each run's calls: in flight at once (further calls wait), and in all (further
    /// calls fail the run). Default 4,096 and 10,000,000.
    pub fn call_limits(mut self, limits: CallLimits) -> Self {
        self.call_limits = limits;
        self
    }

    /// How often this node removes expired cache entries (default 60 s, jittered); `None`
    /// turns the collector off (a node with only the scheduler role does not collect).
    pub fn expiry_collection(mut self, every: Option<Duration>) -> Self {
        self.expiry_every = every;
        self
    }

    /// How long a cancelled run's task bodies may still run before they are aborted (default
    /// 500 ms).
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    /// The store URL (default `embedded:./cairn-data`).
    pub fn store_url(mut self, url: impl Into<String>) -> Self {
        self.store = StoreSource::Url(url.into());
        self
    }

    /// An already open store.
    pub fn store(mut self, store: AnyStore) -> Self {
        self.store = StoreSource::Open(store);
        self
    }

    /// Tasks run at once by this node's workers (default 64).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Scheduler actors (default: one per CPU).
    pub fn schedulers(mut self, n: usize) -> Self {
        self.shards = n.max(1);
        self
    }

    /// Catalog settings.
    pub fn catalog_config(mut self, config: CatalogConfig) -> Self {
        self.config = config;
        self
    }

    /// Joins a cluster: jobs are dispatched to worker nodes across it, and this node's workers
    /// (if it has the worker role) run jobs of other nodes' schedulers.
    pub fn cluster(mut self, config: crate::cluster::ClusterConfig) -> Self {
        self.cluster = Some(config);
        self
    }

    /// Registers a task this node's workers can run.
    pub fn task<T: Task>(mut self, task: T) -> Self {
        if let Err(e) = self.registry.register(task) {
            self.error.get_or_insert(e.into());
        }
        self
    }

    /// Registers a workflow that runs can be started of by `name` (through the API, the CLI or
    /// a schedule). Its input is decoded from JSON, its output encoded to JSON; schedules hand it
    /// a [`cairn_scheduler::ScheduledInput`].
    pub fn workflow<I, O, E, F, Fut>(mut self, name: impl Into<String>, workflow: F) -> Self
    where
        I: DeserializeOwned + JsonSchema + Send + 'static,
        O: Serialize + JsonSchema + 'static,
        E: Display + 'static,
        F: Fn(Ctx, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
    {
        self.workflows.register(name, workflow);
        self
    }

    /// Registers workflows straight into the registry: those whose input and output are JSON
    /// already (a tasks file's, see [`cairn_scheduler::WorkflowRegistry::register_json`]).
    pub fn register_workflows(mut self, register: impl FnOnce(&mut WorkflowRegistry)) -> Self {
        register(&mut self.workflows);
        self
    }

    /// Declares a schedule (registered in the store at start; every node may declare the same
    /// schedules: each tick still fires once).
    pub fn schedule(mut self, spec: ScheduleSpec) -> Self {
        self.schedules.push(spec);
        self
    }

    /// How often this node polls schedules at the least (default 1 s; it also wakes at each
    /// schedule's next fire time).
    pub fn schedule_poll(mut self, every: Duration) -> Self {
        self.schedule_poll = every;
        self
    }

    /// Opens the store, starts a new incarnation of the node and starts the actors.
    pub async fn start(self) -> Result<Node, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let (store, url) = match self.store {
            StoreSource::Url(url) => (AnyStore::open(&url).await?, Some(url)),
            StoreSource::Open(store) => (store, None),
        };
        let name = self.name.unwrap_or_else(|| default_name(url.as_deref()));
        let mut config = self.config;
        config.retry.entropy = self.entropy.clone();
        let catalog = Catalog::with(store, self.clock.clone(), config);
        let nodes = Nodes::new(catalog.store().clone(), self.clock.clone())
            .with_entropy(self.entropy.clone());
        let me = nodes.start(&name, self.keeper.ttl).await?;
        catalog.liveness().set_me(me.clone());
        // Earlier incarnations of other nodes are known superseded from the first call.
        if let Ok(records) = nodes.list().await {
            catalog
                .liveness()
                .observe(&records, tokio::time::Instant::now());
        }
        let registry = Arc::new(self.registry);
        let spawn_err = |part: &'static str| {
            move |e: ractor::SpawnErr| Error::Start {
                part,
                detail: e.to_string(),
            }
        };
        let cancels = Cancellations::default();
        let pool = PoolOptions {
            concurrency: self.concurrency,
            cancels: cancels.clone(),
            cancel_grace: self.cancel_grace,
        };
        let workers = WorkerPoolHandle::start_with(catalog.clone(), registry.clone(), pool)
            .await
            .map_err(spawn_err("workers"))?;
        let cluster = match self.cluster {
            None => None,
            Some(config) => {
                Some(crate::cluster::Cluster::start(&name, config, workers.clone()).await?)
            }
        };
        let dispatch: Arc<dyn cairn_worker::Dispatch> = match (&cluster, self.dispatch) {
            (_, Some(make)) => make(workers.clone()),
            (Some(c), None) => c.dispatcher(),
            (None, None) => Arc::new(workers.clone()),
        };
        let scheduler = SchedulerHandle::start(&name, catalog.clone(), dispatch, self.shards)
            .await
            .map_err(spawn_err("schedulers"))?;
        let schedules = Schedules::new(catalog.store().clone(), self.clock.clone())
            .with_entropy(self.entropy.clone());
        let runs = Runs::with_limits(catalog.store().clone(), self.clock.clone(), self.run_limits)
            .with_entropy(self.entropy.clone());
        for spec in &self.schedules {
            if !self.workflows.contains(&spec.workflow) {
                return Err(Error::InvalidInput {
                    what: format!("schedule {:?}", spec.name),
                    reason: format!(
                        "workflow {:?} is not registered on this node",
                        spec.workflow
                    ),
                });
            }
            schedules.register(spec).await?;
        }
        let launcher = Launcher::new(
            self.workflows,
            scheduler.clone(),
            catalog.clone(),
            runs,
            LaunchConfig {
                me: me.clone(),
                cancels,
                limits: self.call_limits,
            },
        );
        let runner = (!self.schedules.is_empty()).then(|| {
            ScheduleRunner::start(schedules.clone(), launcher.clone(), self.schedule_poll)
        });
        let collector = self
            .expiry_every
            .map(|every| AbortOnDrop(catalog.spawn_expiry_collector(every)));
        let keeper = RunKeeper::start(
            nodes.clone(),
            catalog.liveness().clone(),
            launcher.clone(),
            self.keeper,
        );
        Ok(Node {
            me,
            nodes,
            catalog,
            registry,
            workers,
            scheduler,
            schedules,
            launcher,
            call_limits: self.call_limits,
            cluster: cluster.map(Arc::new),
            _runner: runner,
            _keeper: keeper,
            _collector: collector,
        })
    }
}

/// This machine's host name (`localhost` when it cannot be read).
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A name that stays the same across restarts where that is safe: an embedded store's
/// directory is used by one process at a time, so host and directory name the node.
pub(crate) fn default_name(url: Option<&str>) -> String {
    let host = host_name();
    let dir = url
        .and_then(|u| u.strip_prefix("embedded:"))
        .map(|rest| rest.split('?').next().unwrap_or(rest))
        .and_then(|dir| std::path::absolute(dir).ok());
    match dir {
        Some(dir) => format!(
            "{host}-{:08x}",
            xxhash_rust::xxh3::xxh3_64(dir.to_string_lossy().as_bytes()) as u32
        ),
        None => format!("{host}-{}", std::process::id()),
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct RunReport<T> {
    /// The run id.
    pub run_id: String,
    /// What the workflow returned.
    pub output: T,
    /// Every task call, with its cache status and time, in completion order.
    pub calls: Vec<CallSummary>,
    /// Wall time of the run.
    pub duration: Duration,
}

/// A running node: a store, a catalog, a worker pool, schedulers, the run keeper and (when
/// asked) schedules and a cluster, started together by [`NodeBuilder::start`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anyhow::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// let node = cairn::examples::register(cairn::Node::builder())
///     .store_url(format!("embedded:{}", dir.path().display()))
///     .name("docs-node")
///     .concurrency(4)
///     .start()
///     .await?;
/// assert_eq!(node.name(), "docs-node");
/// assert!(node.workflows().get("sum_of_squares").is_some());
/// # Ok(())
/// # }
/// ```
pub struct Node {
    me: Incarnation,
    nodes: Nodes<AnyStore>,
    catalog: Catalog<AnyStore>,
    registry: Arc<TaskRegistry>,
    workers: WorkerPoolHandle,
    scheduler: SchedulerHandle,
    schedules: Schedules<AnyStore>,
    launcher: Launcher,
    call_limits: CallLimits,
    cluster: Option<Arc<crate::cluster::Cluster>>,
    _runner: Option<ScheduleRunner>,
    _keeper: RunKeeper,
    _collector: Option<AbortOnDrop>,
}

/// A background task stopped with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Node {
    /// A builder with the defaults.
    pub fn builder() -> NodeBuilder {
        NodeBuilder {
            name: None,
            store: StoreSource::Url("embedded:./cairn-data".into()),
            concurrency: 64,
            shards: std::thread::available_parallelism().map_or(2, |n| n.get()),
            registry: TaskRegistry::new(),
            workflows: WorkflowRegistry::new(),
            schedules: Vec::new(),
            schedule_poll: Duration::from_secs(1),
            config: CatalogConfig::default(),
            cluster: None,
            keeper: KeeperConfig::default(),
            run_limits: RunLimits::default(),
            call_limits: CallLimits::default(),
            expiry_every: Some(Duration::from_secs(60)),
            cancel_grace: Duration::from_millis(500),
            clock: Arc::new(SystemClock),
            entropy: Entropy::os(),
            dispatch: None,
            error: None,
        }
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.me.node
    }

    /// This process's incarnation of the node.
    pub fn incarnation(&self) -> &Incarnation {
        &self.me
    }

    /// The node table (every node's incarnation and heartbeat).
    pub fn nodes(&self) -> &Nodes<AnyStore> {
        &self.nodes
    }

    /// Cancels run `run_id`, wherever it runs: it ends as `cancelled` at once, makes no new
    /// call, and its in-flight task bodies are aborted (after the cancel grace) with their
    /// leases released.
    pub async fn cancel(&self, run_id: &str) -> Result<Ended, Error> {
        Ok(self
            .launcher
            .cancel(run_id, &format!("cancelled through node {}", self.me.node))
            .await?)
    }

    /// The cache catalog (browse, evict, read execution records).
    pub fn catalog(&self) -> &Catalog<AnyStore> {
        &self.catalog
    }

    /// The registered tasks.
    pub fn registry(&self) -> &TaskRegistry {
        &self.registry
    }

    /// The schedules in this node's store (list, pause, resume, backfill).
    pub fn schedules(&self) -> &Schedules<AnyStore> {
        &self.schedules
    }

    /// Runs started by name, on any node sharing the store.
    pub fn runs(&self) -> &Runs<AnyStore> {
        self.launcher.runs()
    }

    /// The registered workflows.
    pub fn workflows(&self) -> &WorkflowRegistry {
        self.launcher.workflows()
    }

    /// Starts a run of a registered workflow: checks its input, records the run and starts it.
    /// Returns once the run is recorded; [`Started::finished`] resolves when it ends.
    pub async fn submit(&self, request: SubmitRun) -> Result<Started, SubmitError> {
        self.launcher.submit(request).await
    }

    /// The node's cluster membership, when it joined one.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.as_ref()
    }

    /// The node's scheduler shards (supervised: see [`SchedulerHandle::restarts`]).
    pub fn schedulers(&self) -> &SchedulerHandle {
        &self.scheduler
    }

    /// The worker pool.
    pub fn workers(&self) -> &WorkerPoolHandle {
        &self.workers
    }

    /// A context for a new run, to call tasks outside [`Node::run`].
    pub fn ctx(&self, options: RunOptions) -> Ctx {
        Ctx::with_limits(self.scheduler.clone(), options, self.call_limits)
    }

    /// Runs `workflow` as one run and reports every call it made.
    pub async fn run<F, Fut, T>(&self, options: RunOptions, workflow: F) -> RunReport<T>
    where
        F: FnOnce(Ctx) -> Fut,
        Fut: Future<Output = T>,
    {
        let ctx = self.ctx(options);
        let started = Instant::now();
        let output = workflow(ctx.clone()).await;
        RunReport {
            run_id: ctx.run_id().to_string(),
            output,
            calls: ctx.into_calls(),
            duration: started.elapsed(),
        }
    }

    /// Stops the node: its runs stop here without ending (its incarnation is marked stopped, so
    /// another node, or this node's next start, resumes them at once), pending execution
    /// records are written, and the actors stop.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.launcher.abandon_all();
        let flushed = self.catalog.flush_records().await;
        if let Err(e) = self.nodes.stop(&self.me).await {
            tracing::warn!(error = %e, "could not mark this node stopped; its runs are resumed after its TTL");
        }
        self.scheduler.stop();
        if let Some(c) = &self.cluster {
            c.stop();
        }
        self.workers.stop();
        Ok(flushed?)
    }
}
