//! Runs started by name (through the API, the CLI or a schedule): what was asked (workflow,
//! input, project, domain), where it ran, how it ended. The calls a run made are its execution
//! records ([`crate::catalog::Catalog::run_executions`]); this table holds the run itself.
//!
//! A run record is written before the workflow starts and rewritten once when it ends, each in
//! its own short transaction; both are idempotent under retry (the start refuses an id that is
//! already taken by another run, the end only moves a `Running` record).

use crate::catalog::records::{decode, encode};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::keys::{self, hex, unhex};
use crate::store::{RangeOptions, RetryPolicy, Store, Transaction, transact};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Largest input or output (JSON text) kept in a run record. Larger inputs are refused before
/// the run starts; a larger output is not kept (its size is), so a record always fits in one
/// store value.
pub const MAX_RUN_JSON: usize = 64 * 1024;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The workflow is running.
    Running,
    /// The workflow returned an output.
    Succeeded,
    /// The workflow returned an error or panicked.
    Failed,
}

/// A run started by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run id.
    pub run_id: String,
    /// The workflow's registered name.
    pub workflow: String,
    /// Project of every call in the run.
    pub project: String,
    /// Domain of every call in the run.
    pub domain: String,
    /// Every cacheable call re-executed and replaced its entry.
    pub overwrite_cache: bool,
    /// The input, as JSON text.
    pub input: String,
    /// Running, succeeded or failed.
    pub status: RunStatus,
    /// The output as JSON text, when it succeeded and the output is at most [`MAX_RUN_JSON`].
    pub output: Option<String>,
    /// Size of the output's JSON text (also when it was too large to keep).
    pub output_bytes: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
    /// The node that ran it.
    pub node: String,
    /// The schedule that fired it, if any.
    pub schedule: Option<String>,
    /// Start (Unix ms).
    pub started_at_ms: i64,
    /// End (Unix ms).
    pub finished_at_ms: Option<i64>,
}

/// Which runs to list (every given field must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only this workflow.
    pub workflow: Option<String>,
    /// Only this project.
    pub project: Option<String>,
    /// Only this domain.
    pub domain: Option<String>,
    /// Only runs in this state.
    pub status: Option<RunStatus>,
}

impl RunFilter {
    fn matches(&self, r: &RunRecord) -> bool {
        self.workflow.as_ref().is_none_or(|w| *w == r.workflow)
            && self.project.as_ref().is_none_or(|p| *p == r.project)
            && self.domain.as_ref().is_none_or(|d| *d == r.domain)
            && self.status.is_none_or(|s| s == r.status)
    }
}

/// One page of runs, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPage {
    /// The runs.
    pub runs: Vec<RunRecord>,
    /// Pass this to get the next (older) page; `None` on the last page.
    pub next: Option<String>,
}

/// Index entries examined at most per page, so a filter that matches nothing cannot make one
/// request read the whole history; the page then comes back short with a cursor.
const MAX_SCANNED_PER_PAGE: usize = 10_000;

/// The run table of one store.
#[derive(Clone)]
pub struct Runs<S: Store> {
    store: S,
    clock: Arc<dyn Clock>,
    policy: RetryPolicy,
}

impl<S: Store> Runs<S> {
    /// The runs in `store`; `clock` stamps starts and ends.
    pub fn new(store: S, clock: Arc<dyn Clock>) -> Self {
        Runs {
            store,
            clock,
            policy: RetryPolicy::default(),
        }
    }

    /// Now, by this table's clock (Unix ms).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Records the start of `run` (its `started_at_ms` is used as given). Refuses an id that is
    /// already used by another run; the same record twice (a retried commit) is accepted.
    pub async fn start(&self, run: &RunRecord) -> Result<()> {
        check_json("run input", &run.input)?;
        let key = keys::run(&run.run_id);
        let value = encode(run);
        transact(&self.store, &self.policy, |tx| {
            let (key, value) = (&key, &value);
            async move {
                if let Some(existing) = tx.get(key, false).await? {
                    if existing == *value {
                        return Ok(());
                    }
                    return Err(Error::InvalidInput {
                        what: format!("run id {:?}", run.run_id),
                        reason: "another run already has this id".into(),
                    });
                }
                tx.set(key, value);
                tx.set(&keys::run_by_time(run.started_at_ms, &run.run_id), b"");
                Ok(())
            }
        })
        .await
    }

    /// Records the end of `run_id`: succeeded with `output` (JSON text) or failed with `error`.
    /// A run that already ended keeps its first end.
    pub async fn finish(
        &self,
        run_id: &str,
        outcome: std::result::Result<String, String>,
    ) -> Result<RunRecord> {
        let key = keys::run(run_id);
        let now = self.clock.now_ms();
        let outcome = &outcome;
        transact(&self.store, &self.policy, |tx| {
            let key = &key;
            async move {
                let raw = tx
                    .get(key, false)
                    .await?
                    .ok_or_else(|| Error::InvalidInput {
                        what: format!("run {run_id:?}"),
                        reason: "no such run".into(),
                    })?;
                let mut run: RunRecord = decode(|| format!("run record {run_id:?}"), &raw)?;
                if run.status != RunStatus::Running {
                    return Ok(run);
                }
                run.finished_at_ms = Some(now);
                match outcome {
                    Ok(output) => {
                        run.status = RunStatus::Succeeded;
                        run.output_bytes = Some(output.len() as u64);
                        run.output = (output.len() <= MAX_RUN_JSON).then(|| output.clone());
                    }
                    Err(error) => {
                        run.status = RunStatus::Failed;
                        run.error = Some(truncate(error, MAX_RUN_JSON));
                    }
                }
                tx.set(key, &encode(&run));
                Ok(run)
            }
        })
        .await
    }

    /// The run `run_id`.
    pub async fn get(&self, run_id: &str) -> Result<Option<RunRecord>> {
        let tx = self.store.begin_read().await?;
        match tx.get(&keys::run(run_id), true).await? {
            None => Ok(None),
            Some(raw) => Ok(Some(decode(|| format!("run record {run_id:?}"), &raw)?)),
        }
    }

    /// Runs matching `filter`, newest first, `page_size` at a time, starting after `cursor`
    /// (the previous page's `next`).
    pub async fn list(
        &self,
        filter: &RunFilter,
        page_size: usize,
        cursor: Option<&str>,
    ) -> Result<RunPage> {
        let (begin, mut end) = keys::runs_by_time();
        if let Some(c) = cursor {
            end = unhex(c)
                .filter(|k| k.as_slice() >= begin.as_slice() && k.as_slice() < end.as_slice())
                .ok_or_else(|| Error::InvalidInput {
                    what: "page cursor".into(),
                    reason: format!("{c:?} is not a cursor of the run listing"),
                })?;
        }
        let page_size = page_size.clamp(1, 1_000);
        let tx = self.store.begin_read().await?;
        let mut runs = Vec::new();
        let mut scanned = 0;
        loop {
            let batch = (page_size * 2).min(MAX_SCANNED_PER_PAGE - scanned).max(1);
            let index = tx
                .get_range(&begin, &end, RangeOptions::all().limit(batch).reverse())
                .await?;
            let exhausted = index.len() < batch;
            for (i, kv) in index.iter().enumerate() {
                scanned += 1;
                end = kv.key.clone();
                let Some(id) = keys::run_of_time_key(&kv.key) else {
                    continue;
                };
                if let Some(raw) = tx.get(&keys::run(&id), true).await? {
                    let run: RunRecord = decode(|| format!("run record {id:?}"), &raw)?;
                    if filter.matches(&run) {
                        runs.push(run);
                        if runs.len() == page_size {
                            let last_in_store = exhausted && i + 1 == index.len();
                            return Ok(RunPage {
                                runs,
                                next: (!last_in_store).then(|| hex(&end)),
                            });
                        }
                    }
                }
            }
            if exhausted {
                return Ok(RunPage { runs, next: None });
            }
            if scanned >= MAX_SCANNED_PER_PAGE {
                return Ok(RunPage {
                    runs,
                    next: Some(hex(&end)),
                });
            }
        }
    }
}

fn check_json(what: &str, json: &str) -> Result<()> {
    if json.len() > MAX_RUN_JSON {
        return Err(Error::InvalidInput {
            what: what.to_string(),
            reason: format!(
                "{} bytes of JSON; at most {MAX_RUN_JSON} are accepted",
                json.len()
            ),
        });
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &s[..end], s.len())
}
