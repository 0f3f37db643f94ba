//! Three real `cairn` processes on 127.0.0.1 sharing one PostgreSQL store, joined with
//! ractor_cluster: cluster-wide single execution, node loss (kill -9), and the cookie.
//! Needs the PostgreSQL of `deploy/dev/postgres-up` (or `CAIRN_TEST_POSTGRES`).

mod common;

use common::{NodeProcess, cli_json, free_port, store_url};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

struct Spec<'a> {
    name: &'a str,
    cluster: u16,
    seed: Option<u16>,
    cookie: &'a str,
    roles: &'a str,
    concurrency: usize,
}

fn start(dir: &std::path::Path, store: &str, s: Spec<'_>) -> NodeProcess {
    let cluster = format!("127.0.0.1:{}", s.cluster);
    let seeds = s.seed.map(|p| format!("127.0.0.1:{p}")).unwrap_or_default();
    let concurrency = s.concurrency.to_string();
    let mut args = vec![
        "--store",
        store,
        "--name",
        s.name,
        "--cluster-listen",
        &cluster,
        "--cookie",
        s.cookie,
        "--roles",
        s.roles,
        "--concurrency",
        &concurrency,
    ];
    if !seeds.is_empty() {
        args.extend(["--seeds", &seeds]);
    }
    NodeProcess::start(dir, &args)
}

/// Waits (bounded) until `node` lists exactly `names` as members. Membership is only visible
/// from outside through the API, so this polls it.
fn wait_for_members(node: &NodeProcess, names: &[&str]) -> Vec<Value> {
    let want: BTreeSet<&str> = names.iter().copied().collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let nodes = cli_json(&node.url, &["nodes"], 0);
        let list: Vec<Value> = nodes
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["joined"] == true)
            .cloned()
            .collect();
        let have: BTreeSet<&str> = list.iter().map(|n| n["name"].as_str().unwrap()).collect();
        if have == want {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "{} sees {have:?}, not {want:?}",
            node.name
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Three nodes with both roles on one fresh store, the first the others' seed, once each sees
/// all three.
fn start_cluster(
    dir: &std::path::Path,
    names: &[&str; 3],
    concurrency: [usize; 3],
) -> Vec<NodeProcess> {
    let store = store_url("cluster");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let nodes: Vec<NodeProcess> = (0..3)
        .map(|i| {
            start(
                dir,
                &store,
                Spec {
                    name: names[i],
                    cluster: ports[i],
                    seed: (i > 0).then_some(ports[0]),
                    cookie: "shared-secret",
                    roles: "scheduler,worker",
                    concurrency: concurrency[i],
                },
            )
        })
        .collect();
    for n in &nodes {
        wait_for_members(n, names);
    }
    nodes
}

fn local(node: &NodeProcess) -> Value {
    let nodes = cli_json(&node.url, &["nodes"], 0);
    nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["local"] == true)
        .unwrap()
        .clone()
}

fn sum_of_squares(n: i64) -> i64 {
    (0..n).map(|i| i * i).sum()
}

fn run_waiting(node: &NodeProcess, input: &str) -> std::process::Child {
    std::process::Command::new(common::CAIRN)
        .args(["run", "fan_out", "--input", input, "--json"])
        .env("CAIRN_NODE", &node.url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: std::process::Child) -> Value {
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn entries_of(node: &NodeProcess, task: &str) -> Vec<Value> {
    let page = cli_json(
        &node.url,
        &["cache", "ls", "--task", task, "--limit", "1000"],
        0,
    );
    assert!(page["next"].is_null(), "more than 1000 entries");
    page["entries"].as_array().unwrap().clone()
}

#[test]
fn three_nodes_run_each_task_once_and_a_second_run_is_all_hits() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["node-a", "node-b", "node-c"];
    let nodes = start_cluster(dir.path(), &names, [16, 16, 16]);

    // The same fan-out of 1,000 cached tasks submitted to all three nodes at once.
    let input = r#"{"n": 1000, "delay_ms": 2}"#;
    let children: Vec<_> = nodes.iter().map(|n| run_waiting(n, input)).collect();
    let runs: Vec<Value> = children.into_iter().map(finish).collect();
    let mut populated: BTreeMap<String, usize> = BTreeMap::new();
    for run in &runs {
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["output"], sum_of_squares(1000));
        assert_eq!(run["calls"].as_array().unwrap().len(), 1001);
        for call in run["calls"].as_array().unwrap() {
            if call["status"] == "Populated" {
                *populated
                    .entry(call["key"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
    }
    // Every key computed exactly once across the cluster.
    assert_eq!(populated.len(), 1001, "1,000 squares and one total");
    assert!(
        populated.values().all(|&n| n == 1),
        "a key was computed twice"
    );
    assert_eq!(entries_of(&nodes[0], "slow_square").len(), 1000);
    // The work was spread over the nodes, and the executions add up.
    let executed: Vec<u64> = nodes
        .iter()
        .map(|n| local(n)["executed"].as_u64().unwrap())
        .collect();
    assert_eq!(executed.iter().sum::<u64>(), 1001, "{executed:?}");
    assert!(
        executed.iter().filter(|&&e| e > 0).count() >= 2,
        "all on one node: {executed:?}"
    );

    // A second run, on any node: all hits.
    let again = finish(run_waiting(&nodes[2], input));
    assert_eq!(again["counts"]["Hit"], 1001, "{}", again["counts"]);
}

/// Which node's run starts first.
#[derive(PartialEq)]
enum Killed {
    /// Only the keeper runs the workflow; the victim's workers run jobs the keeper dispatched.
    WorkerOfAnotherNodesRun,
    /// The victim runs the workflow first and holds the leases; the keeper's identical run
    /// waits behind them.
    LeaseHolder,
}

fn kill_9_mid_run(scenario: Killed) {
    let dir = tempfile::tempdir().unwrap();
    let names = ["keeper", "victim", "helper"];
    // The keeper has few workers, so most jobs run on the other two.
    let mut nodes = start_cluster(dir.path(), &names, [2, 32, 32]);
    let n = 200;
    let input = format!(r#"{{"n": {n}, "delay_ms": 300}}"#);
    let victim_run = (scenario == Killed::LeaseHolder).then(|| run_waiting(&nodes[1], &input));
    let keeper_run = if scenario == Killed::WorkerOfAnotherNodesRun {
        Some(run_waiting(&nodes[0], &input))
    } else {
        None
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while local(&nodes[1])["busy"].as_u64().unwrap() < 8 {
        assert!(Instant::now() < deadline, "the victim never got busy");
        std::thread::sleep(Duration::from_millis(20));
    }
    let keeper_run = keeper_run.unwrap_or_else(|| run_waiting(&nodes[0], &input));
    nodes[1].kill();
    // The victim's own `cairn run` would wait for its node to come back: stop it.
    if let Some(mut child) = victim_run {
        let _ = child.kill();
        let _ = child.wait();
    }

    // The keeper's run completes with every result, and each key has one entry.
    let run = finish(keeper_run);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"], sum_of_squares(n), "no result lost");
    let entries = entries_of(&nodes[0], "slow_square");
    let keys: BTreeSet<&str> = entries.iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(
        entries.len(),
        n as usize,
        "one entry per key: no duplicate, none missing"
    );
    assert_eq!(keys.len(), n as usize);
    if scenario == Killed::LeaseHolder {
        // Keys the victim was computing were taken over after their 3 s TTL and computed by
        // the keeper's side; keys others finished for the victim were waited for.
        let populated = run["counts"]["Populated"].as_u64().unwrap_or(0);
        assert!(populated > 0, "nothing was taken over: {}", run["counts"]);
    }
    // The survivors still see each other, without the victim.
    wait_for_members(&nodes[0], &["keeper", "helper"]);
}

/// Jobs running on a node that is killed are dispatched again to the surviving workers.
#[test]
fn kill_9_of_a_worker_node_mid_run_loses_nothing_and_duplicates_nothing() {
    kill_9_mid_run(Killed::WorkerOfAnotherNodesRun);
}

/// Leases held by a killed node are taken over by the waiting node after their TTL.
#[test]
fn kill_9_of_a_lease_holding_node_lets_waiters_take_over() {
    kill_9_mid_run(Killed::LeaseHolder);
}

#[test]
fn a_node_with_the_wrong_cookie_can_neither_join_nor_dispatch() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_url("cluster");
    let (good_port, bad_port) = (free_port(), free_port());
    let good = start(
        dir.path(),
        &store,
        Spec {
            name: "member",
            cluster: good_port,
            seed: None,
            cookie: "right-cookie",
            roles: "scheduler,worker",
            concurrency: 8,
        },
    );
    let intruder = start(
        dir.path(),
        &store,
        Spec {
            name: "intruder",
            cluster: bad_port,
            seed: Some(good_port),
            cookie: "wrong-cookie",
            roles: "scheduler",
            concurrency: 8,
        },
    );
    // Give the intruder several redial rounds (from 500 ms apart, backing off) to try.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(wait_for_members(&good, &["member"]).len(), 1);
    assert_eq!(wait_for_members(&intruder, &["intruder"]).len(), 1);
    // The intruder shows its seed as not joined, and why.
    let listed = cli_json(&intruder.url, &["nodes"], 0);
    let seed = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["joined"] == false)
        .unwrap_or_else(|| panic!("no unjoined seed in {listed}"));
    assert_eq!(seed["name"], format!("127.0.0.1:{good_port}"));
    assert!(
        seed["problem"]
            .as_str()
            .unwrap()
            .contains("refused the handshake"),
        "{seed}"
    );

    // A run on the intruder finds no worker: its calls fail, naming why.
    let out = std::process::Command::new(common::CAIRN)
        .args(["run", "sum_of_squares", "--input", "3", "--json"])
        .env("CAIRN_NODE", &intruder.url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("no worker node in the cluster"),
        "{run}"
    );
    assert_eq!(
        local(&good)["executed"],
        0,
        "the member ran nothing for the intruder"
    );
}
