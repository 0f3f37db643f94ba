//! Scheduled workflows on a node: kickoff times are delivered, a failing workflow keeps its
//! schedule firing, and cached tasks called with repeating inputs hit on later ticks.

use cairn::{CacheStatus, Ctx, Node, ScheduleSpec, ScheduledInput, Trigger};
use cairn_tests::runtime::SharedStore;
use std::time::Duration;
use tokio::sync::mpsc;

#[cairn::task(cache = true, cache_version = "1.0")]
async fn cube(n: i64) -> i64 {
    n * n * n
}

#[derive(Debug)]
struct Seen {
    kickoff_ms: i64,
    statuses: Vec<CacheStatus>,
    failed: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_workflows_fire_with_their_kickoff_and_hit_the_cache() {
    let shared = SharedStore::new().await;
    let (tx, mut rx) = mpsc::unbounded_channel::<Seen>();
    let period = 200u64;
    let mut spec = ScheduleSpec::new(
        "cubes",
        "cubes",
        Trigger::Every {
            period_ms: period,
            anchor_ms: 0,
        },
    );
    spec.project = "reports".into();
    let node: Node = shared
        .node("scheduler-node")
        .task(cube)
        .workflow("cubes", move |ctx: Ctx, input: ScheduledInput| {
            let tx = tx.clone();
            async move {
                // The same inputs every tick: after the first, all hits.
                let mut statuses = Vec::new();
                for n in 1..=3 {
                    ctx.call(cube, n).await.map_err(|e| e.to_string())?;
                }
                statuses.extend(ctx.calls().iter().map(|c| c.status));
                // Every other tick fails after its calls: the schedule must keep firing.
                let failed = (input.kickoff_ms / period as i64) % 2 == 0;
                let _ = tx.send(Seen {
                    kickoff_ms: input.kickoff_ms,
                    statuses,
                    failed,
                });
                if failed {
                    Err("this tick fails on purpose".to_string())
                } else {
                    Ok(())
                }
            }
        })
        .schedule(spec)
        .schedule_poll(Duration::from_millis(50))
        .start()
        .await
        .unwrap();

    let mut seen = Vec::new();
    while seen.len() < 5 {
        let s = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a tick fired")
            .unwrap();
        seen.push(s);
    }
    for s in &seen {
        assert_eq!(
            s.kickoff_ms % period as i64,
            0,
            "the kickoff is the tick time, not the start time"
        );
    }
    let kickoffs: Vec<i64> = seen.iter().map(|s| s.kickoff_ms).collect();
    assert!(
        kickoffs.windows(2).all(|w| w[1] > w[0]),
        "ticks in order: {kickoffs:?}"
    );
    assert!(
        seen.iter().any(|s| s.failed)
            && seen.iter().filter(|s| s.kickoff_ms > kickoffs[0]).count() >= 4
    );
    assert!(seen[0].statuses.contains(&CacheStatus::Populated));
    for s in &seen[1..] {
        assert_eq!(
            s.statuses,
            vec![CacheStatus::Hit; 3],
            "later ticks hit the cache"
        );
    }
    let record = node.schedules().get("cubes").await.unwrap().unwrap();
    assert!(record.state.fired >= 5);
    assert!(
        record.state.failed >= 1,
        "failures are counted and firing goes on"
    );
}
