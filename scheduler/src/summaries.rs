//! The summaries of a run's calls ([`crate::workflow::Ctx::calls`]): one per call, or one group
//! for calls answered together (kept as the group they were answered as, and read out on
//! demand), the latest `keep` of them in a durable run.

use cairn_engine::catalog::{CacheStatus, CallGroup};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// One call of a run, as the run saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSummary {
    /// Task name.
    pub task: Arc<str>,
    /// The call's execution id.
    pub execution: String,
    /// How the cache answered.
    pub status: CacheStatus,
    /// From submission to answer.
    pub duration: Duration,
    /// The error, if it failed.
    pub error: Option<String>,
    /// Why the cache failed the call (LookupFailure, PutFailure), e.g. the output's size and
    /// the limit.
    pub cache_error: Option<String>,
}

pub(crate) struct Summaries {
    entries: VecDeque<Entry>,
    /// Calls in `entries`.
    len: usize,
    /// At most this many calls are kept (the latest).
    keep: Option<usize>,
}

enum Entry {
    One(CallSummary),
    /// The group's calls from `from` on.
    Group {
        group: Arc<CallGroup>,
        from: usize,
    },
}

impl Summaries {
    pub(crate) fn new(keep: Option<usize>) -> Self {
        Summaries {
            entries: VecDeque::new(),
            len: 0,
            keep,
        }
    }

    pub(crate) fn push(&mut self, summary: CallSummary) {
        self.entries.push_back(Entry::One(summary));
        self.len += 1;
        self.trim();
    }

    pub(crate) fn push_group(&mut self, group: Arc<CallGroup>) {
        if group.calls.is_empty() {
            return;
        }
        self.len += group.calls.len();
        self.entries.push_back(Entry::Group { group, from: 0 });
        self.trim();
    }

    fn trim(&mut self) {
        let Some(keep) = self.keep else { return };
        while self.len > keep {
            let over = self.len - keep;
            match self.entries.front_mut() {
                Some(Entry::Group { group, from }) if group.calls.len() - *from > over => {
                    *from += over;
                    self.len -= over;
                }
                Some(Entry::Group { group, from }) => {
                    self.len -= group.calls.len() - *from;
                    self.entries.pop_front();
                }
                Some(Entry::One(_)) => {
                    self.len -= 1;
                    self.entries.pop_front();
                }
                None => return,
            }
        }
    }

    /// [`Summaries::to_vec`], moving the summaries out.
    pub(crate) fn into_vec(self) -> Vec<CallSummary> {
        let mut out = Vec::with_capacity(self.len);
        for entry in self.entries {
            match entry {
                Entry::One(summary) => out.push(summary),
                Entry::Group { group, from } => out.extend(Self::group_calls(&group, from)),
            }
        }
        out
    }

    pub(crate) fn to_vec(&self) -> Vec<CallSummary> {
        let mut out = Vec::with_capacity(self.len);
        for entry in &self.entries {
            match entry {
                Entry::One(summary) => out.push(summary.clone()),
                Entry::Group { group, from } => out.extend(Self::group_calls(group, *from)),
            }
        }
        out
    }

    /// The summaries of a group's calls from `from` on.
    fn group_calls(group: &CallGroup, from: usize) -> impl Iterator<Item = CallSummary> + '_ {
        let shared = &group.shared;
        group.calls[from..].iter().map(move |call| CallSummary {
            task: shared.task.clone(),
            execution: call.execution.clone(),
            status: shared.status,
            duration: group.duration(call),
            error: shared.error.clone(),
            cache_error: shared.cache_error.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_engine::catalog::{ExecutionRecord, GroupedCall};
    use tokio::time::Instant;

    fn one(n: usize) -> CallSummary {
        CallSummary {
            task: "t".into(),
            execution: format!("e{n}"),
            status: CacheStatus::Populated,
            duration: Duration::ZERO,
            error: None,
            cache_error: None,
        }
    }

    fn group(from: usize, n: usize) -> Arc<CallGroup> {
        let now = Instant::now();
        Arc::new(CallGroup {
            shared: ExecutionRecord {
                execution: String::new(),
                run: None,
                project: "p".into(),
                domain: "d".into(),
                task: "t".into(),
                version: "1".into(),
                key: None,
                status: CacheStatus::Waited,
                started_at_ms: 0,
                duration_us: 0,
                wait_us: 0,
                waited_for: None,
                error: None,
                seq: None,
                attempt: 0,
                executed: false,
                cache_error: None,
            },
            answered: now,
            calls: (from..from + n)
                .map(|i| GroupedCall {
                    execution: format!("e{i}"),
                    seq: Some(i as u64),
                    started: now,
                    started_at_ms: 0,
                })
                .collect(),
        })
    }

    fn executions(s: &Summaries) -> Vec<String> {
        s.to_vec().into_iter().map(|c| c.execution).collect()
    }

    #[test]
    fn groups_read_out_as_their_calls_in_order() {
        let mut s = Summaries::new(None);
        s.push(one(0));
        s.push_group(group(1, 3));
        s.push(one(4));
        assert_eq!(executions(&s), ["e0", "e1", "e2", "e3", "e4"]);
        assert!(
            s.to_vec()[1..4]
                .iter()
                .all(|c| c.status == CacheStatus::Waited)
        );
    }

    #[test]
    fn only_the_latest_calls_are_kept_when_bounded_even_inside_a_group() {
        let mut s = Summaries::new(Some(4));
        s.push(one(0));
        s.push_group(group(1, 3));
        assert_eq!(executions(&s), ["e0", "e1", "e2", "e3"]);
        s.push(one(4));
        assert_eq!(executions(&s), ["e1", "e2", "e3", "e4"]);
        s.push_group(group(5, 2));
        assert_eq!(executions(&s), ["e3", "e4", "e5", "e6"]);
        s.push_group(group(7, 9));
        assert_eq!(executions(&s), ["e12", "e13", "e14", "e15"]);
        assert_eq!(s.len, 4);
    }
}
