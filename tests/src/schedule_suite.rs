//! The schedule suite: exactly-once ticks across scheduler instances, catch-up, overlap, pause,
//! backfill, on every backend, with a manual clock. Instantiate with
//! [`schedule_conformance!`](crate::schedule_conformance).

use crate::harness::Harness;
use cairn_engine::clock::ManualClock;
use cairn_engine::nodes::Incarnation;
use cairn_engine::runs::{
    Created, Ended, Idempotency, NewRun, RunFilter, RunRecord, RunStatus, Runs,
};
use cairn_engine::schedule::{CatchUp, Fire, Overlap, ScheduleSpec, Schedules, Trigger};
use cairn_engine::store::Store;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const SECOND: i64 = 1_000;

fn every_second(name: &str) -> ScheduleSpec {
    ScheduleSpec::new(
        name,
        "wf",
        Trigger::Every {
            period_ms: 1_000,
            anchor_ms: 0,
        },
    )
}

/// Instance `name` of a scheduler node (first incarnation).
fn inc(name: &str) -> Incarnation {
    Incarnation {
        node: name.into(),
        incarnation: 1,
    }
}

/// Ends `fire`'s run as its owner, as a launcher does when the workflow returns; returns the run
/// the schedule starts in the same transaction (a buffered tick), if any.
async fn end<S: Store>(
    runs: &Runs<S>,
    fire: &Fire,
    outcome: Result<(), String>,
) -> Option<RunRecord> {
    let owner = fire.run.owner.clone().expect("a fired run has an owner");
    match runs
        .finish(&fire.run_id, &owner, outcome.map(|()| "null".into()))
        .await
        .unwrap()
    {
        Ended::Ended { next, .. } => next.map(|n| *n),
        other => panic!("{other:?}"),
    }
}

fn unique(name: &str) -> String {
    format!("{name}-{:08x}", rand::random::<u32>())
}

async fn instances<H: Harness>(
    h: &H,
    first: &H::S,
    clock: &ManualClock,
    n: usize,
) -> Vec<Schedules<H::S>> {
    let first = first.clone();
    let mut out = vec![Schedules::new(first.clone(), Arc::new(clock.clone()))];
    for _ in 1..n {
        out.push(Schedules::new(
            h.second_handle(&first).await,
            Arc::new(clock.clone()),
        ));
    }
    out
}

/// Three instances polling the same store over 1,000 ticks fire every tick exactly once.
pub async fn three_instances_fire_each_tick_once<H: Harness>() {
    let h = H::new().await;
    let clock = ManualClock::new(0);
    let store = h.open().await;
    let nodes = instances(&h, &store, &clock, 3).await;
    let runs = Runs::new(h.second_handle(&store).await, Arc::new(clock.clone()));
    let mut spec = every_second(&unique("exactly-once"));
    spec.overlap = Overlap::AllowAll;
    for n in &nodes {
        n.register(&spec).await.unwrap();
    }
    let mut fired: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for tick in 1..=1_000i64 {
        clock.advance(SECOND);
        // Each instance polls in its own task, starting in a rotating order, so they race.
        let polls: Vec<_> = (0..nodes.len())
            .map(|k| {
                let i = (k + tick as usize) % nodes.len();
                let (n, name, instance) = (
                    nodes[i].clone(),
                    spec.name.clone(),
                    inc(&format!("node-{i}")),
                );
                tokio::spawn(async move { (n.poll_one(&name, &instance).await.unwrap(), instance) })
            })
            .collect();
        for poll in polls {
            let (fires, instance) = poll.await.unwrap();
            for f in fires {
                assert_eq!(f.tick_ms, tick * SECOND);
                assert_eq!(f.run.owner.as_ref().unwrap().node, instance.node);
                end(&runs, &f, Ok(())).await;
                fired
                    .entry(f.tick_ms)
                    .or_default()
                    .push(instance.node.clone());
            }
        }
    }
    assert_eq!(fired.len(), 1_000);
    assert!(
        fired.values().all(|who| who.len() == 1),
        "a tick fired twice"
    );
    let firers: std::collections::HashSet<&String> = fired.values().flatten().collect();
    assert!(firers.len() > 1, "more than one instance did the firing");
    let record = nodes[1].get(&spec.name).await.unwrap().unwrap();
    assert_eq!(
        (
            record.state.fired,
            record.state.missed,
            record.state.running
        ),
        (1_000, 0, 0)
    );
    assert_eq!(nodes[2].ticks(&spec.name).await.unwrap().len(), 1_000);
}

/// After an hour of downtime each catch-up policy fires what it says; next fire times survive
/// (a fresh `Schedules` over the same store continues from the stored state).
pub async fn catch_up_after_downtime<H: Harness>() {
    let h = H::new().await;
    for (policy, expect_fired) in [
        (CatchUp::Skip, 0usize),
        (CatchUp::LatestOnly, 1),
        (
            CatchUp::All {
                window_ms: 10_000,
                cap: 5,
            },
            5,
        ),
        (
            CatchUp::All {
                window_ms: 3_000,
                cap: 100,
            },
            3,
        ),
    ] {
        let clock = ManualClock::new(0);
        let mut spec = every_second(&unique("catch-up"));
        spec.catch_up = policy;
        spec.overlap = Overlap::AllowAll;
        spec.misfire_grace_ms = 500;
        Schedules::new(h.open().await, Arc::new(clock.clone()))
            .register(&spec)
            .await
            .unwrap();
        clock.advance(3_600 * SECOND + 700); // down for an hour; the last tick is 700 ms old
        let restarted = Schedules::new(h.open().await, Arc::new(clock.clone()));
        let fires = restarted
            .poll_one(&spec.name, &inc("restarted"))
            .await
            .unwrap();
        assert_eq!(fires.len(), expect_fired, "{policy:?}");
        let state = restarted.get(&spec.name).await.unwrap().unwrap().state;
        assert_eq!(
            state.missed as usize + fires.len(),
            3_600,
            "{policy:?}: every tick is fired or counted missed"
        );
        assert_eq!(state.next_fire_ms, 3_601 * SECOND);
        if let Some(last) = fires.last() {
            assert_eq!(
                last.tick_ms,
                3_600 * SECOND,
                "the most recent ticks are the ones caught up"
            );
            assert_eq!(last.late_ms, 700);
        }
    }
}

/// Overlap: skip counts skipped ticks; buffer-one fires the held tick when the run ends;
/// allow-all fires everything.
pub async fn overlap_policies<H: Harness>() {
    let h = H::new().await;
    for overlap in [Overlap::Skip, Overlap::BufferOne, Overlap::AllowAll] {
        let clock = ManualClock::new(0);
        let store = h.open().await;
        let s = Schedules::new(store.clone(), Arc::new(clock.clone()));
        let runs = Runs::new(store, Arc::new(clock.clone()));
        let mut spec = every_second(&unique("overlap"));
        spec.overlap = overlap;
        s.register(&spec).await.unwrap();
        let mut running: Vec<Fire> = Vec::new();
        for _ in 0..3 {
            clock.advance(SECOND);
            running.extend(s.poll_one(&spec.name, &inc("n")).await.unwrap());
        }
        let state = s.get(&spec.name).await.unwrap().unwrap().state;
        match overlap {
            Overlap::Skip => assert_eq!((running.len(), state.skipped_overlap), (1, 2)),
            Overlap::BufferOne => assert_eq!(
                (running.len(), state.skipped_overlap, state.buffered),
                (1, 1, Some(3_000))
            ),
            Overlap::AllowAll => assert_eq!((running.len(), state.running), (3, 3)),
        }
        let buffered = end(&runs, &running[0], Err("failed on purpose".into())).await;
        if overlap == Overlap::BufferOne {
            let b = buffered.expect("the buffered tick fires when the run ends");
            assert_eq!(b.tick.map(|t| t.tick_ms), Some(3_000));
            assert_eq!(b.status, RunStatus::Running, "its run starts with it");
        } else {
            assert!(buffered.is_none());
        }
        let state = s.get(&spec.name).await.unwrap().unwrap().state;
        assert_eq!(
            state.failed, 1,
            "a failed run is counted and the schedule goes on"
        );
    }
}

/// Pause passes ticks as missed; resume continues from now; backfill fires a past range once.
pub async fn pause_resume_backfill<H: Harness>() {
    let h = H::new().await;
    let clock = ManualClock::new(0);
    let store = h.open().await;
    let s = Schedules::new(store.clone(), Arc::new(clock.clone()));
    let mut spec = every_second(&unique("pause"));
    spec.overlap = Overlap::AllowAll;
    s.register(&spec).await.unwrap();
    clock.advance(SECOND);
    assert_eq!(s.poll_one(&spec.name, &inc("n")).await.unwrap().len(), 1);
    s.pause(&spec.name).await.unwrap();
    clock.advance(5 * SECOND);
    assert!(
        s.poll_one(&spec.name, &inc("n")).await.unwrap().is_empty(),
        "paused"
    );
    s.resume(&spec.name).await.unwrap();
    clock.advance(SECOND);
    let fires = s.poll_one(&spec.name, &inc("n")).await.unwrap();
    assert_eq!(
        fires.iter().map(|f| f.tick_ms).collect::<Vec<_>>(),
        vec![7 * SECOND]
    );
    let state = s.get(&spec.name).await.unwrap().unwrap().state;
    assert_eq!(state.missed, 5);

    // Backfill 2..=6 s: the ticks missed while paused, queued, then fired once each by the next
    // poll of any instance.
    assert_eq!(
        s.backfill(&spec.name, 2 * SECOND, 6 * SECOND)
            .await
            .unwrap(),
        5
    );
    let other = Schedules::new(h.second_handle(&store).await, Arc::new(clock.clone()));
    let filled = other.poll_one(&spec.name, &inc("other")).await.unwrap();
    assert_eq!(
        filled.iter().map(|f| f.tick_ms).collect::<Vec<_>>(),
        vec![2_000, 3_000, 4_000, 5_000, 6_000]
    );
    assert!(
        filled
            .iter()
            .all(|f| f.backfill && f.run_id.ends_with(&f.tick_ms.to_string()))
    );
    assert_eq!(
        s.backfill(&spec.name, SECOND, 7 * SECOND).await.unwrap(),
        0,
        "all already fired"
    );
    assert!(s.poll_one(&spec.name, &inc("n")).await.unwrap().is_empty());
    let err = s.pause("no-such-schedule").await.unwrap_err();
    assert!(err.to_string().contains("no-such-schedule"), "{err}");
}

/// A schedule whose record is corrupt is skipped with a logged error; the others still fire.
pub async fn a_broken_schedule_does_not_stop_the_others<H: Harness>() {
    let h = H::new().await;
    let clock = ManualClock::new(0);
    let store = h.open().await;
    let s = Schedules::new(store.clone(), Arc::new(clock.clone()));
    let (good, bad) = (every_second(&unique("good")), every_second(&unique("bad")));
    s.register(&good).await.unwrap();
    s.register(&bad).await.unwrap();
    crate::harness::blind_write(
        &store,
        &cairn_engine::keys::schedule(&bad.name),
        b"\xc1 not a schedule",
    )
    .await;
    clock.advance(SECOND);
    let err = s.poll_one(&bad.name, &inc("n")).await.unwrap_err();
    assert!(err.to_string().contains(&bad.name), "{err}");
    let fires = s.poll(&inc("n")).await.unwrap_or_default();
    assert!(
        fires.iter().any(|f| f.schedule == good.name),
        "the good schedule still fired"
    );
}

fn new_run(id: &str, workflow: &str, domain: &str, input: &str) -> NewRun {
    NewRun {
        run_id: id.to_string(),
        workflow: workflow.to_string(),
        project: "p".into(),
        domain: domain.into(),
        overwrite_cache: false,
        input: input.into(),
        schedule: None,
        tick: None,
    }
}

fn created(c: Created) -> RunRecord {
    match c {
        Created::New(r) => r,
        other => panic!("expected a new run, got {other:?}"),
    }
}

/// Runs (the table above schedules and the API): create, end once, get, list newest first with
/// filters and paging; an id is never reused; large inputs, outputs and errors are kept apart
/// from the record and read back whole; oversized input is refused, oversized output not kept.
pub async fn runs_are_recorded_listed_and_never_reused<H: Harness>() {
    let h = H::new().await;
    let clock = ManualClock::new(5_000);
    let runs = Runs::new(h.open().await, Arc::new(clock.clone()));
    let me = inc("n");
    let workflow = unique("wf");
    let mut owners = Vec::new();
    for i in 0..25i64 {
        clock.advance(1);
        let domain = if i % 2 == 0 { "even" } else { "odd" };
        let r = created(
            runs.create(
                &new_run(
                    &format!("{workflow}-{i:02}"),
                    &workflow,
                    domain,
                    "{\"n\":1}",
                ),
                &me,
                None,
            )
            .await
            .unwrap(),
        );
        assert_eq!(r.attempts.len(), 1);
        owners.push(r.owner.unwrap());
    }
    // Another run with a taken id is refused.
    let err = runs
        .create(
            &new_run(&format!("{workflow}-00"), "other", "even", "1"),
            &me,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("another run already has this id"),
        "{err}"
    );

    // End: the first end wins.
    let id3 = format!("{workflow}-03");
    let Ended::Ended { record: done, .. } =
        runs.finish(&id3, &owners[3], Ok("9".into())).await.unwrap()
    else {
        panic!("not ended")
    };
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.output.as_ref().and_then(|t| t.as_str()), Some("9"));
    assert_eq!(done.finished_at_ms, Some(5_025));
    assert!(done.owner.is_none());
    let again = runs
        .finish(&id3, &owners[3], Err("late".into()))
        .await
        .unwrap();
    assert_eq!(again, Ended::AlreadyEnded(done.clone()));
    // 60,000 characters of input and output: kept apart, read back whole.
    let big_in = format!("\"{}\"", "i".repeat(60_000));
    let big = created(
        runs.create(
            &new_run(&unique("big"), &workflow, "big", &big_in),
            &me,
            None,
        )
        .await
        .unwrap(),
    );
    let big_out = format!("\"{}\"", "o".repeat(60_000));
    let owner = big.owner.clone().unwrap();
    assert!(matches!(
        runs.finish(&big.run_id, &owner, Ok(big_out.clone()))
            .await
            .unwrap(),
        Ended::Ended { .. }
    ));
    let read = runs.get(&big.run_id).await.unwrap().unwrap();
    assert_eq!(read.input.as_str(), Some(big_in.as_str()));
    assert_eq!(
        read.output.as_ref().and_then(|t| t.as_str()),
        Some(big_out.as_str())
    );
    // Over the output limit: the run still ends, the output is not kept, its size is.
    let id4 = format!("{workflow}-04");
    let limit = runs.limits().max_output_bytes;
    runs.finish(&id4, &owners[4], Ok("1".repeat(limit + 1)))
        .await
        .unwrap();
    let r4 = runs.get(&id4).await.unwrap().unwrap();
    let out = r4.output.unwrap();
    assert_eq!(
        (out.kept, out.bytes, out.text),
        (false, limit as u64 + 1, None)
    );
    let id5 = format!("{workflow}-05");
    runs.finish(&id5, &owners[5], Err("boom".into()))
        .await
        .unwrap();
    assert_eq!(
        runs.get(&id5).await.unwrap().unwrap().status,
        RunStatus::Failed
    );
    assert!(
        runs.finish("no-such-run", &owners[0], Ok("1".into()))
            .await
            .is_err()
    );
    let huge = "1".repeat(runs.limits().max_input_bytes + 1);
    assert!(
        runs.create(&new_run(&unique("huge"), &workflow, "x", &huge), &me, None)
            .await
            .is_err()
    );

    // Newest first, in pages of 10, filtered to this workflow and its 25 numbered runs.
    let filter = RunFilter {
        workflow: Some(workflow.clone()),
        ..RunFilter::default()
    };
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = runs.list(&filter, 10, cursor.as_deref()).await.unwrap();
        seen.extend(page.runs.iter().map(|r| r.run_id.clone()));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    seen.retain(|id| id != &big.run_id);
    let expected: Vec<String> = (0..25)
        .rev()
        .map(|i| format!("{workflow}-{i:02}"))
        .collect();
    assert_eq!(seen, expected);

    // Filters combine.
    let even_running = RunFilter {
        workflow: Some(workflow.clone()),
        domain: Some("even".into()),
        status: Some(RunStatus::Running),
        ..RunFilter::default()
    };
    let page = runs.list(&even_running, 100, None).await.unwrap();
    assert_eq!(
        page.runs.len(),
        12,
        "13 even starts, of which one (04) ended"
    );
    assert!(page.next.is_none());
    assert!(runs.list(&filter, 10, Some("zz")).await.is_err());
    assert_eq!(
        runs.get(&id3).await.unwrap().map(|r| r.status),
        Some(RunStatus::Succeeded)
    );
    assert_eq!(runs.get("no-such-run").await.unwrap(), None);
}

/// Takeover: a run is taken over from its owner once (generation + 1, a second attempt with
/// its reason); the old owner can no longer end it; the new one can. The active index follows.
pub async fn runs_are_taken_over_and_fenced<H: Harness>() {
    let h = H::new().await;
    let clock = ManualClock::new(1_000);
    let store = h.open().await;
    let runs = Runs::new(store.clone(), Arc::new(clock.clone()));
    let (a, b, c) = (inc(&unique("a")), inc(&unique("b")), inc(&unique("c")));
    let id = unique("takeover");
    let first = created(
        runs.create(&new_run(&id, "wf", "d", "1"), &a, None)
            .await
            .unwrap(),
    );
    let old = first.owner.clone().unwrap();
    let active = runs.active(None, 100_000).await.unwrap();
    assert!(active.contains(&(id.clone(), old.clone())));
    // Two nodes race to take it over: exactly one wins.
    let (rb, rc) = (
        runs.clone(),
        Runs::new(h.second_handle(&store).await, Arc::new(clock.clone())),
    );
    let (wb, wc) = tokio::join!(
        rb.take_over(&id, &old, &b, "a went silent"),
        rc.take_over(&id, &old, &c, "a went silent")
    );
    let (wb, wc) = (wb.unwrap(), wc.unwrap());
    assert!(wb.is_some() != wc.is_some(), "exactly one takeover wins");
    let taken = wb.or(wc).unwrap();
    let new = taken.owner.clone().unwrap();
    assert_eq!((taken.generation, taken.attempts.len()), (2, 2));
    assert_eq!(taken.attempts[1].reason.as_deref(), Some("a went silent"));
    // The old owner is fenced; a second takeover from it finds nothing.
    assert!(matches!(
        runs.finish(&id, &old, Ok("1".into())).await.unwrap(),
        Ended::Fenced(_)
    ));
    assert!(
        runs.take_over(&id, &old, &a, "again")
            .await
            .unwrap()
            .is_none()
    );
    let active = runs.active(None, 100_000).await.unwrap();
    assert!(active.contains(&(id.clone(), new.clone())));
    assert!(matches!(
        runs.finish(&id, &new, Ok("2".into())).await.unwrap(),
        Ended::Ended { .. }
    ));
    assert!(
        !runs
            .active(None, 100_000)
            .await
            .unwrap()
            .iter()
            .any(|(r, _)| *r == id)
    );
    // A takeover of an ended run finds nothing.
    assert!(
        runs.take_over(&id, &new, &a, "late")
            .await
            .unwrap()
            .is_none()
    );
}

/// Cancellation ends a run at once (whoever owns it), is broadcast as a numbered notice, and
/// wins over a later end; idempotency keys return the same run, refuse a different request,
/// and make concurrent duplicates create one run.
pub async fn runs_are_cancelled_and_submitted_idempotently<H: Harness>() {
    let h = H::new().await;
    let clock = ManualClock::new(1_000);
    let store = h.open().await;
    let runs = Runs::new(store.clone(), Arc::new(clock.clone()));
    let (a, b) = (inc(&unique("a")), inc(&unique("b")));
    let id = unique("cancel");
    let r = created(
        runs.create(&new_run(&id, "wf", "d", "1"), &a, None)
            .await
            .unwrap(),
    );
    let before = runs.cancel_seq().await.unwrap();
    let Ended::Ended { record, .. } = runs.cancel(&id, &b, "cancelled by test").await.unwrap()
    else {
        panic!("not cancelled")
    };
    assert_eq!(record.status, RunStatus::Cancelled);
    assert_eq!(
        record.error.as_ref().and_then(|t| t.as_str()),
        Some("cancelled by test")
    );
    let notices = runs.cancels_since(before).await.unwrap();
    assert!(notices.iter().any(|(_, n)| n.run_id == id));
    assert!(runs.cancel_seq().await.unwrap() > before);
    assert!(matches!(
        runs.finish(&id, r.owner.as_ref().unwrap(), Ok("1".into()))
            .await
            .unwrap(),
        Ended::AlreadyEnded(_)
    ));
    assert!(matches!(
        runs.cancel(&id, &b, "again").await.unwrap(),
        Ended::AlreadyEnded(_)
    ));

    // Idempotency: 20 concurrent submissions with one key create one run.
    let key = Idempotency {
        key: unique("key"),
        request: 42,
    };
    let mut handles = Vec::new();
    for i in 0..20 {
        let runs = Runs::new(h.second_handle(&store).await, Arc::new(clock.clone()));
        let (key, a) = (key.clone(), a.clone());
        handles.push(tokio::spawn(async move {
            runs.create(
                &new_run(&format!("{}-{i}", key.key), "wf", "d", "1"),
                &a,
                Some(&key),
            )
            .await
            .unwrap()
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut new = 0;
    for h in handles {
        match h.await.unwrap() {
            Created::New(r) => {
                new += 1;
                ids.insert(r.run_id);
            }
            Created::Existing(r) => {
                ids.insert(r.run_id);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((new, ids.len()), (1, 1), "one run for one key");
    let other = Idempotency {
        key: key.key.clone(),
        request: 43,
    };
    assert!(matches!(
        runs.create(&new_run(&unique("x"), "wf", "d", "2"), &a, Some(&other))
            .await
            .unwrap(),
        Created::Conflict { .. }
    ));
    // Past its retention the key is collected and can be used again.
    clock.advance(runs.limits().idempotency_retention.as_millis() as i64 + 1);
    assert!(runs.collect().await.unwrap().idempotency_keys >= 1);
    assert!(matches!(
        runs.create(&new_run(&unique("y"), "wf", "d", "2"), &a, Some(&other))
            .await
            .unwrap(),
        Created::New(_)
    ));
}

/// A run's journal entries (uncached calls' outcomes, stored under run-scoped keys) stay out
/// of cache listings, are kept while the run may be replayed, and are removed once the ended
/// run's journal retention has passed, with the blobs only they referred to.
pub async fn journals_are_collected_after_their_retention<H: Harness>() {
    use cairn_engine::catalog::{
        Catalog, CatalogConfig, KeyInputs, Resolution, ResolveRequest, TaskSignature, TypeDesc,
    };
    let h = H::new().await;
    let clock = ManualClock::new(1_000);
    let store = h.open().await;
    let runs = Runs::new(store.clone(), Arc::new(clock.clone()));
    let catalog = Catalog::with(store, Arc::new(clock.clone()), CatalogConfig::default());
    let me = inc("n");
    let project = unique("journal");
    let id = unique("run");
    let r = created(
        runs.create(&new_run(&id, "wf", "d", "1"), &me, None)
            .await
            .unwrap(),
    );
    let sig = TaskSignature::new("note", TypeDesc::of::<i64>()).input("n", TypeDesc::of::<i64>());
    let mut inputs = KeyInputs::new();
    inputs.add("n", &7i64).unwrap();
    let base = cairn_engine::catalog::CacheKey::new(&project, "d", &sig, "0", &inputs).unwrap();
    let blobs = catalog.blobs();
    let own = blobs
        .put(format!("{id} journal only").as_bytes())
        .await
        .unwrap();
    let shared = blobs.put(format!("{id} shared").as_bytes()).await.unwrap();
    let cached = cairn_engine::catalog::CacheKey::new(&unique("cached"), "d", &sig, "0", &{
        let mut other = KeyInputs::new();
        other.add("n", &8i64).unwrap();
        other
    })
    .unwrap();
    let Resolution::Acquired(lease) = catalog
        .resolve(&ResolveRequest {
            key: &cached,
            owner: "n",
            execution: "cached",
            lease_ttl: Duration::from_secs(30),
            max_age: None,
            overwrite: false,
            takeover: None,
            trace: None,
        })
        .await
        .unwrap()
    else {
        panic!("a fresh key is acquired");
    };
    catalog
        .commit_referencing(&cached, &lease, b"cached", None, &[shared])
        .await
        .unwrap();
    let mut keys = Vec::new();
    for occurrence in 0..3 {
        let key = base.journal(&id, occurrence);
        assert_ne!(key.digest, base.digest);
        let req = ResolveRequest {
            key: &key,
            owner: "n",
            execution: &format!("e{occurrence}"),
            lease_ttl: Duration::from_secs(30),
            max_age: None,
            overwrite: false,
            takeover: None,
            trace: None,
        };
        let Resolution::Acquired(lease) = catalog.resolve(&req).await.unwrap() else {
            panic!("a fresh journal slot is acquired");
        };
        catalog
            .commit_referencing(&key, &lease, b"outcome", None, &[own, shared])
            .await
            .unwrap();
        keys.push(key);
    }
    assert_eq!(
        keys.iter()
            .map(|k| k.digest)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        3
    );
    let listed = catalog
        .list_entries(&project, "d", None, None, 100, None)
        .await
        .unwrap();
    assert!(
        listed.entries.is_empty(),
        "journal entries are not cache entries"
    );
    runs.finish(&id, r.owner.as_ref().unwrap(), Ok("1".into()))
        .await
        .unwrap();
    assert_eq!(
        runs.collect().await.unwrap().journal_entries,
        0,
        "kept within the retention"
    );
    assert!(catalog.lookup(&keys[0], None).await.unwrap().is_some());
    clock.advance(runs.limits().journal_retention.as_millis() as i64 + 1);
    let collected = runs.collect().await.unwrap().journal_entries;
    if h.injects_unknown_commits() {
        assert!(collected <= 3, "{collected}");
    } else {
        assert_eq!(collected, 3);
    }
    for key in &keys {
        assert!(
            catalog.lookup(key, None).await.unwrap().is_none(),
            "removed"
        );
    }
    assert!(
        blobs.size(&own).await.unwrap().is_none(),
        "a blob only the journal referred to goes with it"
    );
    assert_eq!(
        blobs.references(&shared).await.unwrap(),
        1,
        "a blob a cache entry refers to stays"
    );
    assert_eq!(
        runs.collect().await.unwrap().journal_entries,
        0,
        "nothing twice"
    );
}

/// Backfills stay in the past and bounded: a range near the largest time neither wraps around
/// nor queues anything, a range ending in the future is refused (its ticks fire live), a range
/// of more than 10,000 ticks is refused; a past range still fires each tick once, and the live
/// ticks after it fire once too.
pub async fn backfills_are_bounded_and_in_the_past<H: Harness>() {
    let h = H::new().await;
    let clock = ManualClock::new(100 * SECOND);
    let s = Schedules::new(h.open().await, Arc::new(clock.clone()));
    let mut spec = every_second(&unique("backfill-bounds"));
    spec.overlap = Overlap::AllowAll;
    s.register(&spec).await.unwrap();
    let pending = || async {
        s.get(&spec.name)
            .await
            .unwrap()
            .unwrap()
            .state
            .pending_backfill
            .len()
    };
    for (from, to, why) in [
        (i64::MAX - 1_000, i64::MAX, "in the future"),
        (i64::MAX - 1, i64::MAX, "in the future"),
        (50 * SECOND, 200 * SECOND, "in the future"),
        (5 * SECOND, 4 * SECOND, "is after"),
        (-20_000 * SECOND, 90 * SECOND, "more than 10000 ticks"),
    ] {
        let err = s
            .backfill(&spec.name, from, to)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "[{from}, {to}]: {err}");
        assert_eq!(pending().await, 0, "[{from}, {to}] queued nothing");
    }
    // Near the smallest time: no wrap-around either.
    let err = s.backfill(&spec.name, i64::MIN, i64::MIN + 10).await;
    assert!(err.as_ref().map_or(true, |n| *n == 0), "{err:?}");
    // A past range fires once; the live ticks after it fire once too.
    assert_eq!(
        s.backfill(&spec.name, 95 * SECOND, 99 * SECOND)
            .await
            .unwrap(),
        5
    );
    clock.advance(2 * SECOND);
    let fired = s.poll_one(&spec.name, &inc("n")).await.unwrap();
    let mut ticks: Vec<i64> = fired.iter().map(|f| f.tick_ms).collect();
    ticks.sort();
    assert_eq!(
        ticks,
        vec![95_000, 96_000, 97_000, 98_000, 99_000, 101_000, 102_000],
        "backfilled and live, each once"
    );
    assert!(s.poll_one(&spec.name, &inc("n")).await.unwrap().is_empty());
}

/// A backfill of the most ticks allowed (10,000) drains over successive polls, each claiming
/// at most a slice (so each transaction stays well inside FoundationDB's 5 s and 10 MB), every
/// backfilled tick fires once, and the live ticks keep firing meanwhile.
pub async fn a_long_backfill_drains_in_slices_and_the_schedule_keeps_firing<H: Harness>() {
    let h = H::new().await;
    let clock = ManualClock::new(20_000 * SECOND);
    let store = h.open().await;
    let s = Schedules::new(store.clone(), Arc::new(clock.clone()));
    let runs = Runs::new(store, Arc::new(clock.clone()));
    let mut spec = every_second(&unique("long-backfill"));
    spec.overlap = Overlap::AllowAll;
    s.register(&spec).await.unwrap();
    let queued = s
        .backfill(&spec.name, 5_000 * SECOND + 1, 15_000 * SECOND)
        .await
        .unwrap();
    assert_eq!(queued, cairn_engine::schedule::MAX_BACKFILL);
    let mut backfilled: BTreeMap<i64, usize> = BTreeMap::new();
    let mut live: BTreeMap<i64, usize> = BTreeMap::new();
    let mut polls = 0;
    while backfilled.len() < queued {
        polls += 1;
        assert!(polls <= 100, "the backlog does not drain");
        clock.advance(SECOND);
        let fires = s.poll_one(&spec.name, &inc("n")).await.unwrap();
        let slice = fires.iter().filter(|f| f.backfill).count();
        assert!(
            slice <= cairn_engine::schedule::BACKFILL_SLICE,
            "{slice} backfilled ticks in one poll"
        );
        assert!(
            fires.iter().any(|f| !f.backfill),
            "poll {polls}: the live tick did not fire behind the backlog"
        );
        for f in &fires {
            if f.backfill {
                // Left running (overlap AllowAll): ending 10,000 runs is not what is tested.
                *backfilled.entry(f.tick_ms).or_default() += 1;
            } else {
                *live.entry(f.tick_ms).or_default() += 1;
                end(&runs, f, Ok(())).await;
            }
        }
    }
    assert!(
        backfilled.values().all(|&n| n == 1),
        "a backfilled tick fired twice"
    );
    assert!(live.values().all(|&n| n == 1), "a live tick fired twice");
    assert_eq!(
        *backfilled.keys().next().unwrap(),
        5_001 * SECOND,
        "from the start of the range"
    );
    let record = s.get(&spec.name).await.unwrap().unwrap();
    assert!(record.state.pending_backfill.is_empty());
    assert_eq!(
        record.state.running, 0,
        "backfilled runs do not count as running"
    );
    // And the schedule goes on.
    clock.advance(SECOND);
    assert_eq!(s.poll_one(&spec.name, &inc("n")).await.unwrap().len(), 1);
}

/// Instantiates the schedule suite for one backend.
#[macro_export]
macro_rules! schedule_conformance {
    ($harness:ty) => {
        $crate::schedule_conformance!(@tests $harness;
            three_instances_fire_each_tick_once, catch_up_after_downtime, overlap_policies,
            pause_resume_backfill, a_broken_schedule_does_not_stop_the_others,
            runs_are_recorded_listed_and_never_reused, runs_are_taken_over_and_fenced,
            runs_are_cancelled_and_submitted_idempotently,
            journals_are_collected_after_their_retention,
            backfills_are_bounded_and_in_the_past,
            a_long_backfill_drains_in_slices_and_the_schedule_keeps_firing);
    };
    (@tests $harness:ty; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::schedule_suite::$name::<$harness>().await;
            }
        )*
    };
}
