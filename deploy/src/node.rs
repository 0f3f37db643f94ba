//! A node: one store, one catalog, one worker pool and a few scheduler actors, started together.

use cairn_engine::catalog::{Catalog, CatalogConfig};
use cairn_engine::clock::SystemClock;
use cairn_engine::runs::Runs;
use cairn_engine::schedule::{ScheduleSpec, Schedules};
use cairn_engine::task::{Task, TaskRegistry};
use cairn_engine::{AnyStore, Error};
use cairn_scheduler::{
    CallSummary, Ctx, Launcher, RunOptions, ScheduleRunner, SchedulerHandle, Started, SubmitError,
    SubmitRun, WorkflowRegistry,
};
use cairn_worker::WorkerPoolHandle;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

enum StoreSource {
    Url(String),
    Open(AnyStore),
}

/// Builds a [`Node`].
pub struct NodeBuilder {
    name: String,
    store: StoreSource,
    concurrency: usize,
    shards: usize,
    registry: TaskRegistry,
    workflows: WorkflowRegistry,
    schedules: Vec<ScheduleSpec>,
    schedule_poll: Duration,
    config: CatalogConfig,
    cluster: Option<crate::cluster::ClusterConfig>,
    error: Option<Error>,
}

impl NodeBuilder {
    /// The node's name (lease owner in the store). Default: `cairn-<pid>`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
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
            self.error.get_or_insert(e);
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

    /// Opens the store and starts the actors.
    pub async fn start(self) -> Result<Node, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let store = match self.store {
            StoreSource::Url(url) => AnyStore::open(&url).await?,
            StoreSource::Open(store) => store,
        };
        let catalog = Catalog::with(store, Arc::new(SystemClock), self.config);
        let registry = Arc::new(self.registry);
        let spawn_err = |e: ractor::SpawnErr| Error::Backend {
            backend: "actors",
            detail: e.to_string(),
        };
        let workers = WorkerPoolHandle::start(catalog.clone(), registry.clone(), self.concurrency)
            .await
            .map_err(spawn_err)?;
        let cluster = match self.cluster {
            None => None,
            Some(config) => Some(
                crate::cluster::Cluster::start(&self.name, config, workers.clone())
                    .await
                    .map_err(|detail| Error::Backend {
                        backend: "cluster",
                        detail,
                    })?,
            ),
        };
        let dispatch: Arc<dyn cairn_worker::Dispatch> = match &cluster {
            Some(c) => c.dispatcher(),
            None => Arc::new(workers.clone()),
        };
        let scheduler = SchedulerHandle::start(&self.name, catalog.clone(), dispatch, self.shards)
            .await
            .map_err(spawn_err)?;
        let schedules = Schedules::new(catalog.store().clone(), Arc::new(SystemClock));
        let runs = Runs::new(catalog.store().clone(), Arc::new(SystemClock));
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
            self.name.clone(),
        );
        let runner = (!self.schedules.is_empty()).then(|| {
            ScheduleRunner::start(
                schedules.clone(),
                launcher.clone(),
                self.name.clone(),
                self.schedule_poll,
            )
        });
        Ok(Node {
            name: self.name,
            catalog,
            registry,
            workers,
            scheduler,
            schedules,
            launcher,
            cluster: cluster.map(Arc::new),
            _runner: runner,
        })
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

/// A running node.
pub struct Node {
    name: String,
    catalog: Catalog<AnyStore>,
    registry: Arc<TaskRegistry>,
    workers: WorkerPoolHandle,
    scheduler: SchedulerHandle,
    schedules: Schedules<AnyStore>,
    launcher: Launcher,
    cluster: Option<Arc<crate::cluster::Cluster>>,
    _runner: Option<ScheduleRunner>,
}

impl Node {
    /// A builder with the defaults.
    pub fn builder() -> NodeBuilder {
        NodeBuilder {
            name: format!("cairn-{}", std::process::id()),
            store: StoreSource::Url("embedded:./cairn-data".into()),
            concurrency: 64,
            shards: std::thread::available_parallelism().map_or(2, |n| n.get()),
            registry: TaskRegistry::new(),
            workflows: WorkflowRegistry::new(),
            schedules: Vec::new(),
            schedule_poll: Duration::from_secs(1),
            config: CatalogConfig::default(),
            cluster: None,
            error: None,
        }
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
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

    /// The worker pool.
    pub fn workers(&self) -> &WorkerPoolHandle {
        &self.workers
    }

    /// A context for a new run, to call tasks outside [`Node::run`].
    pub fn ctx(&self, options: RunOptions) -> Ctx {
        Ctx::new(self.scheduler.clone(), options)
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
            calls: ctx.calls(),
            duration: started.elapsed(),
        }
    }

    /// Writes pending execution records and stops the actors.
    pub async fn shutdown(self) -> Result<(), Error> {
        let flushed = self.catalog.flush_records().await;
        self.scheduler.stop();
        if let Some(c) = &self.cluster {
            c.stop();
        }
        self.workers.stop();
        flushed
    }
}
