//! The schedule suite: exactly-once ticks across scheduler instances, catch-up, overlap, pause,
//! backfill, on every backend, with a manual clock. Instantiate with
//! [`schedule_conformance!`](crate::schedule_conformance).

use crate::harness::Harness;
use cairn_engine::clock::ManualClock;
use cairn_engine::runs::{MAX_RUN_JSON, RunFilter, RunRecord, RunStatus, Runs};
use cairn_engine::schedule::{CatchUp, Fire, Overlap, ScheduleSpec, Schedules, Trigger};
use std::collections::BTreeMap;
use std::sync::Arc;

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

fn unique(name: &str) -> String {
    format!("{name}-{:08x}", rand::random::<u32>())
}

async fn instances<H: Harness>(h: &H, clock: &ManualClock, n: usize) -> Vec<Schedules<H::S>> {
    let first = h.open().await;
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
    let nodes = instances(&h, &clock, 3).await;
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
                let (n, name, instance) =
                    (nodes[i].clone(), spec.name.clone(), format!("node-{i}"));
                tokio::spawn(async move { (n.poll_one(&name, &instance).await.unwrap(), instance) })
            })
            .collect();
        for poll in polls {
            let (fires, instance) = poll.await.unwrap();
            for f in fires {
                assert_eq!(f.tick_ms, tick * SECOND);
                nodes[0].finished(&f, Ok(()), &instance).await.unwrap();
                fired.entry(f.tick_ms).or_default().push(instance.clone());
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
        let fires = restarted.poll_one(&spec.name, "restarted").await.unwrap();
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
        let s = Schedules::new(h.open().await, Arc::new(clock.clone()));
        let mut spec = every_second(&unique("overlap"));
        spec.overlap = overlap;
        s.register(&spec).await.unwrap();
        let mut running: Vec<Fire> = Vec::new();
        for _ in 0..3 {
            clock.advance(SECOND);
            running.extend(s.poll_one(&spec.name, "n").await.unwrap());
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
        let buffered = s
            .finished(&running[0], Err("failed on purpose".into()), "n")
            .await
            .unwrap();
        if overlap == Overlap::BufferOne {
            let b = buffered.expect("the buffered tick fires when the run ends");
            assert_eq!(b.tick_ms, 3_000);
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
    assert_eq!(s.poll_one(&spec.name, "n").await.unwrap().len(), 1);
    s.pause(&spec.name).await.unwrap();
    clock.advance(5 * SECOND);
    assert!(
        s.poll_one(&spec.name, "n").await.unwrap().is_empty(),
        "paused"
    );
    s.resume(&spec.name).await.unwrap();
    clock.advance(SECOND);
    let fires = s.poll_one(&spec.name, "n").await.unwrap();
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
    let filled = other.poll_one(&spec.name, "other").await.unwrap();
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
    assert!(s.poll_one(&spec.name, "n").await.unwrap().is_empty());
    let err = s.pause("no-such-schedule").await.unwrap_err();
    assert!(err.to_string().contains("no-such-schedule"), "{err}");
}

/// A schedule whose record is corrupt is skipped with a logged error; the others still fire.
pub async fn a_broken_schedule_does_not_stop_the_others<H: Harness>() {
    use cairn_engine::{Store, Transaction};
    let h = H::new().await;
    let clock = ManualClock::new(0);
    let store = h.open().await;
    let s = Schedules::new(store.clone(), Arc::new(clock.clone()));
    let (good, bad) = (every_second(&unique("good")), every_second(&unique("bad")));
    s.register(&good).await.unwrap();
    s.register(&bad).await.unwrap();
    let tx = store.begin().await.unwrap();
    tx.set(
        &cairn_engine::keys::schedule(&bad.name),
        b"\xc1 not a schedule",
    );
    tx.commit().await.unwrap();
    clock.advance(SECOND);
    let err = s.poll_one(&bad.name, "n").await.unwrap_err();
    assert!(err.to_string().contains(&bad.name), "{err}");
    let fires = s.poll("n").await.unwrap_or_default();
    assert!(
        fires.iter().any(|f| f.schedule == good.name),
        "the good schedule still fired"
    );
}

fn run_record(id: &str, workflow: &str, at_ms: i64) -> RunRecord {
    RunRecord {
        run_id: id.to_string(),
        workflow: workflow.to_string(),
        project: "p".into(),
        domain: if at_ms % 2 == 0 { "even" } else { "odd" }.into(),
        overwrite_cache: false,
        input: "{\"n\":1}".into(),
        status: RunStatus::Running,
        output: None,
        output_bytes: None,
        error: None,
        node: "n".into(),
        schedule: None,
        started_at_ms: at_ms,
        finished_at_ms: None,
    }
}

/// Runs (the table above schedules and the API): start, end once, get, list newest first with
/// filters and paging; an id is never reused; oversized JSON is refused or not kept.
pub async fn runs_are_recorded_listed_and_never_reused<H: Harness>() {
    let h = H::new().await;
    let clock = ManualClock::new(5_000);
    let runs = Runs::new(h.open().await, Arc::new(clock.clone()));
    let workflow = unique("wf");
    for i in 0..25i64 {
        runs.start(&run_record(
            &format!("{workflow}-{i:02}"),
            &workflow,
            1_000 + i,
        ))
        .await
        .unwrap();
    }
    // Starting the same record again (a retried commit) is fine; another run with the id is not.
    let first = run_record(&format!("{workflow}-00"), &workflow, 1_000);
    runs.start(&first).await.unwrap();
    let clash = run_record(&format!("{workflow}-00"), "other", 1_000);
    let err = runs.start(&clash).await.unwrap_err();
    assert!(
        err.to_string().contains("another run already has this id"),
        "{err}"
    );

    // End: the first end wins.
    let done = runs
        .finish(&format!("{workflow}-03"), Ok("9".into()))
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.output.as_deref(), Some("9"));
    assert_eq!(done.finished_at_ms, Some(5_000));
    let again = runs
        .finish(&format!("{workflow}-03"), Err("late".into()))
        .await
        .unwrap();
    assert_eq!(again, done);
    let big = runs
        .finish(&format!("{workflow}-04"), Ok("1".repeat(MAX_RUN_JSON + 1)))
        .await
        .unwrap();
    assert_eq!(
        (big.output, big.output_bytes),
        (None, Some(MAX_RUN_JSON as u64 + 1))
    );
    let failed = runs
        .finish(&format!("{workflow}-05"), Err("boom".into()))
        .await
        .unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert!(runs.finish("no-such-run", Ok("1".into())).await.is_err());
    let mut huge = run_record(&unique("huge"), &workflow, 1);
    huge.input = "1".repeat(MAX_RUN_JSON + 1);
    assert!(runs.start(&huge).await.is_err());

    // Newest first, in pages of 10, filtered to this workflow.
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
        runs.get(&format!("{workflow}-03")).await.unwrap(),
        Some(done)
    );
    assert_eq!(runs.get("no-such-run").await.unwrap(), None);
}

/// Instantiates the schedule suite for one backend.
#[macro_export]
macro_rules! schedule_conformance {
    ($harness:ty) => {
        $crate::schedule_conformance!(@tests $harness;
            three_instances_fire_each_tick_once, catch_up_after_downtime, overlap_policies,
            pause_resume_backfill, a_broken_schedule_does_not_stop_the_others,
            runs_are_recorded_listed_and_never_reused);
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
