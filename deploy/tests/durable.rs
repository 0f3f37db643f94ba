//! Durable runs, through real `cairn` processes (the testbed binary: the examples plus tasks
//! that log when they start and end): a run survives kill -9 of its node, in a cluster and on
//! a single node restarted; it ends with large values; it can be cancelled; submissions are
//! idempotent; a replay that calls something else fails naming the mismatch. The PostgreSQL
//! tests need `deploy/dev/postgres-up` (or `CAIRN_TEST_POSTGRES`).

mod common;

use common::{
    NodeProcess, TESTBED, cli_json, count_lines, count_prefixed, free_port, run_detail, store_url,
    wait_until,
};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// Starts a run of `workflow` on `node` and returns its id (without waiting).
fn submit(node: &NodeProcess, workflow: &str, input: &Value) -> String {
    let started = cli_json(
        &node.url,
        &["run", workflow, "--input", &input.to_string(), "--detach"],
        0,
    );
    started["run_id"].as_str().unwrap().to_string()
}

fn waves_input(waves: i64, cached: i64, uncached: i64, delay_ms: u64, log: &Path) -> Value {
    json!({"waves": waves, "cached": cached, "uncached": uncached, "delay_ms": delay_ms,
           "log": log.display().to_string()})
}

/// [`waves_input`] with tasks that have the default 30 s lease.
fn long_waves_input(waves: i64, cached: i64, uncached: i64, delay_ms: u64, log: &Path) -> Value {
    let mut input = waves_input(waves, cached, uncached, delay_ms, log);
    input["long_lease"] = json!(true);
    input
}

fn waves_output(waves: i64, cached: i64, uncached: i64) -> i64 {
    (0..waves * cached).map(|i| i * i).sum::<i64>() + (0..waves * uncached).sum::<i64>()
}

/// Every task body of `waves` ran to its end exactly once.
fn each_body_ended_once(log: &Path, waves: i64, cached: i64, uncached: i64) {
    for n in 0..waves * cached {
        assert_eq!(
            count_lines(log, &format!("end square {n}")),
            1,
            "square {n}"
        );
    }
    for n in 0..waves * uncached {
        assert_eq!(count_lines(log, &format!("end note {n}")), 1, "note {n}");
    }
}

fn node_args<'a>(store: &'a str, name: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--store", store, "--name", name];
    args.extend_from_slice(extra);
    args
}

/// Three nodes; the node running a workflow of 1,000 cached and 100 uncached calls is killed
/// with kill -9 midway. Another node resumes the run, which succeeds with the right output;
/// every task body ran to its end once; the run shows two attempts.
#[test]
fn a_run_whose_node_is_killed_is_resumed_by_another_node_and_repeats_no_work() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("bodies.log");
    let store = store_url("durable_cluster");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let names = ["victim", "survivor-1", "survivor-2"];
    let mut nodes: Vec<NodeProcess> = (0..3)
        .map(|i| {
            let listen = format!("127.0.0.1:{}", ports[i]);
            let seed = format!("127.0.0.1:{}", ports[0]);
            let mut extra = vec![
                "--cluster-listen",
                &listen,
                "--cookie",
                "secret",
                "--node-ttl",
                "1s",
            ];
            if i > 0 {
                extra.extend(["--seeds", &seed]);
            }
            NodeProcess::start_bin(
                TESTBED,
                dir.path(),
                &node_args(&store, names[i], &extra),
                &[],
            )
        })
        .collect();
    for n in &nodes {
        wait_until("three members", Duration::from_secs(30), || {
            cli_json(&n.url, &["nodes"], 0).as_array().unwrap().len() == 3
        });
    }
    let (waves, cached, uncached) = (10, 100, 10);
    let input = waves_input(waves, cached, uncached, 200, &log);
    let run = submit(&nodes[0], "waves", &input);
    // Killed 80 ms into the sixth wave (it starts once every call of the fifth has returned,
    // so after their commits): mid-body for every call in flight.
    wait_until("the sixth wave", Duration::from_secs(60), || {
        count_lines(&log, "start square 500") == 1
    });
    std::thread::sleep(Duration::from_millis(80));
    nodes[0].kill();
    let killed = Instant::now();

    let detail = run_detail(&nodes[1].url, &run, 60_000);
    let took = killed.elapsed();
    assert_eq!(detail["status"], "succeeded", "{detail}");
    assert_eq!(detail["output"], waves_output(waves, cached, uncached));
    assert!(
        took < Duration::from_secs(3 + 5),
        "ended {took:?} after the kill: more than the lease TTL (3 s) + 5 s"
    );
    each_body_ended_once(&log, waves, cached, uncached);
    let attempts = detail["attempt_list"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{detail}");
    assert_eq!(attempts[0]["node"], "victim");
    assert_ne!(attempts[1]["node"], "victim");
    assert!(
        attempts[1]["reason"].as_str().unwrap().contains("victim"),
        "{}",
        attempts[1]
    );
    let shown = common::cli(&nodes[2].url, &["runs", &run]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("attempts  2"), "{text}");
    assert!(
        detail["counts"]["Replayed"].as_u64().unwrap_or(0) > 0,
        "journaled calls were replayed: {}",
        detail["counts"]
    );
}

/// A node on the embedded store killed mid-run and restarted resumes its run at once; an
/// identical run submitted right after the restart waits for no lease TTL.
#[test]
fn a_restarted_node_resumes_its_run_and_leaves_no_lease_to_wait_for() {
    let dir = tempfile::tempdir().unwrap();
    let store = "embedded:./data";
    let (waves, cached, uncached, delay) = (6, 20, 4, 300);
    // A cold run of the same shape (other keys: another log file) for reference.
    let mut node = NodeProcess::start_bin(TESTBED, dir.path(), &["--store", store], &[]);
    let cold_log = dir.path().join("cold.log");
    let started = Instant::now();
    let cold = submit(
        &node,
        "waves",
        &long_waves_input(waves, cached, uncached, delay, &cold_log),
    );
    assert_eq!(run_detail(&node.url, &cold, 60_000)["status"], "succeeded");
    let cold_time = started.elapsed();

    let log = dir.path().join("bodies.log");
    let input = long_waves_input(waves, cached, uncached, delay, &log);
    let run = submit(&node, "waves", &input);
    wait_until("the third wave", Duration::from_secs(60), || {
        count_lines(&log, "start square 40") == 1
    });
    std::thread::sleep(Duration::from_millis(100));
    node.kill();
    // The same directory, so the same node (its name derives from the directory).
    node = NodeProcess::start_bin(TESTBED, dir.path(), &["--store", store], &[]);
    let started = Instant::now();
    let again = submit(&node, "waves", &input);
    let second = run_detail(&node.url, &again, 60_000);
    let second_time = started.elapsed();
    let resumed = run_detail(&node.url, &run, 60_000);
    let resumed_time = started.elapsed();
    assert_eq!(resumed["status"], "succeeded", "{resumed}");
    assert!(
        resumed_time < cold_time * 2,
        "the resumed run ended {resumed_time:?} after the restart, cold time {cold_time:?}: it waited for a lease"
    );
    assert_eq!(resumed["output"], waves_output(waves, cached, uncached));
    assert_eq!(resumed["attempt_list"].as_array().unwrap().len(), 2);
    assert!(
        resumed["attempt_list"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("restarted"),
        "{resumed}"
    );
    assert_eq!(second["status"], "succeeded", "{second}");
    assert!(
        second_time < cold_time * 2,
        "the identical run took {second_time:?}, its cold time is {cold_time:?}: it waited for a lease"
    );
    // Cached bodies ran to their end once across both runs and the restart; the new run's
    // uncached calls are its own (another run's journal).
    for n in 0..waves * cached {
        assert_eq!(
            count_lines(&log, &format!("end square {n}")),
            1,
            "square {n}"
        );
    }
}

/// A run with a 60,000-character input and output ends `succeeded` (on embedded and
/// PostgreSQL), and reads back whole.
#[test]
fn a_run_with_large_input_and_output_ends() {
    let dir = tempfile::tempdir().unwrap();
    for store in ["embedded:./data".to_string(), store_url("durable_large")] {
        let node = NodeProcess::start_bin(TESTBED, dir.path(), &["--store", &store], &[]);
        let text = "é".repeat(60_000); // 120,000 bytes of UTF-8: chunks split characters
        let run = submit(&node, "echo", &json!(text));
        let detail = run_detail(&node.url, &run, 30_000);
        assert_eq!(
            detail["status"], "succeeded",
            "{store}: {}",
            detail["error"]
        );
        assert_eq!(detail["output"], json!(text), "{store}");
        assert_eq!(detail["input"], json!(text), "{store}");
    }
}

/// PostgreSQL stopped for 30 s at the moment a run ends: the run ends once it is back,
/// without restarting the node.
#[test]
fn a_run_ends_once_the_store_is_back() {
    let pg = common::PrivatePostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url();
    let node = NodeProcess::start_bin(TESTBED, dir.path(), &["--store", &url], &[]);
    let run = submit(&node, "sleepy", &json!(2_000));
    std::thread::sleep(Duration::from_millis(500));
    let probes = || common::probe(&node.url);
    assert_eq!(probes(), (true, true), "ready and alive");
    pg.down();
    std::thread::sleep(Duration::from_secs(30));
    assert_eq!(
        probes(),
        (false, true),
        "not ready without its store, still alive"
    );
    pg.up();
    let back = Instant::now();
    let detail = run_detail(&node.url, &run, 60_000);
    assert_eq!(detail["status"], "succeeded", "{detail}");
    assert_eq!(detail["output"], 2_000);
    assert!(
        back.elapsed() < Duration::from_secs(30),
        "{:?}",
        back.elapsed()
    );
}

/// Cancelling a run of 100 slow tasks: `cancelled` at once, no new task starts, and the
/// in-flight tasks' leases are released: an identical run acquires them without waiting.
#[test]
fn a_cancelled_run_stops_and_frees_its_leases() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("bodies.log");
    let node = NodeProcess::start_bin(
        TESTBED,
        dir.path(),
        &["--store", "embedded:./data", "--concurrency", "25"],
        &[],
    );
    let input = waves_input(1, 100, 0, 2_000, &log);
    let run = submit(&node, "waves", &input);
    wait_until("25 tasks running", Duration::from_secs(30), || {
        count_prefixed(&log, "start square ") >= 25
    });
    let asked = Instant::now();
    let cancelled = cli_json(&node.url, &["runs", "cancel", &run], 0);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(run_detail(&node.url, &run, 0)["status"], "cancelled");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    // Past the tasks' 2 s: the 25 running were aborted after the grace period (500 ms), and
    // none of the 75 queued started.
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(
        count_prefixed(&log, "start square "),
        25,
        "a task started after the cancel"
    );
    assert_eq!(count_prefixed(&log, "end square "), 0);
    // The same calls again: every lease is free, so none waits.
    let again = submit(&node, "waves", &input);
    let detail = run_detail(&node.url, &again, 60_000);
    assert_eq!(detail["status"], "succeeded", "{detail}");
    let calls = detail["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 100);
    for c in calls {
        assert_eq!(c["status"], "Populated", "{c}");
        assert!(c["waited_for"].is_null(), "{c}");
    }
    // Cancelling twice answers the same; an ended run cannot be cancelled.
    assert_eq!(
        cli_json(&node.url, &["runs", "cancel", &run], 0)["status"],
        "cancelled"
    );
    let (code, err) = common::cli_fails(&node.url, &["runs", "cancel", &again]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already ended"), "{err}");
}

/// Twenty concurrent POSTs with one `Idempotency-Key` create one run; the same key with a
/// different body is refused with 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submissions_with_one_idempotency_key_create_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start_bin(TESTBED, dir.path(), &["--store", "embedded:./data"], &[]);
    let url = format!("{}/v1/runs", node.url);
    let body = json!({"workflow": "sleepy", "input": 300});
    let client = reqwest::Client::new();
    let posts = (0..20).map(|_| {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        tokio::spawn(async move {
            let resp = client
                .post(&url)
                .header("Idempotency-Key", "order-42")
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        })
    });
    let answers: Vec<(u16, Value)> = futures::future::join_all(posts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ids: std::collections::BTreeSet<&str> = answers
        .iter()
        .map(|(_, v)| v["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(answers.iter().filter(|(s, _)| *s == 201).count(), 1);
    assert_eq!(answers.iter().filter(|(s, _)| *s == 200).count(), 19);
    let page = reqwest::get(format!("{}/v1/runs?workflow=sleepy", node.url))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(page["runs"].as_array().unwrap().len(), 1, "{page}");
    let conflict = client
        .post(&url)
        .header("Idempotency-Key", "order-42")
        .json(&json!({"workflow": "sleepy", "input": 301}))
        .send()
        .await
        .unwrap();
    assert_eq!(conflict.status().as_u16(), 409);
    let err: Value = conflict.json().await.unwrap();
    assert_eq!(err["error"]["code"], "idempotency_conflict", "{err}");
}

/// A workflow that calls a different task on replay fails, naming the call and both sides.
#[test]
fn a_replay_that_calls_something_else_fails_naming_the_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let (log, marker) = (dir.path().join("bodies.log"), dir.path().join("marker"));
    let mut node =
        NodeProcess::start_bin(TESTBED, dir.path(), &["--store", "embedded:./data"], &[]);
    let input = json!({"marker": marker.display().to_string(), "delay_ms": 10_000,
                       "log": log.display().to_string()});
    let run = submit(&node, "replay_probe", &input);
    wait_until("the second call running", Duration::from_secs(30), || {
        count_lines(&log, "start note 1") == 1
    });
    // The first call's record is written in the next batch, within milliseconds.
    std::thread::sleep(Duration::from_millis(300));
    node.kill();
    std::fs::write(&marker, b"now the workflow takes the other branch").unwrap();
    node = NodeProcess::start_bin(TESTBED, dir.path(), &["--store", "embedded:./data"], &[]);
    let detail = run_detail(&node.url, &run, 60_000);
    assert_eq!(detail["status"], "failed", "{detail}");
    let error = detail["error"].as_str().unwrap();
    for needle in [
        "diverged at call #0",
        "attempt 2",
        "attempt 1",
        "logged_note",
    ] {
        assert!(error.contains(needle), "{needle:?} missing from {error:?}");
    }
    assert_eq!(
        count_lines(&log, "start note 1000"),
        0,
        "the diverging call did not run"
    );
}

/// `cairn run` keeps waiting while its node is down and restarted, then reports the run.
#[test]
fn cairn_run_waits_through_a_node_restart() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let args = ["--store", "embedded:./data", "--listen", &listen];
    let mut node = NodeProcess::start_bin(TESTBED, dir.path(), &args, &[]);
    let waiting = std::process::Command::new(TESTBED)
        .args([
            "run",
            "sleepy",
            "--input",
            "3000",
            "--json",
            "--timeout",
            "120s",
        ])
        .env("CAIRN_NODE", &node.url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    node.kill();
    std::thread::sleep(Duration::from_secs(2));
    let _node = NodeProcess::start_bin(TESTBED, dir.path(), &args, &[]);
    let out = waiting.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("retrying"), "{stderr}");
    let detail: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(detail["status"], "succeeded");
    assert_eq!(detail["attempt_list"].as_array().unwrap().len(), 2);
}

/// PostgreSQL restarted (3 s down) in the middle of a run of 3,001 cached calls: no call is
/// thrown away (no PutFailure, no LookupFailure: every transaction waits the outage out), and
/// the next identical run waits for no lease.
#[test]
fn a_store_restart_mid_run_loses_no_work() {
    let pg = common::PrivatePostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url();
    let node = NodeProcess::start_bin(TESTBED, dir.path(), &["--store", &url], &[]);
    let run = submit(&node, "fan_out", &json!({"n": 3000, "delay_ms": 2}));
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        run_detail(&node.url, &run, 0)["status"],
        "running",
        "mid-run"
    );
    pg.down();
    std::thread::sleep(Duration::from_millis(3_200));
    pg.up();
    let detail = run_detail(&node.url, &run, 120_000);
    assert_eq!(detail["status"], "succeeded", "{}", detail["error"]);
    let counts = &detail["counts"];
    assert_eq!(counts["PutFailure"], Value::Null, "{counts}");
    assert_eq!(counts["LookupFailure"], Value::Null, "{counts}");
    assert_eq!(detail["calls"].as_array().unwrap().len(), 3_001);
    // The next identical run (all hits), then a warm one for reference.
    let timed = || {
        let started = Instant::now();
        let id = submit(&node, "fan_out", &json!({"n": 3000, "delay_ms": 2}));
        let d = run_detail(&node.url, &id, 120_000);
        assert_eq!(d["status"], "succeeded");
        assert_eq!(d["counts"]["Hit"], 3_001, "{}", d["counts"]);
        started.elapsed()
    };
    let (next, warm) = (timed(), timed());
    assert!(
        next < warm.mul_f64(1.5).max(warm + Duration::from_secs(1)),
        "the run after the restart took {next:?}, a warm run {warm:?}"
    );
}

/// Entries of a task with a 1 s `max_age` are removed by the node's own expiry collector:
/// the entry count drops to zero with no manual call.
#[test]
fn expired_entries_are_collected_by_the_node_itself() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start_bin(
        TESTBED,
        dir.path(),
        &["--store", "embedded:./data", "--expiry-interval", "200ms"],
        &[],
    );
    let run = submit(&node, "short_lived", &json!(10));
    assert_eq!(run_detail(&node.url, &run, 30_000)["status"], "succeeded");
    let count = || {
        cli_json(&node.url, &["cache", "ls", "--task", "short_lived"], 0)["entries"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count(), 10);
    wait_until(
        "the collector removes expired entries",
        Duration::from_secs(20),
        || count() == 0,
    );
}
