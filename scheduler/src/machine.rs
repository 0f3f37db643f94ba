//! The scheduling decisions of one scheduler, as a pure state machine: [`Machine::step`] takes an
//! [`Input`] and returns the [`Action`]s to perform. No I/O, no time, no actors.
//!
//! A *flight* is one resolution of one cache key (plus whether it overwrites). The first call of
//! a key starts a flight and leads it; identical calls arriving while it is in flight join it and
//! get its result without any store round trip of their own.

use cairn_engine::catalog::{CacheStatus, Digest, HeldLease, Lease};
use cairn_engine::det::Map;
use cairn_engine::task::{JobReport, TaskError};
use std::sync::Arc;

/// A call's id, local to one scheduler.
pub type CallId = u64;

/// What identifies a flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlightKey {
    /// The cache key digest.
    pub digest: Digest,
    /// Overwrite calls never share a flight with ordinary ones.
    pub overwrite: bool,
}

/// How a resolve ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The output is stored.
    Hit(Arc<[u8]>),
    /// This flight holds the lease.
    Acquired(Lease),
    /// Another execution holds it.
    Held(HeldLease),
    /// The store could not answer; why.
    Failed(StoreFailure),
}

/// Why the store could not answer a lookup or a wait: whether it was unavailable (a lost
/// connection, an unreachable server, retries exhausted: trying later may work) and the
/// engine's message. Typed, unlike the string it replaces, so that callers can tell an outage
/// from a broken entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFailure {
    /// The store was out of reach (as opposed to refusing or failing the operation).
    pub unavailable: bool,
    /// The engine's error, as text.
    pub message: String,
}

impl From<&cairn_engine::Error> for StoreFailure {
    fn from(e: &cairn_engine::Error) -> Self {
        StoreFailure {
            unavailable: e.is_outage(),
            message: e.to_string(),
        }
    }
}

impl std::fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// How a wait behind another execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The other execution stored its output.
    Hit(Vec<u8>),
    /// This flight holds the lease now (the holder failed, released or went silent).
    Acquired(Lease),
    /// The store failed while waiting.
    Failed(StoreFailure),
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A call arrived; `flight` is `None` for a task that is not cacheable.
    Call {
        /// Its id.
        call: CallId,
        /// Its flight.
        flight: Option<FlightKey>,
        /// After waiting for an execution that failed, return its error instead of running.
        fail_fast: bool,
    },
    /// A resolve finished.
    Resolved {
        /// Whose.
        flight: FlightKey,
        /// Its outcome.
        outcome: Lookup,
    },
    /// A wait finished.
    Waited {
        /// Whose.
        flight: FlightKey,
        /// Its outcome.
        outcome: WaitOutcome,
    },
    /// A worker reported a job.
    JobDone {
        /// The call that dispatched it.
        call: CallId,
        /// The flight, for cached calls.
        flight: Option<FlightKey>,
        /// The report.
        report: JobReport,
    },
}

/// Something to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Resolve the flight's key for its leader.
    Resolve {
        /// The flight.
        flight: FlightKey,
        /// Its leading call.
        leader: CallId,
    },
    /// Wait behind another execution's lease.
    Wait {
        /// The flight.
        flight: FlightKey,
        /// Its leading call.
        leader: CallId,
        /// The lease as seen.
        held: HeldLease,
    },
    /// Send the leader's job to a worker, under `lease` (or uncached).
    Dispatch {
        /// The flight, for cached calls.
        flight: Option<FlightKey>,
        /// The call whose input the job runs.
        leader: CallId,
        /// The lease to run under; `None` runs uncached.
        lease: Option<Lease>,
    },
    /// Give up a lease without running (fail-fast after a failed execution).
    Release {
        /// The lease.
        lease: Lease,
    },
    /// Answer a call.
    Reply(Reply),
}

/// The answer to one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The call.
    pub call: CallId,
    /// Output bytes (one copy, shared by every call of a flight) or error.
    pub output: Result<Arc<[u8]>, TaskError>,
    /// Its cache status.
    pub status: CacheStatus,
    /// The execution it waited for, if it did.
    pub waited_for: Option<String>,
    /// The task's body ran for this call (whatever the status: a holder whose output lost
    /// to one stored first reports `Hit`, yet its body ran).
    pub ran: bool,
    /// Why the cache could not be read or written (LookupFailure, PutFailure).
    pub cache_error: Option<String>,
}

/// Whether a flight's leader ran the task body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ran {
    No,
    Leader,
}

#[derive(Debug)]
enum Stage {
    Resolving,
    Waiting,
    Running { lookup_error: Option<String> },
}

#[derive(Debug)]
struct Flight {
    leader: CallId,
    joiners: Vec<CallId>,
    stage: Stage,
    waited_for: Option<String>,
    fail_fast: bool,
}

impl Flight {
    fn calls(&self) -> impl Iterator<Item = CallId> + '_ {
        std::iter::once(self.leader).chain(self.joiners.iter().copied())
    }
}

/// The single-flight table of one scheduler.
#[derive(Debug, Default)]
pub struct Machine {
    flights: Map<FlightKey, Flight>,
}

impl Machine {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Flights in progress.
    pub fn in_flight(&self) -> usize {
        self.flights.len()
    }

    /// The call leading `flight`, if it is in progress.
    pub fn leader_of(&self, flight: &FlightKey) -> Option<CallId> {
        self.flights.get(flight).map(|f| f.leader)
    }

    /// Applies `input`; returns what to do.
    pub fn step(&mut self, input: Input) -> Vec<Action> {
        match input {
            Input::Call {
                call, flight: None, ..
            } => vec![Action::Dispatch {
                flight: None,
                leader: call,
                lease: None,
            }],
            Input::Call {
                call,
                flight: Some(key),
                fail_fast,
            } => match self.flights.get_mut(&key) {
                Some(f) => {
                    f.joiners.push(call);
                    Vec::new()
                }
                None => {
                    self.flights.insert(
                        key,
                        Flight {
                            leader: call,
                            joiners: Vec::new(),
                            stage: Stage::Resolving,
                            waited_for: None,
                            fail_fast,
                        },
                    );
                    vec![Action::Resolve {
                        flight: key,
                        leader: call,
                    }]
                }
            },
            Input::Resolved { flight, outcome } => self.resolved(flight, outcome),
            Input::Waited { flight, outcome } => match outcome {
                WaitOutcome::Hit(output) => {
                    let output: Arc<[u8]> = output.into();
                    self.finish(flight, Ran::No, None, |_| {
                        (Ok(output.clone()), CacheStatus::Waited)
                    })
                }
                WaitOutcome::Acquired(lease) => self.acquired(flight, lease),
                WaitOutcome::Failed(e) => {
                    self.finish(flight, Ran::No, Some(e.message.clone()), |_| {
                        (
                            Err(TaskError::Engine {
                                detail: e.message.clone(),
                            }),
                            CacheStatus::LookupFailure,
                        )
                    })
                }
            },
            Input::JobDone {
                call,
                flight: None,
                report,
            } => vec![Action::Reply(Reply {
                call,
                output: report.output.map(Arc::from),
                status: CacheStatus::Disabled,
                waited_for: None,
                ran: report.attempts > 0,
                cache_error: None,
            })],
            Input::JobDone {
                flight: Some(key),
                report,
                ..
            } if matches!(report.output, Err(TaskError::Cancelled { .. })) => {
                self.leader_cancelled(key, report)
            }
            Input::JobDone {
                flight: Some(key),
                report,
                ..
            } => {
                let lookup_error = match self.flights.get(&key).map(|f| &f.stage) {
                    Some(Stage::Running { lookup_error }) => lookup_error.clone(),
                    _ => None,
                };
                let lookup_failed = lookup_error.is_some();
                let ran = if report.attempts > 0 {
                    Ran::Leader
                } else {
                    Ran::No
                };
                let cache_error = lookup_error.or_else(|| report.cache_error.clone());
                let output = report.output.map(Arc::<[u8]>::from);
                self.finish(key, ran, cache_error, |is_leader| {
                    let status = if lookup_failed {
                        CacheStatus::LookupFailure
                    } else if is_leader || report.status == CacheStatus::Hit {
                        report.status
                    } else if output.is_ok() {
                        CacheStatus::Waited
                    } else {
                        CacheStatus::Miss
                    };
                    (output.clone(), status)
                })
            }
        }
    }

    /// The leader's run was cancelled and its job aborted (its lease released): the leader
    /// gets the error; calls that joined it (perhaps from other runs) start the flight again,
    /// led by the first of them.
    fn leader_cancelled(&mut self, key: FlightKey, report: JobReport) -> Vec<Action> {
        let Some(mut f) = self.flights.remove(&key) else {
            return Vec::new();
        };
        let mut actions = vec![Action::Reply(Reply {
            call: f.leader,
            output: report.output.map(Arc::from),
            status: report.status,
            waited_for: None,
            ran: report.attempts > 0,
            cache_error: None,
        })];
        if !f.joiners.is_empty() {
            f.leader = f.joiners.remove(0);
            f.stage = Stage::Resolving;
            f.waited_for = None;
            actions.push(Action::Resolve {
                flight: key,
                leader: f.leader,
            });
            self.flights.insert(key, f);
        }
        actions
    }

    fn resolved(&mut self, key: FlightKey, outcome: Lookup) -> Vec<Action> {
        match outcome {
            Lookup::Hit(output) => self.finish(key, Ran::No, None, |_| {
                (Ok(output.clone()), CacheStatus::Hit)
            }),
            Lookup::Acquired(lease) => self.acquired(key, lease),
            Lookup::Held(held) => match self.flights.get_mut(&key) {
                Some(f) => {
                    f.stage = Stage::Waiting;
                    f.waited_for = Some(held.execution.clone());
                    vec![Action::Wait {
                        flight: key,
                        leader: f.leader,
                        held,
                    }]
                }
                None => Vec::new(),
            },
            // The cache cannot be read: run uncached rather than fail the call.
            Lookup::Failed(why) => match self.flights.get_mut(&key) {
                Some(f) => {
                    f.stage = Stage::Running {
                        lookup_error: Some(why.message),
                    };
                    vec![Action::Dispatch {
                        flight: Some(key),
                        leader: f.leader,
                        lease: None,
                    }]
                }
                None => Vec::new(),
            },
        }
    }

    fn acquired(&mut self, key: FlightKey, lease: Lease) -> Vec<Action> {
        let Some(f) = self.flights.get_mut(&key) else {
            return vec![Action::Release { lease }];
        };
        if let (Some(error), Some(_), true) = (&lease.previous_failure, &f.waited_for, f.fail_fast)
        {
            let error = TaskError::Failed {
                message: error.clone(),
            };
            let mut actions = vec![Action::Release {
                lease: lease.clone(),
            }];
            actions.extend(self.finish(key, Ran::No, None, |_| {
                (Err(error.clone()), CacheStatus::Miss)
            }));
            return actions;
        }
        f.stage = Stage::Running { lookup_error: None };
        vec![Action::Dispatch {
            flight: Some(key),
            leader: f.leader,
            lease: Some(lease),
        }]
    }

    /// Ends a flight, replying to every call in it; `answer(is_leader)` gives each reply.
    /// `cache_error` goes to the calls whose status says the cache failed them.
    fn finish(
        &mut self,
        key: FlightKey,
        ran: Ran,
        cache_error: Option<String>,
        answer: impl Fn(bool) -> (Result<Arc<[u8]>, TaskError>, CacheStatus),
    ) -> Vec<Action> {
        let Some(f) = self.flights.remove(&key) else {
            return Vec::new();
        };
        f.calls()
            .map(|call| {
                let is_leader = call == f.leader;
                let (output, status) = answer(is_leader);
                let cache_failed =
                    matches!(status, CacheStatus::LookupFailure | CacheStatus::PutFailure);
                Action::Reply(Reply {
                    call,
                    output,
                    status,
                    waited_for: f.waited_for.clone(),
                    ran: is_leader && ran == Ran::Leader,
                    // Why the cache failed a call, or what its leader's commit repaired.
                    cache_error: cache_error.clone().filter(|_| cache_failed || is_leader),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(n: u128) -> FlightKey {
        FlightKey {
            digest: Digest(n),
            overwrite: false,
        }
    }

    fn lease(n: u128, previous_failure: Option<&str>) -> Lease {
        Lease {
            digest: Digest(n),
            owner: "node".into(),
            incarnation: 1,
            execution: "e1".into(),
            generation: 1,
            ttl: Duration::from_secs(30),
            overwrite: false,
            evicted: false,
            previous_failure: previous_failure.map(str::to_string),
            took_over: false,
            replaces_corrupt: None,
        }
    }

    fn held(n: u128) -> HeldLease {
        HeldLease::new(Digest(n), "other-node", "e0", 3, 0, Duration::from_secs(30))
    }

    fn replies(actions: &[Action]) -> Vec<(CallId, CacheStatus, Result<Vec<u8>, TaskError>)> {
        let mut r: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Reply(Reply {
                    call,
                    status,
                    output,
                    ..
                }) => Some((*call, *status, output.clone().map(|o| o.to_vec()))),
                _ => None,
            })
            .collect();
        r.sort_by_key(|(c, _, _)| *c);
        r
    }

    fn call(m: &mut Machine, id: CallId, k: FlightKey) -> Vec<Action> {
        m.step(Input::Call {
            call: id,
            flight: Some(k),
            fail_fast: false,
        })
    }

    #[test]
    fn a_cancelled_leader_hands_its_flight_to_the_calls_that_joined_it() {
        let mut m = Machine::new();
        let k = key(7);
        m.step(Input::Call {
            call: 1,
            flight: Some(k),
            fail_fast: false,
        });
        m.step(Input::Call {
            call: 2,
            flight: Some(k),
            fail_fast: false,
        });
        m.step(Input::Resolved {
            flight: k,
            outcome: Lookup::Acquired(lease(7, None)),
        });
        let actions = m.step(Input::JobDone {
            call: 1,
            flight: Some(k),
            report: JobReport {
                output: Err(TaskError::Cancelled { run: "r".into() }),
                status: CacheStatus::Miss,
                attempts: 1,
                cache_error: None,
            },
        });
        assert!(matches!(
            &actions[..],
            [
                Action::Reply(Reply {
                    call: 1,
                    output: Err(TaskError::Cancelled { .. }),
                    ..
                }),
                Action::Resolve { leader: 2, .. }
            ]
        ));
        assert_eq!(m.in_flight(), 1, "call 2 still in flight");
    }

    #[test]
    fn identical_calls_share_one_resolution() {
        let mut m = Machine::new();
        assert_eq!(
            call(&mut m, 1, key(7)),
            vec![Action::Resolve {
                flight: key(7),
                leader: 1
            }]
        );
        for id in 2..=1000 {
            assert!(
                call(&mut m, id, key(7)).is_empty(),
                "joiners cause no store work"
            );
        }
        let actions = m.step(Input::Resolved {
            flight: key(7),
            outcome: Lookup::Hit(Arc::from(&b"49"[..])),
        });
        let r = replies(&actions);
        assert_eq!(r.len(), 1000);
        assert!(
            r.iter()
                .all(|(_, s, o)| *s == CacheStatus::Hit && o.as_deref() == Ok(&b"49"[..]))
        );
        assert_eq!(m.in_flight(), 0);
        // The next call resolves again (no stale result is kept).
        assert_eq!(
            call(&mut m, 1001, key(7)),
            vec![Action::Resolve {
                flight: key(7),
                leader: 1001
            }]
        );
    }

    #[test]
    fn acquired_flight_dispatches_once_and_answers_everyone() {
        let mut m = Machine::new();
        call(&mut m, 1, key(1));
        call(&mut m, 2, key(1));
        let actions = m.step(Input::Resolved {
            flight: key(1),
            outcome: Lookup::Acquired(lease(1, None)),
        });
        assert_eq!(
            actions,
            vec![Action::Dispatch {
                flight: Some(key(1)),
                leader: 1,
                lease: Some(lease(1, None))
            }]
        );
        call(&mut m, 3, key(1));
        let report = JobReport {
            output: Ok(b"1".to_vec()),
            status: CacheStatus::Populated,
            attempts: 1,
            cache_error: None,
        };
        let r = replies(&m.step(Input::JobDone {
            call: 1,
            flight: Some(key(1)),
            report,
        }));
        assert_eq!(
            r.iter().map(|(c, s, _)| (*c, *s)).collect::<Vec<_>>(),
            vec![
                (1, CacheStatus::Populated),
                (2, CacheStatus::Waited),
                (3, CacheStatus::Waited)
            ]
        );
    }

    #[test]
    fn held_flight_waits_then_answers_waited() {
        let mut m = Machine::new();
        call(&mut m, 1, key(2));
        let actions = m.step(Input::Resolved {
            flight: key(2),
            outcome: Lookup::Held(held(2)),
        });
        assert!(matches!(&actions[..], [Action::Wait { leader: 1, .. }]));
        call(&mut m, 2, key(2));
        let actions = m.step(Input::Waited {
            flight: key(2),
            outcome: WaitOutcome::Hit(b"x".to_vec()),
        });
        let r = replies(&actions);
        assert!(r.iter().all(|(_, s, _)| *s == CacheStatus::Waited));
        assert!(
            actions.iter().all(
                |a| matches!(a, Action::Reply(Reply { waited_for: Some(e), .. }) if e == "e0")
            )
        );
    }

    #[test]
    fn failed_holder_is_rerun_or_reported_per_policy() {
        for fail_fast in [false, true] {
            let mut m = Machine::new();
            m.step(Input::Call {
                call: 1,
                flight: Some(key(3)),
                fail_fast,
            });
            m.step(Input::Resolved {
                flight: key(3),
                outcome: Lookup::Held(held(3)),
            });
            let actions = m.step(Input::Waited {
                flight: key(3),
                outcome: WaitOutcome::Acquired(lease(3, Some("boom"))),
            });
            if fail_fast {
                assert!(matches!(actions[0], Action::Release { .. }));
                let r = replies(&actions);
                assert_eq!(r[0].1, CacheStatus::Miss);
                assert_eq!(
                    r[0].2,
                    Err(TaskError::Failed {
                        message: "boom".into()
                    })
                );
            } else {
                assert!(matches!(
                    actions[..],
                    [Action::Dispatch { lease: Some(_), .. }]
                ));
            }
        }
    }

    #[test]
    fn lookup_failure_runs_uncached_and_says_so() {
        let mut m = Machine::new();
        call(&mut m, 1, key(4));
        call(&mut m, 2, key(4));
        let actions = m.step(Input::Resolved {
            flight: key(4),
            outcome: Lookup::Failed(StoreFailure {
                unavailable: true,
                message: "store down".into(),
            }),
        });
        assert_eq!(
            actions,
            vec![Action::Dispatch {
                flight: Some(key(4)),
                leader: 1,
                lease: None
            }]
        );
        let report = JobReport {
            output: Ok(b"v".to_vec()),
            status: CacheStatus::Disabled,
            attempts: 1,
            cache_error: None,
        };
        let r = replies(&m.step(Input::JobDone {
            call: 1,
            flight: Some(key(4)),
            report,
        }));
        assert!(
            r.iter()
                .all(|(_, s, o)| *s == CacheStatus::LookupFailure && o.is_ok())
        );
    }

    #[test]
    fn errors_reach_every_joiner_and_overwrites_do_not_join() {
        let mut m = Machine::new();
        call(&mut m, 1, key(5));
        let ow = FlightKey {
            digest: Digest(5),
            overwrite: true,
        };
        assert_eq!(
            call(&mut m, 2, ow),
            vec![Action::Resolve {
                flight: ow,
                leader: 2
            }],
            "separate flight"
        );
        call(&mut m, 3, key(5));
        m.step(Input::Resolved {
            flight: key(5),
            outcome: Lookup::Acquired(lease(5, None)),
        });
        let failed = JobReport {
            output: Err(TaskError::Failed {
                message: "no".into(),
            }),
            status: CacheStatus::Miss,
            attempts: 1,
            cache_error: None,
        };
        let r = replies(&m.step(Input::JobDone {
            call: 1,
            flight: Some(key(5)),
            report: failed,
        }));
        assert_eq!(
            r.iter().map(|(c, s, _)| (*c, *s)).collect::<Vec<_>>(),
            vec![(1, CacheStatus::Miss), (3, CacheStatus::Miss)]
        );
        assert_eq!(m.in_flight(), 1, "the overwrite flight is still running");
    }

    #[test]
    fn uncached_calls_never_share() {
        let mut m = Machine::new();
        for id in 1..=3 {
            assert_eq!(
                m.step(Input::Call {
                    call: id,
                    flight: None,
                    fail_fast: false
                }),
                vec![Action::Dispatch {
                    flight: None,
                    leader: id,
                    lease: None
                }]
            );
        }
        let report = JobReport {
            output: Ok(vec![]),
            status: CacheStatus::Disabled,
            attempts: 1,
            cache_error: None,
        };
        let r = replies(&m.step(Input::JobDone {
            call: 2,
            flight: None,
            report,
        }));
        assert_eq!(r, vec![(2, CacheStatus::Disabled, Ok(vec![]))]);
    }

    /// What the machine asked for and has not been answered yet, in the property test.
    #[derive(Debug)]
    enum Asked {
        Resolve(FlightKey),
        Wait(FlightKey),
        Dispatch {
            call: CallId,
            flight: Option<FlightKey>,
        },
    }

    /// Seeded property test of the machine's action streams: random calls of three keys (some
    /// uncached, some fail-fast), and the outcome of every action the machine asks for fed back
    /// in random order: hits, acquisitions, leases held elsewhere, store failures, waits that
    /// end every way, jobs that succeed or fail. Whatever the order:
    /// - every call made is answered exactly once, and nothing else is answered;
    /// - a flight never has two resolves, waits or dispatches outstanding (single flight);
    /// - a cached dispatch runs under a lease of its own key;
    /// - calls of one key answered together get the same bytes;
    /// - once every outstanding action is answered, nothing is left in flight.
    #[test]
    fn action_streams_keep_single_flight_and_answer_every_call_once() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        use std::collections::{BTreeMap, BTreeSet};
        for seed in 0..500u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut m = Machine::new();
            let mut made: BTreeMap<CallId, Option<FlightKey>> = BTreeMap::new();
            let mut answered: BTreeSet<CallId> = BTreeSet::new();
            let mut asked: Vec<Asked> = Vec::new();
            let mut next_call: CallId = 0;
            let mut outputs = 0u8;
            let apply = |actions: Vec<Action>,
                         asked: &mut Vec<Asked>,
                         made: &BTreeMap<CallId, Option<FlightKey>>,
                         answered: &mut BTreeSet<CallId>| {
                let mut together: BTreeMap<u128, BTreeSet<Vec<u8>>> = BTreeMap::new();
                for a in actions {
                    let outstanding = |asked: &Vec<Asked>, k: FlightKey| {
                        asked.iter().any(|x| match x {
                            Asked::Resolve(f) | Asked::Wait(f) => *f == k,
                            Asked::Dispatch { flight, .. } => *flight == Some(k),
                        })
                    };
                    match a {
                        Action::Reply(r) => {
                            assert!(
                                made.contains_key(&r.call),
                                "seed {seed}: unknown call {}",
                                r.call
                            );
                            assert!(
                                answered.insert(r.call),
                                "seed {seed}: call {} answered twice",
                                r.call
                            );
                            if let (Ok(bytes), Some(Some(k))) = (&r.output, made.get(&r.call)) {
                                together
                                    .entry(k.digest.0)
                                    .or_default()
                                    .insert(bytes.to_vec());
                            }
                        }
                        Action::Resolve { flight, .. } => {
                            assert!(
                                !outstanding(asked, flight),
                                "seed {seed}: two actions for {flight:?}"
                            );
                            asked.push(Asked::Resolve(flight));
                        }
                        Action::Wait { flight, .. } => {
                            assert!(
                                !outstanding(asked, flight),
                                "seed {seed}: two actions for {flight:?}"
                            );
                            asked.push(Asked::Wait(flight));
                        }
                        Action::Dispatch {
                            flight,
                            leader,
                            lease,
                        } => {
                            if let Some(k) = flight {
                                assert!(
                                    !outstanding(asked, k),
                                    "seed {seed}: two actions for {k:?}"
                                );
                                if let Some(l) = &lease {
                                    assert_eq!(
                                        l.digest, k.digest,
                                        "seed {seed}: a lease of another key"
                                    );
                                }
                            }
                            asked.push(Asked::Dispatch {
                                call: leader,
                                flight,
                            });
                        }
                        Action::Release { .. } => {}
                    }
                }
                for (k, outs) in together {
                    assert!(
                        outs.len() <= 1,
                        "seed {seed}: key {k} answered with {outs:?} at once"
                    );
                }
            };
            let mut steps = 0;
            loop {
                steps += 1;
                assert!(steps < 10_000, "seed {seed}: the flights never settle");
                let draining = steps > 400;
                if draining && asked.is_empty() {
                    break;
                }
                if !draining && (asked.is_empty() || rng.random_bool(0.35)) {
                    let call = next_call;
                    next_call += 1;
                    let flight = (!rng.random_bool(0.1)).then(|| key(rng.random_range(0..3)));
                    made.insert(call, flight);
                    let actions = m.step(Input::Call {
                        call,
                        flight,
                        fail_fast: rng.random_bool(0.3),
                    });
                    apply(actions, &mut asked, &made, &mut answered);
                    continue;
                }
                let i = rng.random_range(0..asked.len());
                let input = match asked.swap_remove(i) {
                    Asked::Resolve(k) => Input::Resolved {
                        flight: k,
                        outcome: match rng.random_range(0..4) {
                            0 => {
                                outputs = outputs.wrapping_add(1);
                                Lookup::Hit(Arc::from(vec![outputs]))
                            }
                            1 => Lookup::Acquired(lease(k.digest.0, None)),
                            // Held elsewhere: never while draining, so that waits end.
                            2 if !draining => Lookup::Held(held(k.digest.0)),
                            _ => Lookup::Failed(StoreFailure {
                                unavailable: true,
                                message: "down".into(),
                            }),
                        },
                    },
                    Asked::Wait(k) => Input::Waited {
                        flight: k,
                        outcome: match rng.random_range(0..4) {
                            0 => {
                                outputs = outputs.wrapping_add(1);
                                WaitOutcome::Hit(vec![outputs])
                            }
                            1 => WaitOutcome::Acquired(lease(k.digest.0, Some("it failed"))),
                            2 => WaitOutcome::Acquired(lease(k.digest.0, None)),
                            _ => WaitOutcome::Failed(StoreFailure {
                                unavailable: false,
                                message: "broken".into(),
                            }),
                        },
                    },
                    Asked::Dispatch { call, flight } => {
                        outputs = outputs.wrapping_add(1);
                        Input::JobDone {
                            call,
                            flight,
                            report: JobReport {
                                output: if rng.random_bool(0.2) {
                                    Err(TaskError::Failed {
                                        message: "no".into(),
                                    })
                                } else {
                                    Ok(vec![outputs])
                                },
                                status: if flight.is_some() {
                                    CacheStatus::Populated
                                } else {
                                    CacheStatus::Disabled
                                },
                                attempts: 1,
                                cache_error: None,
                            },
                        }
                    }
                };
                let actions = m.step(input);
                apply(actions, &mut asked, &made, &mut answered);
            }
            let unanswered: Vec<&CallId> = made.keys().filter(|c| !answered.contains(c)).collect();
            assert!(
                unanswered.is_empty(),
                "seed {seed}: calls {unanswered:?} never answered"
            );
            assert_eq!(m.in_flight(), 0, "seed {seed}: flights left");
        }
    }
}
