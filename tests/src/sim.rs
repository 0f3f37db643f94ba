//! Deterministic simulation of whole Cairn nodes.
//!
//! Each seed builds a [`turmoil`] world: N hosts, each running a real [`cairn::Node`] (scheduler
//! actors, worker pool, catalog, recorder, beater, run keeper) on one shared in-memory database
//! ([`MemoryStore`], FoundationDB's transaction model, under FoundationDB's limits), each through
//! its own link that can be partitioned. Time is turmoil's virtual time (tokio's paused clock on
//! every host); wall time is a per-node skewed clock on it; randomness is a per-node seeded
//! [`Entropy`]. Everything runs on one thread, so a seed replays exactly: the test runs every
//! seed twice and compares the hashes of the two traces.
//!
//! A seed enables a random subset of the workload and of the nemeses (swarm testing): identical
//! key storms from every node, distinct keys, failing and panicking tasks with retries,
//! evictions racing with calls, entries expiring (`max_age`) and collected while called, a
//! schedule paused, resumed and backfilled by an operator while
//! the nodes poll it, store faults (conflict storms, unknown commit results both ways,
//! lost connections, latency, late/dropped/spurious watch hints), node crashes and restarts,
//! partitions of a node from the store, and wall-clock jumps. A chaos phase is followed by a
//! quiet phase (faults off, partitions healed, crashed nodes restarted) in which every node
//! calls every key again: those calls must all complete, and agree.
//!
//! Invariants, checked at the end of each seed:
//! - every answer a caller got for a key within one epoch (between two evictions of it) is the
//!   same bytes, and in the last epoch the bytes of the stored entry;
//! - executions of a key stay within one per epoch plus one per nemesis event and injected task
//!   failure (without nemeses and failures: exactly one per epoch);
//! - every call of the quiet phase completes, without error, within the phase.

use cairn::{
    AnyStore, CallError, Ctx, Node, Overlap, RunOptions, RunStatus, Runs, ScheduleSpec,
    ScheduledInput, TaskError, Trigger,
};
use cairn_engine::catalog::{CacheKey, Catalog, CatalogConfig, EvictScope};
use cairn_engine::clock::Clock;
use cairn_engine::entropy::Entropy;
use cairn_engine::store::fdb_limits::{FdbLimited, FdbLimitsConfig};
use cairn_engine::store::memory::{Faults, MemoryStore};
use cairn_engine::task::{Job, JobReport};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

/// Project and domain of every simulated call.
const PROJECT: &str = "sim";
const DOMAIN: &str = "d";

/// Which parts of the workload and which nemeses a seed enables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swarm {
    /// Many calls of few keys from every node at once.
    pub storms: bool,
    /// Calls of a task that fails or panics on some attempts (it has one retry).
    pub failing: bool,
    /// Evictions of keys racing with calls.
    pub evictions: bool,
    /// Conflict storms, unknown commit results, lost connections.
    pub store_faults: bool,
    /// Store latency.
    pub latency: bool,
    /// Late, dropped and spurious watch hints.
    pub watch_faults: bool,
    /// Node crashes and restarts.
    pub crashes: bool,
    /// A node cut off from the store for a while.
    pub partitions: bool,
    /// Wall clocks jumping.
    pub clock_jumps: bool,
    /// A schedule firing every half second on every node (its runs are durable runs by name,
    /// taken over when their node is gone).
    pub schedules: bool,
    /// Runs submitted by name with idempotency keys (the same key from several nodes), and
    /// cancelled.
    pub runs: bool,
    /// Calls that overwrite the entry, racing with ordinary calls.
    pub overwrites: bool,
    /// Each node's monotonic clock runs at its own rate (0.8–1.25): it beats leases and times
    /// silent ones out at that rate.
    pub drift: bool,
    /// About half the jobs run on another node, sent over a simulated link that the nemesis
    /// may cut between two nodes.
    pub remote_jobs: bool,
    /// With `schedules`: an operator pauses the schedule during the chaos phase, resumes it,
    /// then backfills every tick that has not fired since the epoch, racing with the nodes'
    /// polls. Every tick must still fire exactly once (live or backfilled) and end.
    pub pause_backfill: bool,
    /// Calls of a task whose entries expire after 5 s (`max_age`), from every node, in the
    /// chaos and quiet phases and once more at 14.5 s: entries expire, are recomputed once per
    /// expiry, and are never returned stale.
    pub expiry: bool,
}

impl Swarm {
    /// A random subset, drawn from `rng`.
    fn draw(rng: &mut StdRng) -> Self {
        Swarm {
            storms: rng.random_bool(0.6),
            failing: rng.random_bool(0.4),
            evictions: rng.random_bool(0.3),
            store_faults: rng.random_bool(0.4),
            latency: rng.random_bool(0.4),
            watch_faults: rng.random_bool(0.3),
            crashes: rng.random_bool(0.3),
            partitions: rng.random_bool(0.25),
            clock_jumps: rng.random_bool(0.2),
            schedules: rng.random_bool(0.4),
            runs: rng.random_bool(0.4),
            overwrites: rng.random_bool(0.25),
            drift: rng.random_bool(0.3),
            remote_jobs: rng.random_bool(0.5),
            pause_backfill: false,
            expiry: false,
        }
    }

    fn nemeses(&self) -> bool {
        self.crashes || self.partitions || self.clock_jumps
    }
}

/// What one seed did and found.
#[derive(Debug, Clone)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// What it enabled.
    pub swarm: Swarm,
    /// Hash of the whole trace: equal for two runs of one seed.
    pub trace_hash: u64,
    /// Events in the trace.
    pub events: usize,
    /// Invariants broken (empty: none).
    pub violations: Vec<String>,
    /// The last events before the end, readable.
    pub tail: Vec<String>,
    /// Task executions, answers, and nemesis events.
    pub executions: usize,
    /// Answers callers got.
    pub answers: usize,
    /// Crashes, partitions and clock jumps.
    pub nemesis_events: usize,
}

/// One answer a caller got.
#[derive(Debug, Clone)]
struct Answer {
    key: u64,
    quiet: bool,
    result: Result<Vec<u8>, String>,
    /// Virtual time of the answer.
    at: Duration,
}

/// An execution's key id, and the virtual times of its start and of its body's end.
type ExecutionTimes = (u64, Duration, Option<Duration>);

/// The state every host and task of one seed shares (one thread: `Rc`, `RefCell`).
struct World {
    rng: RefCell<StdRng>,
    trace: RefCell<Vec<String>>,
    hash: RefCell<xxhash_rust::xxh3::Xxh3>,
    executions: RefCell<BTreeMap<u64, u64>>,
    /// Each execution's key id, and virtual times of its start and of its body's end.
    execution_times: RefCell<BTreeMap<u64, ExecutionTimes>>,
    /// Nodes that made their calls at [`FINAL_AT`].
    final_done: RefCell<BTreeSet<usize>>,
    failures_injected: RefCell<BTreeMap<u64, u64>>,
    answers: RefCell<Vec<Answer>>,
    epochs: RefCell<BTreeMap<u64, u64>>,
    next_execution: RefCell<u64>,
    quiet: RefCell<bool>,
    failing: bool,
    /// Starts of each tick's workflow body (kickoff ms → the nodes that started it).
    tick_starts: RefCell<BTreeMap<i64, Vec<String>>>,
    /// Runs submitted by name: idempotency key → the run ids the submissions returned.
    submitted: RefCell<BTreeMap<String, BTreeSet<String>>>,
    /// Cancels that reported having ended the run, by run id.
    cancelled_by_us: RefCell<BTreeMap<String, u32>>,
    /// Final statuses seen by those who waited for a run's end, by run id.
    seen_final: RefCell<BTreeMap<String, BTreeSet<String>>>,
    /// Runs (contexts) whose records were flushed, with the execution ids of their calls.
    run_calls: RefCell<Vec<(String, Vec<String>)>>,
    /// The simulated links between nodes: jobs in flight, inboxes, cuts, nodes down.
    links: RefCell<Links>,
}

thread_local! {
    static WORLD: RefCell<Option<Rc<World>>> = const { RefCell::new(None) };
}

fn world() -> Rc<World> {
    WORLD.with(|w| w.borrow().clone().expect("inside a simulation"))
}

impl World {
    fn event(&self, line: String) {
        self.event_at(turmoil::sim_elapsed().unwrap_or_default(), line);
    }

    /// An event of the driver (outside any host), at virtual time `at`.
    fn event_at(&self, at: Duration, line: String) {
        let at = at.as_millis();
        let line = format!("{at:>7} {line}");
        self.hash.borrow_mut().update(line.as_bytes());
        self.hash.borrow_mut().update(b"\n");
        let mut trace = self.trace.borrow_mut();
        trace.push(line);
        if trace.len() > 4_000 {
            trace.drain(..2_000);
        }
    }

    fn draw(&self, below: u64) -> u64 {
        self.rng.borrow_mut().random_range(0..below.max(1))
    }
}

/// Notes an execution of `task` for key id `id` in the world; returns its number, its pause
/// and (for `flaky`) its roll. Synchronous, so that no task future holds the world.
fn begin_execution(task: &str, id: u64) -> (u64, u64, u64) {
    let w = world();
    let n = {
        let mut next = w.next_execution.borrow_mut();
        *next += 1;
        *next
    };
    *w.executions.borrow_mut().entry(id).or_default() += 1;
    w.execution_times
        .borrow_mut()
        .insert(n, (id, turmoil::sim_elapsed().unwrap_or_default(), None));
    let roll = if *w.quiet.borrow() { 9 } else { w.draw(10) };
    if task == "flaky" && roll < 3 {
        *w.failures_injected.borrow_mut().entry(id).or_default() += 1;
    }
    w.event(format!("exec {task} id={id} n={n} roll={roll}"));
    // Mostly short; some outlast the lease TTL, so that a partition or a crash meets them.
    let pause = if w.draw(10) < 3 {
        w.draw(4_000)
    } else {
        w.draw(300)
    };
    (n, pause, roll)
}

/// The cached task every workload calls: its output names the execution that produced it, so
/// two executions' outputs always differ.
#[cairn::task(cache = true, cache_version = "1", lease_ttl = "2s")]
async fn work(key: u64) -> Vec<u8> {
    let (n, pause, _) = begin_execution("work", key);
    let unfinished = Unfinished(Some(key));
    tokio::time::sleep(Duration::from_millis(pause)).await;
    unfinished.finish();
    format!("k{key}-n{n}").into_bytes()
}

/// Key ids of [`aging`] start here.
const AGING: u64 = 2_000;
/// How many keys [`aging`] is called with.
const AGING_KEYS: u64 = 2;
/// Its `max_age`.
const MAX_AGE: Duration = Duration::from_secs(5);
/// When every node calls every [`aging`] key once more: long enough after the chaos phase that
/// an entry stored then has expired in every node's view.
const FINAL_AT: Duration = Duration::from_millis(14_500);

/// A cached task whose entries expire after [`MAX_AGE`].
#[cairn::task(cache = true, cache_version = "1", lease_ttl = "2s", max_age = "5s")]
async fn aging(key: u64) -> Vec<u8> {
    let (n, pause, _) = begin_execution("aging", AGING + key);
    let unfinished = Unfinished(Some(AGING + key));
    tokio::time::sleep(Duration::from_millis(pause.min(300))).await;
    unfinished.finish();
    let w = world();
    if let Some(t) = w.execution_times.borrow_mut().get_mut(&n) {
        t.2 = Some(turmoil::sim_elapsed().unwrap_or_default());
    }
    format!("a{key}-n{n}").into_bytes()
}

/// Notes an execution dropped before it returned (its run was cancelled, or its node crashed):
/// the key may rightly run again.
struct Unfinished(Option<u64>);

impl Unfinished {
    fn finish(mut self) {
        self.0 = None;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(id) = self.0 {
            WORLD.with(|w| {
                if let Ok(w) = w.try_borrow()
                    && let Some(w) = w.as_ref()
                {
                    *w.failures_injected.borrow_mut().entry(id).or_default() += 1;
                }
            });
        }
    }
}

/// A cached task that fails or panics on some attempts; it has one retry.
#[cairn::task(cache = true, cache_version = "1", lease_ttl = "2s", retries = 1)]
async fn flaky(key: u64) -> Result<Vec<u8>, String> {
    let (n, pause, roll) = begin_execution("flaky", 1_000 + key);
    let unfinished = Unfinished(Some(1_000 + key));
    tokio::time::sleep(Duration::from_millis(pause / 3)).await;
    unfinished.finish();
    match roll {
        0 | 1 => Err(format!("injected failure of execution {n}")),
        2 => panic!("injected panic of execution {n}"),
        _ => Ok(format!("f{key}-n{n}").into_bytes()),
    }
}

/// Notes that the workflow of the tick at `kickoff_ms` started on `node`.
fn note_tick(kickoff_ms: i64, node: &str) {
    let w = world();
    w.event(format!("{node} tick {kickoff_ms} starts"));
    w.tick_starts
        .borrow_mut()
        .entry(kickoff_ms)
        .or_default()
        .push(node.to_string());
}

/// Wall time on turmoil's virtual clock, skewed per node (and jumped by the nemesis).
struct SimClock {
    skew_ms: Arc<AtomicI64>,
}

/// Where every seed's virtual wall clock starts.
const EPOCH_MS: i64 = 1_790_000_000_000;

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        let since = turmoil::sim_elapsed().unwrap_or_default();
        EPOCH_MS + since.as_millis() as i64 + self.skew_ms.load(Ordering::Relaxed)
    }
}

/// One operation of a node's workload.
#[derive(Debug, Clone, Copy)]
enum Op {
    Call(u64),
    Flaky(u64),
    Evict(u64),
    Pause(u64),
    /// Submit run number n by name (idempotency key `run-n`; several ops may submit one n).
    Submit(u64),
    /// Cancel run number n, if it was submitted.
    Cancel(u64),
    /// Call `work(k)` with `overwrite_cache`: it runs again and replaces the entry.
    Overwrite(u64),
    /// Call `aging(k)`.
    Aging(u64),
}

/// The simulated network between nodes, for jobs sent from one node's scheduler to another
/// node's workers. It lives in the world (one thread), so that what a crash or a cut does to
/// the jobs in flight happens in an order the driver decides: by job number.
#[derive(Default)]
struct Links {
    next: u64,
    /// Jobs sent and not answered: number → (from, to, where the report goes).
    in_flight: BTreeMap<u64, (usize, usize, tokio::sync::oneshot::Sender<JobReport>)>,
    /// Jobs delivered to a node and not yet taken by its job listener.
    inbox: BTreeMap<usize, VecDeque<(u64, Job)>>,
    /// Wakes each node's job listener.
    bells: BTreeMap<usize, Arc<tokio::sync::Notify>>,
    /// Pairs of nodes whose link is cut.
    cut: BTreeSet<(usize, usize)>,
    /// Nodes crashed (their listeners and pools are gone).
    down: BTreeSet<usize>,
}

impl Links {
    fn pair(a: usize, b: usize) -> (usize, usize) {
        (a.min(b), a.max(b))
    }

    /// Loses every job in flight that `lost(from, to)` selects, in job order: their senders
    /// see the link fail.
    fn fail(&mut self, lost: impl Fn(usize, usize) -> bool) {
        let doomed: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, (from, to, _))| lost(*from, *to))
            .map(|(n, _)| *n)
            .collect();
        for n in doomed {
            self.in_flight.remove(&n);
        }
        for q in self.inbox.values_mut() {
            q.retain(|(n, _)| self.in_flight.contains_key(n));
        }
    }
}

/// How long a job sent to another node may take before it is reported lost.
const REMOTE_JOB_TIMEOUT: Duration = Duration::from_secs(15);

/// A node's dispatcher in the simulation: about half its jobs run on its own pool, the others on
/// another node's, over a simulated link (a few milliseconds each way). A link that is cut, a
/// node that is down, or no answer within [`REMOTE_JOB_TIMEOUT`] reports the job lost, as the
/// cluster's dispatcher does when a worker node goes.
struct SimDispatch {
    me: usize,
    nodes: usize,
    local: cairn::WorkerPoolHandle,
    entropy: Entropy,
}

impl cairn::Dispatch for SimDispatch {
    fn submit(&self, job: Job, report: cairn::ReportTo) {
        let to = (self.entropy.next_u64() % (2 * self.nodes as u64)) as usize;
        if to >= self.nodes || to == self.me {
            return self.local.submit(job, report);
        }
        let (me, cached) = (self.me, job.cache.is_some());
        let delay = Duration::from_millis(1 + self.entropy.next_u64() % 20);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let lost = |why: String| JobReport::lost(cached, why);
            let answer = match send_job(me, to, job) {
                None => lost(format!("node{to} is unreachable")),
                Some(rx) => match tokio::time::timeout(REMOTE_JOB_TIMEOUT, rx).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => lost(format!("the link to node{to} failed")),
                    Err(_) => lost(format!(
                        "node{to} did not answer within {REMOTE_JOB_TIMEOUT:?}"
                    )),
                },
            };
            report.send(answer);
        });
    }
}

/// Puts `job` in node `to`'s inbox; `None` if the link is cut or `to` is down.
fn send_job(from: usize, to: usize, job: Job) -> Option<tokio::sync::oneshot::Receiver<JobReport>> {
    let w = world();
    let mut links = w.links.borrow_mut();
    if links.down.contains(&to) || links.cut.contains(&Links::pair(from, to)) {
        return None;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    links.next += 1;
    let n = links.next;
    w.event(format!(
        "node{from} sends job {n} ({}) to node{to}",
        job.task
    ));
    links.in_flight.insert(n, (from, to, tx));
    links.inbox.entry(to).or_default().push_back((n, job));
    if let Some(bell) = links.bells.get(&to) {
        bell.notify_one();
    }
    Some(rx)
}

/// Answers job `n` with `report`, unless it was lost meanwhile (or its node is down: the
/// reports of a crashing node's dropped jobs are not sent; the driver fails them in order).
fn answer_job(n: u64, to: usize, report: JobReport) {
    WORLD.with(|w| {
        let Ok(w) = w.try_borrow() else { return };
        let Some(w) = w.as_ref() else { return };
        let mut links = w.links.borrow_mut();
        if links.down.contains(&to) {
            return;
        }
        if let Some((_, _, tx)) = links.in_flight.remove(&n) {
            let _ = tx.send(report);
        }
    });
}

/// Node `me`'s job listener: runs the jobs other nodes send it on its pool.
async fn serve_jobs(me: usize, workers: cairn::WorkerPoolHandle, bell: Arc<tokio::sync::Notify>) {
    // Jobs sent while this node was starting wait in its inbox: take them first (their bell
    // rang before this listener existed; seed 1634 lost one so, for 15 s).
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            bell.notified().await;
        }
        let jobs: Vec<(u64, Job)> = {
            let w = world();
            let mut links = w.links.borrow_mut();
            links
                .inbox
                .get_mut(&me)
                .map(|q| q.drain(..).collect())
                .unwrap_or_default()
        };
        for (n, job) in jobs {
            let cached = job.cache.is_some();
            workers.submit(
                job,
                cairn::ReportTo::new(cached, move |r| answer_job(n, me, r)),
            );
        }
    }
}

/// How long the chaos phase lasts (virtual time).
const CHAOS: Duration = Duration::from_secs(8);
/// How long the quiet phase may take: every quiet call must be answered within it.
const QUIET: Duration = Duration::from_secs(20);
/// The schedule's period, and its name.
const TICK_PERIOD_MS: i64 = 500;
const SCHEDULE: &str = "tick";

/// Steps of virtual time.
const TICK: Duration = Duration::from_millis(10);

/// The cache key of `work(key)` (`key` < 1,000) or `flaky(key - 1,000)`.
fn cache_key_of(id: u64) -> CacheKey {
    use cairn::Task;
    let (spec, inputs) = if id < 1_000 {
        (work.spec(), work.key_inputs(&id))
    } else if id < AGING {
        (flaky.spec(), flaky.key_inputs(&(id - 1_000)))
    } else {
        (aging.spec(), aging.key_inputs(&(id - AGING)))
    };
    spec.cache_key(PROJECT, DOMAIN, inputs.expect("key inputs"))
        .expect("a cache key")
}

/// Keeps the injected panics of `flaky` off the output (any other panic is printed).
fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let injected = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m.starts_with("injected panic"));
            if !injected {
                default(info);
            }
        }));
    });
}

/// Runs one seed and checks its invariants.
pub fn run_seed(seed: u64) -> SeedReport {
    quiet_injected_panics();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut swarm = Swarm::draw(&mut rng);
    // Drawn from a stream of its own, so that adding it changed no earlier seed's world.
    let mut operator_rng = StdRng::seed_from_u64(seed ^ 0x0BE7_A70B);
    swarm.pause_backfill = swarm.schedules && operator_rng.random_bool(0.5);
    let mut expiry_rng = StdRng::seed_from_u64(seed ^ 0xE8_1BE5);
    swarm.expiry = expiry_rng.random_bool(0.3);
    let nodes = rng.random_range(2..=4usize);
    let clients = rng.random_range(1..=5usize);
    let schedules = swarm.schedules;
    let expiry = swarm.expiry;
    let remote_jobs = swarm.remote_jobs;
    let workers = rng.random_range(1..=2usize);
    let keys: u64 = if swarm.storms {
        rng.random_range(1..=3)
    } else {
        rng.random_range(4..=12)
    };
    let the_world = Rc::new(World {
        rng: RefCell::new(StdRng::seed_from_u64(seed ^ 0x5EED)),
        trace: RefCell::new(Vec::new()),
        hash: RefCell::new(xxhash_rust::xxh3::Xxh3::new()),
        executions: RefCell::new(BTreeMap::new()),
        execution_times: RefCell::new(BTreeMap::new()),
        final_done: RefCell::new(BTreeSet::new()),
        failures_injected: RefCell::new(BTreeMap::new()),
        answers: RefCell::new(Vec::new()),
        epochs: RefCell::new(BTreeMap::new()),
        next_execution: RefCell::new(0),
        quiet: RefCell::new(false),
        failing: swarm.failing,
        tick_starts: RefCell::new(BTreeMap::new()),
        submitted: RefCell::new(BTreeMap::new()),
        cancelled_by_us: RefCell::new(BTreeMap::new()),
        seen_final: RefCell::new(BTreeMap::new()),
        run_calls: RefCell::new(Vec::new()),
        links: RefCell::new(Links::default()),
    });
    WORLD.with(|w| *w.borrow_mut() = Some(the_world.clone()));
    let world = &the_world;

    let db = MemoryStore::new(seed);
    let mut faults = Faults::default();
    if swarm.store_faults {
        faults.conflict = rng.random_range(0.0..0.2);
        faults.maybe_committed = rng.random_range(0.0..0.1);
        faults.connection_lost = rng.random_range(0.0..0.05);
    }
    if swarm.latency {
        faults.latency = Duration::from_millis(rng.random_range(1..20));
    }
    if swarm.watch_faults {
        faults.watch_dropped = rng.random_range(0.0..0.3);
        faults.watch_late = rng.random_range(0.0..0.3);
        faults.watch_spurious = rng.random_range(0.0..0.3);
        faults.watch_delay = Duration::from_millis(rng.random_range(1..500));
    }
    db.set_faults(faults);

    // Each node's workload, drawn up front; a restarted node goes on where it stopped.
    let mut workloads: Vec<Vec<Op>> = Vec::new();
    for _ in 0..nodes {
        let n = rng.random_range(10..40);
        let ops = (0..n)
            .map(|_| match rng.random_range(0..100) {
                0..10 if swarm.evictions => Op::Evict(rng.random_range(0..keys)),
                10..30 if swarm.failing => Op::Flaky(rng.random_range(0..keys)),
                45..55 if swarm.runs => Op::Submit(rng.random_range(0..8)),
                55..58 if swarm.runs => Op::Cancel(rng.random_range(0..8)),
                58..63 if swarm.overwrites => Op::Overwrite(rng.random_range(0..keys)),
                30..45 => Op::Pause(rng.random_range(1..1_500)),
                _ => Op::Call(rng.random_range(0..keys)),
            })
            .collect();
        workloads.push(ops);
    }
    if swarm.expiry {
        for ops in &mut workloads {
            let mut with = Vec::with_capacity(ops.len() * 2);
            for op in ops.drain(..) {
                with.push(op);
                if expiry_rng.random_bool(0.3) {
                    with.push(Op::Aging(expiry_rng.random_range(0..AGING_KEYS)));
                }
            }
            *ops = with;
        }
    }

    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .tick_duration(TICK)
        .simulation_duration(CHAOS + QUIET + Duration::from_secs(10))
        .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_MS as u64))
        .build();
    let links: Vec<MemoryStore> = (0..nodes).map(|_| db.handle()).collect();
    let rates: Vec<f64> = (0..nodes)
        .map(|_| {
            if swarm.drift {
                rng.random_range(0.8..1.25)
            } else {
                1.0
            }
        })
        .collect();
    let skews: Vec<Arc<AtomicI64>> = (0..nodes)
        .map(|_| Arc::new(AtomicI64::new(rng.random_range(-2_000..2_000))))
        .collect();
    let progress: Vec<Rc<RefCell<usize>>> = (0..nodes).map(|_| Rc::new(RefCell::new(0))).collect();
    let boots: Vec<Rc<RefCell<u64>>> = (0..nodes).map(|_| Rc::new(RefCell::new(0))).collect();
    let done: Rc<RefCell<BTreeSet<usize>>> = Rc::default();
    // Nodes started and not crashed since: the quiet calls wait for every node to be up.
    let up: Rc<RefCell<BTreeSet<usize>>> = Rc::default();
    let quiet_done: Rc<RefCell<BTreeSet<usize>>> = Rc::default();
    let quiet_flag: Rc<RefCell<bool>> = Rc::default();
    let stop_chaos: Rc<RefCell<bool>> = Rc::default();

    for i in 0..nodes {
        let name = format!("node{i}");
        let link = links[i].clone();
        let skew = skews[i].clone();
        let rate = rates[i];
        let ops = Rc::new(workloads[i].clone());
        let progress = progress[i].clone();
        let boots = boots[i].clone();
        let done = done.clone();
        let up = up.clone();
        let quiet_done = quiet_done.clone();
        let quiet_flag = quiet_flag.clone();
        let stop_chaos = stop_chaos.clone();
        let host_name = name.clone();
        sim.host(host_name.as_str(), move || {
            let (name, link, skew, ops) = (name.clone(), link.clone(), skew.clone(), ops.clone());
            let (progress, boots, done) = (progress.clone(), boots.clone(), done.clone());
            let up = up.clone();
            let (quiet_done, quiet_flag) = (quiet_done.clone(), quiet_flag.clone());
            let stop_chaos = stop_chaos.clone();
            async move {
                let boot = {
                    let mut b = boots.borrow_mut();
                    *b += 1;
                    *b
                };
                let w = self::world();
                w.event(format!("{name} boot {boot}"));
                let store =
                    AnyStore::MemoryFdbLimits(FdbLimited::new(link, FdbLimitsConfig::default()));
                let node = loop {
                    let wf_name = name.clone();
                    let mut builder = Node::builder()
                        .workflow("ticker", move |ctx: Ctx, input: ScheduledInput| {
                            let name = wf_name.clone();
                            async move {
                                note_tick(input.kickoff_ms, &name);
                                let k = (input.kickoff_ms / TICK_PERIOD_MS) as u64 % keys;
                                ctx.call(work, k).await.map(drop).map_err(|e| e.to_string())
                            }
                        })
                        .workflow("chain", move |ctx: Ctx, k: u64| async move {
                            let a = ctx.call(work, k % keys).await.map_err(|e| e.to_string())?;
                            let b = ctx
                                .call(work, (k + 1) % keys)
                                .await
                                .map_err(|e| e.to_string())?;
                            Ok::<String, String>(format!(
                                "{}+{}",
                                String::from_utf8_lossy(&a),
                                String::from_utf8_lossy(&b)
                            ))
                        })
                        .schedule_poll(Duration::from_millis(200));
                    if schedules {
                        let mut spec = ScheduleSpec::new(
                            SCHEDULE,
                            "ticker",
                            Trigger::Every {
                                period_ms: TICK_PERIOD_MS as u64,
                                anchor_ms: EPOCH_MS,
                            },
                        );
                        spec.project = PROJECT.into();
                        spec.domain = DOMAIN.into();
                        spec.overlap = Overlap::AllowAll;
                        builder = builder.schedule(spec);
                    }
                    if expiry {
                        // Expired entries are collected while calls race with the collection.
                        builder = builder.expiry_collection(Some(Duration::from_millis(1_500)));
                    }
                    if remote_jobs {
                        let entropy =
                            Entropy::seeded(seed ^ 0xD15 ^ ((i as u64) << 32) ^ (boot << 48));
                        builder = builder.dispatch_with(move |local| {
                            Arc::new(SimDispatch {
                                me: i,
                                nodes,
                                local,
                                entropy,
                            })
                        });
                    }
                    let started = builder
                        .name(name.as_str())
                        .store(store.clone())
                        .clock(Arc::new(SimClock {
                            skew_ms: skew.clone(),
                        }))
                        .entropy(Entropy::seeded(seed ^ ((i as u64) << 32) ^ (boot << 48)))
                        .concurrency(workers)
                        .schedulers(2)
                        .node_ttl(Duration::from_secs(2))
                        .expiry_collection(None)
                        .catalog_config(CatalogConfig {
                            clock_rate: rate,
                            ..CatalogConfig::default()
                        })
                        .task(work)
                        .task(flaky)
                        .task(aging)
                        .start()
                        .await;
                    match started {
                        Ok(node) => break node,
                        Err(e) => {
                            w.event(format!("{name} start failed: {e}"));
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                };
                w.event(format!("{name} up"));
                up.borrow_mut().insert(i);
                if remote_jobs {
                    let bell = Arc::new(tokio::sync::Notify::new());
                    {
                        let mut links = w.links.borrow_mut();
                        links.bells.insert(i, bell.clone());
                        links.down.remove(&i);
                    }
                    tokio::spawn(serve_jobs(i, node.workers().clone(), bell));
                }
                // The chaos-phase workload, from where the last boot stopped, by a few
                // concurrent clients (more calls than workers: jobs queue).
                let chaos_ctx = node.ctx(RunOptions::new(PROJECT, DOMAIN));
                let ctx = &chaos_ctx;
                let client = || async {
                    while !*stop_chaos.borrow() {
                        let at = *progress.borrow();
                        let Some(op) = ops.get(at).copied() else {
                            break;
                        };
                        *progress.borrow_mut() += 1;
                        run_op(&w, &node, ctx, &name, op).await;
                    }
                };
                futures::future::join_all((0..clients).map(|_| client())).await;
                done.borrow_mut().insert(i);
                // The quiet phase: every key, once more, from every node.
                while !*quiet_flag.borrow() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if !quiet_done.borrow().contains(&i) {
                    let ctx = node.ctx(RunOptions::new(PROJECT, DOMAIN));
                    let calls = (0..keys).map(|k| {
                        let (ctx, w, name) = (ctx.clone(), w.clone(), name.clone());
                        async move {
                            let r = ctx.call(work, k).await;
                            answer(&w, &name, "work", k, true, r.map_err(|e| e.to_string()));
                            if w.failing {
                                let r = ctx.call(flaky, k).await;
                                answer(&w, &name, "flaky", k, true, r.map_err(|e| e.to_string()));
                            }
                        }
                    });
                    futures::future::join_all(calls).await;
                    if expiry {
                        for k in 0..AGING_KEYS {
                            let r = ctx.call(aging, k).await;
                            answer(&w, &name, "aging", k, true, r.map_err(|e| e.to_string()));
                        }
                    }
                    // This boot's calls, chaos and quiet, are all recorded once flushed.
                    match node.catalog().flush_records().await {
                        Ok(()) => {
                            for c in [&chaos_ctx, &ctx] {
                                let executions =
                                    c.calls().iter().map(|c| c.execution.clone()).collect();
                                w.run_calls
                                    .borrow_mut()
                                    .push((c.run_id().to_string(), executions));
                            }
                        }
                        Err(e) => w.event(format!("{name} flush failed: {e}")),
                    }
                    quiet_done.borrow_mut().insert(i);
                    w.event(format!("{name} quiet calls done"));
                }
                if expiry && !w.final_done.borrow().contains(&i) {
                    let now = turmoil::sim_elapsed().unwrap_or_default();
                    tokio::time::sleep(FINAL_AT.saturating_sub(now)).await;
                    let ctx = node.ctx(RunOptions::new(PROJECT, DOMAIN));
                    for k in 0..AGING_KEYS {
                        let r = ctx.call(aging, k).await;
                        answer(&w, &name, "aging", k, true, r.map_err(|e| e.to_string()));
                    }
                    w.final_done.borrow_mut().insert(i);
                    w.event(format!("{name} final calls done"));
                }
                drop(w);
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    }

    if swarm.pause_backfill {
        let pause_at = Duration::from_millis(operator_rng.random_range(2_000..5_000));
        let paused_for = Duration::from_millis(operator_rng.random_range(300..2_500));
        let link = db.handle();
        sim.host("operator", move || {
            let link = link.clone();
            async move {
                operate(link, seed, pause_at, paused_for).await;
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    }

    // The driver: steps the world, and runs the nemeses during the chaos phase.
    let mut nemesis_events = 0usize;
    let mut crashed: BTreeMap<usize, Duration> = BTreeMap::new();
    let mut partitioned: BTreeMap<usize, Duration> = BTreeMap::new();
    let mut cut_until: BTreeMap<(usize, usize), Duration> = BTreeMap::new();
    let mut quiet_since: Option<Duration> = None;
    let mut step: u64 = 0;
    let mut violations = Vec::new();
    loop {
        let now = sim.elapsed();
        if now < CHAOS {
            if (swarm.nemeses() || swarm.remote_jobs) && world.draw(1_000) < 16 {
                let victim = world.draw(nodes as u64) as usize;
                let kind = world.draw(4);
                if kind == 0 && swarm.crashes && !crashed.contains_key(&victim) {
                    // Its listener's jobs in flight are lost in job order, after the crash
                    // (what the crash itself drops is ignored: see `answer_job`).
                    world.links.borrow_mut().down.insert(victim);
                    sim.crash(format!("node{victim}"));
                    up.borrow_mut().remove(&victim);
                    world.links.borrow_mut().fail(|_, to| to == victim);
                    world.event_at(now, format!("nemesis crash node{victim}"));
                    crashed.insert(victim, now + Duration::from_millis(world.draw(3_000)));
                    nemesis_events += 1;
                } else if kind == 1 && swarm.partitions && !partitioned.contains_key(&victim) {
                    links[victim].set_partitioned(true);
                    world.event_at(now, format!("nemesis partition node{victim}"));
                    partitioned.insert(victim, now + Duration::from_millis(world.draw(4_000)));
                    nemesis_events += 1;
                } else if kind == 2 && swarm.clock_jumps {
                    let by = world.draw(20_000) as i64 - 10_000;
                    skews[victim].fetch_add(by, Ordering::Relaxed);
                    world.event_at(now, format!("nemesis clock node{victim} {by:+}ms"));
                    nemesis_events += 1;
                } else if kind == 3 && swarm.remote_jobs && nodes > 1 {
                    // Cut the link between two nodes: the jobs in flight between them are lost.
                    let other = (victim + 1 + world.draw(nodes as u64 - 1) as usize) % nodes;
                    let pair = Links::pair(victim, other);
                    let mut links = world.links.borrow_mut();
                    if links.cut.insert(pair) {
                        links.fail(|a, b| Links::pair(a, b) == pair);
                        drop(links);
                        world.event_at(now, format!("nemesis cut node{}-node{}", pair.0, pair.1));
                        cut_until.insert(pair, now + Duration::from_millis(world.draw(4_000)));
                        nemesis_events += 1;
                    }
                }
            }
            let healed: Vec<(usize, usize)> = cut_until
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(p, _)| *p)
                .collect();
            for pair in healed {
                cut_until.remove(&pair);
                world.links.borrow_mut().cut.remove(&pair);
                world.event_at(now, format!("nemesis repair node{}-node{}", pair.0, pair.1));
            }
            for i in take_due(&mut crashed, now) {
                sim.bounce(format!("node{i}"));
                world.event_at(now, format!("nemesis restart node{i}"));
            }
            for i in take_due(&mut partitioned, now) {
                links[i].set_partitioned(false);
                world.event_at(now, format!("nemesis heal node{i}"));
            }
        } else if quiet_since.is_none() {
            // Quiet: faults off, partitions healed, crashed nodes back, no new chaos operations;
            // the quiet calls start once every node's last chaos operation has returned.
            db.set_faults(Faults::default());
            for i in std::mem::take(&mut partitioned).into_keys() {
                links[i].set_partitioned(false);
            }
            for i in std::mem::take(&mut crashed).into_keys() {
                sim.bounce(format!("node{i}"));
            }
            cut_until.clear();
            world.links.borrow_mut().cut.clear();
            *world.quiet.borrow_mut() = true;
            *stop_chaos.borrow_mut() = true;
            world.event_at(now, "quiet".into());
            quiet_since = Some(now);
        } else if !*quiet_flag.borrow()
            && done.borrow().len() == nodes
            && up.borrow().len() == nodes
        {
            *quiet_flag.borrow_mut() = true;
            world.event_at(now, "quiet calls".into());
        }
        let calls_done = quiet_done.borrow().len() == nodes;
        // The runs that must end: those of every tick surely due by the end of the chaos
        // phase, and every run submitted by name.
        let must_end = || {
            let mut ids = Vec::new();
            if swarm.schedules {
                let lead = skews
                    .iter()
                    .map(|s| s.load(Ordering::Relaxed))
                    .max()
                    .unwrap_or(0);
                ids.extend(tick_runs(&due_ticks(now, lead)));
            }
            ids.extend(world.submitted.borrow().values().flatten().cloned());
            ids
        };
        let finals_done = !swarm.expiry || world.final_done.borrow().len() == nodes;
        if calls_done
            && finals_done
            && step.is_multiple_of(50)
            && unended_runs(&db, &must_end()).is_empty()
        {
            break;
        }
        if let Some(since) = quiet_since
            && now > since + QUIET
        {
            let missing: Vec<usize> = (0..nodes)
                .filter(|i| !quiet_done.borrow().contains(i))
                .collect();
            if !missing.is_empty() {
                violations.push(format!(
                    "liveness: nodes {missing:?} did not finish their quiet-phase calls within {QUIET:?}"
                ));
            }
            if !finals_done {
                violations.push(format!(
                    "liveness: not every node made its calls of the expiring task at {FINAL_AT:?}"
                ));
            }
            let unended = unended_runs(&db, &must_end());
            if !unended.is_empty() {
                violations.push(format!(
                    "liveness: runs {unended:?} (submitted, or ticks due by the end of the chaos \
                     phase) had not ended {QUIET:?} into the quiet phase"
                ));
            }
            break;
        }
        step += 1;
        match sim.step() {
            Ok(_) => {}
            Err(e) => {
                violations.push(format!("a host failed: {e}"));
                break;
            }
        }
    }

    check_runs(world, &db, &mut violations);
    check_records(world, &db, &mut violations);
    let mut ids: BTreeSet<u64> = (0..keys).chain((0..keys).map(|k| 1_000 + k)).collect();
    if swarm.expiry {
        ids.extend((0..AGING_KEYS).map(|k| AGING + k));
    }
    check_indexes(&db, &ids, &mut violations);
    check(world, &db, keys, &swarm, nemesis_events, &mut violations);
    check_expiry(world, &swarm, nemesis_events, &mut violations);
    let report = SeedReport {
        seed,
        swarm,
        trace_hash: world.hash.borrow().digest(),
        events: world.trace.borrow().len(),
        violations,
        tail: {
            let t = world.trace.borrow();
            t[t.len().saturating_sub(60)..].to_vec()
        },
        executions: world.executions.borrow().values().sum::<u64>() as usize,
        answers: world.answers.borrow().len(),
        nemesis_events,
    };
    if let Ok(path) = std::env::var("CAIRN_SIM_TRACE_FILE") {
        // One file per run of a seed in this process: `<path>.<seed>.<n>`, so that the two
        // runs of a seed that did not replay can be compared.
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let _ = std::fs::write(
            format!("{path}.{seed}.{n}"),
            world.trace.borrow().join("\n"),
        );
    }
    drop(sim);
    WORLD.with(|w| *w.borrow_mut() = None);
    report
}

async fn run_op(w: &Rc<World>, node: &Node, ctx: &cairn::Ctx, name: &str, op: Op) {
    match op {
        Op::Call(k) => {
            let r = ctx.call(work, k).await;
            answer(w, name, "work", k, false, r.map_err(|e| e.to_string()));
        }
        Op::Flaky(k) => {
            let r = ctx.call(flaky, k).await;
            let r = match r {
                Err(CallError::Task {
                    error: TaskError::Failed { .. } | TaskError::Panicked { .. },
                    ..
                }) => Err("task failed".to_string()),
                other => other.map_err(|e| e.to_string()),
            };
            answer(w, name, "flaky", k, false, r);
        }
        Op::Evict(k) => {
            let d = cache_key_of(k).digest;
            // A new epoch of the key, counted before the call: an eviction can land although
            // its caller never hears back (its node crashes during the call, or the store's
            // answer is lost). Taken back when it removed nothing.
            *w.epochs.borrow_mut().entry(k).or_default() += 1;
            match node.catalog().evict(&EvictScope::Key(d)).await {
                Ok(n) => {
                    if n == 0 {
                        let mut epochs = w.epochs.borrow_mut();
                        if let Some(e) = epochs.get_mut(&k) {
                            *e -= 1;
                            if *e == 0 {
                                epochs.remove(&k);
                            }
                        }
                    }
                    w.event(format!("{name} evict k={k} removed={n}"));
                }
                Err(e) => w.event(format!("{name} evict k={k} failed: {e}")),
            }
        }
        Op::Pause(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Op::Aging(k) => {
            let r = ctx.call(aging, k).await;
            answer(w, name, "aging", k, false, r.map_err(|e| e.to_string()));
        }
        Op::Overwrite(k) => {
            // A new epoch of the key: its callers may see the old or the new output.
            *w.epochs.borrow_mut().entry(k).or_default() += 1;
            let ctx = node.ctx(RunOptions::new(PROJECT, DOMAIN).overwrite_cache(true));
            let r = ctx.call(work, k).await;
            answer(w, name, "overwrite", k, false, r.map_err(|e| e.to_string()));
        }
        Op::Submit(n) => {
            let key = format!("run-{n}");
            let request = cairn::SubmitRun {
                workflow: "chain".into(),
                input: serde_json::json!(n),
                options: RunOptions::new(PROJECT, DOMAIN),
                schedule: None,
                idempotency_key: Some(key.clone()),
            };
            match node.submit(request).await {
                Ok(started) => {
                    let id = started.record.run_id.clone();
                    w.event(format!(
                        "{name} submit {key} -> {id}{}",
                        if started.existing { " (existing)" } else { "" }
                    ));
                    w.submitted
                        .borrow_mut()
                        .entry(key)
                        .or_default()
                        .insert(id.clone());
                    // (A record still running: this node's attempt was fenced by a takeover.)
                    if let Ok(Ok(record)) = started.finished.await
                        && record.status != RunStatus::Running
                    {
                        w.event(format!("{name} saw {id} end {:?}", record.status));
                        w.seen_final
                            .borrow_mut()
                            .entry(id)
                            .or_default()
                            .insert(format!("{:?}", record.status));
                    }
                }
                Err(e) => w.event(format!("{name} submit {key} failed: {e}")),
            }
        }
        Op::Cancel(n) => {
            let id = w
                .submitted
                .borrow()
                .get(&format!("run-{n}"))
                .and_then(|ids| ids.iter().next().cloned());
            if let Some(id) = id {
                match node.cancel(&id).await {
                    Ok(cairn::Ended::Ended { record, .. }) => {
                        w.event(format!(
                            "{name} cancel {id}: ended it ({:?})",
                            record.status
                        ));
                        *w.cancelled_by_us.borrow_mut().entry(id).or_default() += 1;
                    }
                    Ok(other) => w.event(format!(
                        "{name} cancel {id}: {}",
                        match other {
                            cairn::Ended::AlreadyEnded(_) => "already ended",
                            _ => "fenced",
                        }
                    )),
                    Err(e) => w.event(format!("{name} cancel {id} failed: {e}")),
                }
            }
        }
    }
}

fn answer(w: &World, node: &str, task: &str, key: u64, quiet: bool, r: Result<Vec<u8>, String>) {
    let shown = match &r {
        Ok(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Err(e) => format!("error: {e}"),
    };
    w.event(format!("{node} answer {task} k={key} {shown}"));
    let id = match task {
        "flaky" => 1_000 + key,
        "aging" => AGING + key,
        _ => key,
    };
    w.answers.borrow_mut().push(Answer {
        key: id,
        quiet,
        result: r,
        at: turmoil::sim_elapsed().unwrap_or_default(),
    });
}

/// Removes and returns the nodes whose nemesis ends by `now`.
fn take_due(until: &mut BTreeMap<usize, Duration>, now: Duration) -> Vec<usize> {
    let due: Vec<usize> = until
        .iter()
        .filter(|(_, at)| **at <= now)
        .map(|(i, _)| *i)
        .collect();
    for i in &due {
        until.remove(i);
    }
    due
}

/// The operator of [`Swarm::pause_backfill`]: pauses the schedule at `pause_at`, resumes it
/// `paused_for` later, then backfills every tick since the epoch that has not fired, each step
/// retried until the store takes it (store faults apply to the operator too). Its wall clock
/// is the unskewed one.
async fn operate(link: MemoryStore, seed: u64, pause_at: Duration, paused_for: Duration) {
    let w = world();
    let clock = Arc::new(SimClock {
        skew_ms: Arc::new(AtomicI64::new(0)),
    });
    // Seeded like everything else in the world: the retry loop's backoff draws from it.
    let schedules = cairn_engine::schedule::Schedules::new(AnyStore::Memory(link), clock.clone())
        .with_entropy(Entropy::seeded(seed ^ 0x0BE7));
    tokio::time::sleep(pause_at).await;
    until_ok(&w, "pause", || schedules.pause(SCHEDULE)).await;
    tokio::time::sleep(paused_for).await;
    until_ok(&w, "resume", || schedules.resume(SCHEDULE)).await;
    let queued = until_ok(&w, "backfill", || {
        schedules.backfill(SCHEDULE, EPOCH_MS, clock.now_ms())
    })
    .await;
    w.event(format!("operator backfilled {queued} ticks"));
}

/// Retries `op` every 100 ms until it succeeds; notes each step in the trace.
async fn until_ok<T, Fut>(w: &World, what: &str, mut op: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = cairn_engine::Result<T>>,
{
    loop {
        match op().await {
            Ok(v) => {
                w.event(format!("operator {what}"));
                return v;
            }
            Err(e) => {
                w.event(format!("operator {what} failed: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Ticks of the schedule that every running node's scheduler must have fired by virtual time
/// `now`, given the most advanced wall clock's skew: those of the chaos phase from its third
/// second (the schedule is registered at the first node's start, on a clock up to 2 s ahead)
/// to its last, at least 2 s in that clock's past.
fn due_ticks(now: Duration, lead_skew_ms: i64) -> Vec<i64> {
    let latest = (EPOCH_MS + CHAOS.as_millis() as i64 - 1_000)
        .min(EPOCH_MS + now.as_millis() as i64 + lead_skew_ms - 2_000);
    (6..)
        .map(|k| EPOCH_MS + k * TICK_PERIOD_MS)
        .take_while(|t| *t <= latest)
        .collect()
}

/// The run ids of `ticks`.
fn tick_runs(ticks: &[i64]) -> Vec<String> {
    ticks
        .iter()
        .map(|t| format!("sched-{SCHEDULE}-{t}"))
        .collect()
}

/// The final status of each run in `ids` (`None`: running, or not found), read from the
/// database directly (faults do not apply to this read).
fn run_statuses(db: &MemoryStore, ids: &[String]) -> BTreeMap<String, Option<RunStatus>> {
    if ids.is_empty() {
        return BTreeMap::new();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let runs = Runs::new(
            AnyStore::Memory(db.handle()),
            Arc::new(cairn_engine::clock::SystemClock),
        );
        let mut out = BTreeMap::new();
        for id in ids {
            let status = runs
                .get(id)
                .await
                .expect("faults do not apply")
                .map(|r| r.status)
                .filter(|s| *s != RunStatus::Running);
            out.insert(id.clone(), status);
        }
        out
    })
}

/// The runs among `ids` that have not ended.
fn unended_runs(db: &MemoryStore, ids: &[String]) -> Vec<String> {
    run_statuses(db, ids)
        .into_iter()
        .filter(|(_, s)| s.is_none())
        .map(|(id, _)| id)
        .collect()
}

/// The indexes agree with the entries: every stored entry of a simulated key has its task index
/// row and its execution index row, and every task or execution index row of the simulated
/// project names a stored entry (of that execution). The simulated tasks have no `max_age`, so
/// there is no expiry row. Read from the database directly.
fn check_indexes(db: &MemoryStore, ids: &BTreeSet<u64>, violations: &mut Vec<String>) {
    use cairn_engine::catalog::records::StoredMeta;
    use cairn_engine::keys;
    let dump: BTreeMap<Vec<u8>, Vec<u8>> =
        db.dump().into_iter().map(|kv| (kv.key, kv.value)).collect();
    let mut metas = BTreeMap::new();
    // The expiry index rows the stored entries call for.
    let mut expiring = BTreeSet::new();
    for id in ids {
        let key = cache_key_of(*id);
        let d = key.digest;
        let by_task = keys::by_task(PROJECT, DOMAIN, &key.task, &key.version, &d);
        match dump.get(&keys::entry_part(&d, keys::entry_part::META)) {
            Some(raw) => match rmp_serde::from_slice::<StoredMeta>(raw) {
                Ok(stored) => {
                    if !dump.contains_key(&by_task) {
                        violations.push(format!(
                            "indexes: key {id} is stored without its task index row"
                        ));
                    }
                    if !dump.contains_key(&keys::by_execution(&stored.meta.execution, &d)) {
                        violations.push(format!(
                            "indexes: key {id} is stored without its execution index row"
                        ));
                    }
                    if let Some(at) = stored.meta.expires_at_ms {
                        expiring.insert(keys::expiry(at, &d));
                    }
                    metas.insert(d, stored.meta.execution);
                }
                Err(e) => violations.push(format!("indexes: key {id}'s metadata is corrupt: {e}")),
            },
            None => {
                if dump.contains_key(&by_task) {
                    violations.push(format!(
                        "indexes: a task index row names key {id}, which is not stored"
                    ));
                }
            }
        }
    }
    for k in dump.keys() {
        if k.first() == Some(&keys::tag::BY_EXECUTION)
            && let Some(d) = keys::digest_of_by_execution(k)
        {
            match metas.get(&d) {
                Some(execution) if *k == keys::by_execution(execution, &d) => {}
                Some(_) => violations.push(format!(
                    "indexes: an execution index row of {d} names another execution than the stored one"
                )),
                None => {
                    let meta = dump
                        .get(&keys::entry_part(&d, keys::entry_part::META))
                        .and_then(|raw| rmp_serde::from_slice::<StoredMeta>(raw).ok());
                    violations.push(format!(
                        "indexes: an execution index row names {d}, which is not a stored entry \
                         of a simulated key (its metadata: {:?})",
                        meta.map(|m| (m.meta.key.task, m.meta.key.project, m.meta.key.journal))
                    ))
                }
            }
        }
        if k.first() == Some(&keys::tag::EXPIRY) && !expiring.remove(k) {
            violations
                .push("indexes: an expiry row names no stored entry with that expiry time".into());
        }
    }
}

/// Checks the expiring task (see [`Swarm::expiry`]).
///
/// An entry committed at virtual time C by a node whose wall clock is off by s_w is seen
/// expired by a node off by s_r from C + 5 s + s_w − s_r on; skews are within ±2 s, so from at
/// most C + 9 s on (no clock jumps). The commit precedes the first answer carrying its bytes,
/// so an answer at V whose bytes were first seen before V − 9 s (and a second of slack) is a
/// stale hit. Conversely, nothing may recompute the key while its entry is fresh everywhere:
/// the next execution of a key cannot start before C + 1 s, so not within 0.75 s of the end of
/// the previous one's body (without nemeses and store faults, which may cost an execution).
fn check_expiry(w: &World, swarm: &Swarm, nemesis_events: usize, violations: &mut Vec<String>) {
    if !swarm.expiry || swarm.clock_jumps {
        return;
    }
    let answers = w.answers.borrow();
    let mut first_seen: BTreeMap<&[u8], Duration> = BTreeMap::new();
    for a in answers.iter().filter(|a| a.key >= AGING) {
        if let Ok(bytes) = &a.result {
            let t = first_seen.entry(bytes.as_slice()).or_insert(a.at);
            *t = (*t).min(a.at);
        }
    }
    let stale_after = MAX_AGE + Duration::from_secs(5);
    for a in answers.iter().filter(|a| a.key >= AGING) {
        if let Ok(bytes) = &a.result
            && let Some(seen) = first_seen.get(bytes.as_slice())
            && a.at > *seen + stale_after
        {
            violations.push(format!(
                "expiry: a caller of key {} got {:?} at {:?}, first seen at {seen:?}: a stale hit",
                a.key,
                String::from_utf8_lossy(bytes),
                a.at
            ));
        }
    }
    if swarm.nemeses() || swarm.store_faults || nemesis_events > 0 {
        return;
    }
    let times = w.execution_times.borrow();
    let mut by_key: BTreeMap<u64, Vec<(Duration, Option<Duration>, u64)>> = BTreeMap::new();
    for (n, (id, start, end)) in times.iter() {
        if *id >= AGING {
            by_key.entry(*id).or_default().push((*start, *end, *n));
        }
    }
    for (id, mut runs) in by_key {
        runs.sort();
        for pair in runs.windows(2) {
            let ((_, end, a), (start, _, b)) = (pair[0], pair[1]);
            if let Some(end) = end
                && start < end + Duration::from_millis(750)
            {
                violations.push(format!(
                    "expiry: key {id} was executed again (n={b}, at {start:?}) while execution \
                     n={a}'s entry was fresh (its body ended at {end:?})"
                ));
            }
        }
    }
}

/// Every call of a run whose records were flushed has exactly one execution record, and the
/// run has no other record. Read through a catalog of the database (faults are off by now).
fn check_records(w: &World, db: &MemoryStore, violations: &mut Vec<String>) {
    let runs = w.run_calls.borrow();
    if runs.is_empty() {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let catalog = Catalog::new(AnyStore::Memory(db.handle()));
        for (run, calls) in runs.iter() {
            let records = catalog.run_executions(run).await.expect("faults are off");
            let mut stored: BTreeMap<&str, usize> = BTreeMap::new();
            for r in &records {
                *stored.entry(r.execution.as_str()).or_default() += 1;
            }
            let made: BTreeSet<&str> = calls.iter().map(String::as_str).collect();
            for (execution, n) in &stored {
                if *n > 1 {
                    violations.push(format!(
                        "records: execution {execution} of run {run} is recorded {n} times"
                    ));
                }
                if !made.contains(execution) {
                    violations.push(format!(
                        "records: run {run} has a record of {execution}, which it did not call"
                    ));
                }
            }
            for execution in &made {
                if !stored.contains_key(execution) {
                    violations.push(format!(
                        "records: call {execution} of run {run} has no record"
                    ));
                }
            }
        }
    });
}

/// The invariants of runs submitted by name: one run per idempotency key, ended once.
fn check_runs(w: &World, db: &MemoryStore, violations: &mut Vec<String>) {
    let submitted = w.submitted.borrow();
    for (key, ids) in submitted.iter() {
        if ids.len() > 1 {
            violations.push(format!(
                "idempotency: submissions with key {key} started {} runs: {ids:?}",
                ids.len()
            ));
        }
    }
    let ids: Vec<String> = submitted.values().flatten().cloned().collect();
    let statuses = run_statuses(db, &ids);
    for (id, n) in w.cancelled_by_us.borrow().iter() {
        if *n > 1 {
            violations.push(format!(
                "ended once: {n} cancels each reported ending run {id}"
            ));
        }
        if let Some(Some(status)) = statuses.get(id)
            && *status != RunStatus::Cancelled
        {
            violations.push(format!(
                "ended once: a cancel ended run {id}, yet it is stored as {status:?}"
            ));
        }
    }
    for (id, seen) in w.seen_final.borrow().iter() {
        let stored = statuses
            .get(id)
            .copied()
            .flatten()
            .map(|s| format!("{s:?}"));
        if seen.len() > 1 || stored.as_ref().is_some_and(|s| !seen.contains(s)) {
            violations.push(format!(
                "ended once: run {id} was seen ending as {seen:?}, and is stored as {stored:?}"
            ));
        }
    }
}

/// The end-of-seed invariants.
fn check(
    w: &World,
    db: &MemoryStore,
    keys: u64,
    swarm: &Swarm,
    nemesis_events: usize,
    violations: &mut Vec<String>,
) {
    let answers = w.answers.borrow();
    let evicted: BTreeSet<u64> = w.epochs.borrow().keys().copied().collect();
    // Within an epoch of a key that was never evicted, callers agree.
    let mut seen: BTreeMap<u64, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for a in answers.iter() {
        if let Ok(bytes) = &a.result
            && !evicted.contains(&a.key)
            && a.key < AGING
        {
            seen.entry(a.key).or_default().insert(bytes.clone());
        }
    }
    for (k, outputs) in &seen {
        if outputs.len() > 1 {
            let shown: Vec<String> = outputs
                .iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect();
            violations.push(format!(
                "agreement: callers of key {k} got {} different outputs: {shown:?}",
                outputs.len()
            ));
        }
    }
    // Quiet-phase answers: no errors, and the stored entry's bytes.
    // (The expiring task's entries change over the phase: see `check_expiry`.)
    let ids: BTreeSet<u64> = answers
        .iter()
        .filter(|a| a.quiet && a.key < AGING)
        .map(|a| a.key)
        .collect();
    let stored = stored_outputs(db, &ids);
    for a in answers.iter().filter(|a| a.quiet) {
        match &a.result {
            Err(e) => violations.push(format!(
                "liveness: a quiet-phase call of key {} failed: {e}",
                a.key
            )),
            Ok(_) if a.key >= AGING => {}
            Ok(bytes) => {
                let entry = stored.get(&a.key);
                if entry != Some(&Some(bytes.clone())) {
                    violations.push(format!(
                        "agreement: a quiet-phase caller of key {} got {:?}, the stored entry is {:?}",
                        a.key,
                        String::from_utf8_lossy(bytes),
                        entry.map(|e| e.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())),
                    ));
                }
            }
        }
    }
    // Executions: one per epoch, plus one per nemesis event and injected failure.
    let executions = w.executions.borrow();
    let failures = w.failures_injected.borrow();
    let epochs = w.epochs.borrow();
    for (k, n) in executions.iter().filter(|(k, _)| **k < AGING) {
        let allowed = 1
            + epochs.get(k).copied().unwrap_or(0)
            + failures.get(k).copied().unwrap_or(0)
            + if swarm.nemeses() || swarm.store_faults || nemesis_events > 0 {
                nemesis_events as u64 + 1
            } else {
                0
            };
        let _ = keys;
        if *n > allowed {
            violations.push(format!(
                "exactly-once: key {k} executed {n} times, at most {allowed} allowed"
            ));
        }
    }
    // Each tick's workflow starts once, unless a node was lost (a takeover replays it).
    if !swarm.nemeses() {
        for (t, nodes) in w.tick_starts.borrow().iter() {
            if nodes.len() > 1 {
                violations.push(format!(
                    "exactly-once: the run of tick {t} started {} times ({nodes:?}) with no node lost",
                    nodes.len()
                ));
            }
        }
    }
}

/// The stored output of each key in `ids`, read through a catalog of the database (faults are
/// off by now), decoded as the tasks' output type.
fn stored_outputs(db: &MemoryStore, ids: &BTreeSet<u64>) -> BTreeMap<u64, Option<Vec<u8>>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let catalog = Catalog::new(AnyStore::Memory(db.handle()));
        let mut out = BTreeMap::new();
        for id in ids {
            let raw = catalog
                .lookup_output(&cache_key_of(*id), None)
                .await
                .expect("faults are off");
            let bytes = raw.map(|raw| {
                rmp_serde::from_slice::<Vec<u8>>(&raw).expect("a stored output decodes")
            });
            out.insert(*id, bytes);
        }
        out
    })
}

/// A readable report of a failing seed: what it enabled, what broke, the command that replays
/// it, and the trace's last events.
pub fn describe(r: &SeedReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "seed {} ({:?}) broke:", r.seed, r.swarm);
    for v in &r.violations {
        let _ = writeln!(s, "  - {v}");
    }
    let _ = writeln!(
        s,
        "replay: CAIRN_SIM_SEED={} cargo test -p cairn-tests --test simulation replay -- --nocapture",
        r.seed
    );
    let _ = writeln!(s, "last events:");
    for line in &r.tail {
        let _ = writeln!(s, "  {line}");
    }
    s
}
