//! TLS through real `cairn` processes on 127.0.0.1: mutual TLS between cluster nodes (a full
//! cluster workload, a foreign CA refused, a plain node refused), the non-loopback rule, and
//! HTTPS on the API (the CLI trusts `--ca`, refuses an untrusted certificate, and follows a
//! certificate rotated on disk). Certificates are made here with rcgen.
//! The cluster workload needs the PostgreSQL of `deploy/dev/postgres-up`.

mod common;

use common::certs::{Ca, Issued};
use common::{CAIRN, NodeProcess, cli_json, free_port, store_url, wait_until};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

/// A cluster node's arguments: its store, name, cluster port, seed, and TLS files (a node
/// certificate and the CA it trusts) or none.
fn cluster_args(
    store: &str,
    name: &str,
    port: u16,
    seed: Option<u16>,
    tls: Option<(&Issued, &Path)>,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "--store",
        store,
        "--name",
        name,
        "--cluster-listen",
        &format!("127.0.0.1:{port}"),
        "--cookie",
        "shared-secret",
        "--concurrency",
        "16",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(seed) = seed {
        args.extend(["--seeds".into(), format!("127.0.0.1:{seed}")]);
    }
    if let Some((issued, ca)) = tls {
        args.extend([
            "--cluster-tls-cert".into(),
            issued.cert.display().to_string(),
            "--cluster-tls-key".into(),
            issued.key.display().to_string(),
            "--cluster-tls-ca".into(),
            ca.display().to_string(),
        ]);
    }
    args
}

fn start(dir: &Path, args: &[String], log: &Path) -> NodeProcess {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    NodeProcess::start_logged(dir, &args, log)
}

/// The names of the members `node` sees as joined.
fn members(node: &NodeProcess) -> BTreeSet<String> {
    cli_json(&node.url, &["nodes"], 0)
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["joined"] == true)
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect()
}

fn wait_for_members(node: &NodeProcess, names: &[&str]) {
    let want: BTreeSet<String> = names.iter().map(|s| s.to_string()).collect();
    wait_until(
        &format!("{} to see {want:?}", node.name),
        Duration::from_secs(30),
        || members(node) == want,
    );
}

/// The seed `node` has not joined, as it lists it.
fn unjoined_seed(node: &NodeProcess) -> Value {
    let listed = cli_json(&node.url, &["nodes"], 0);
    listed
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["joined"] == false)
        .unwrap_or_else(|| panic!("no unjoined seed in {listed}"))
        .clone()
}

/// Waits until `outsider` records that its seed `member` refused it, lets it redial for
/// `settle`, then checks that each still sees only itself.
fn refused_and_alone(member: &NodeProcess, outsider: &NodeProcess, settle: Duration) {
    wait_until(
        &format!("{} to record its refusal", outsider.name),
        Duration::from_secs(30),
        || {
            unjoined_seed(outsider)["problem"]
                .as_str()
                .is_some_and(|p| p.contains("refused the handshake"))
        },
    );
    std::thread::sleep(settle);
    assert_eq!(members(member), BTreeSet::from([member.name.clone()]));
    assert_eq!(members(outsider), BTreeSet::from([outsider.name.clone()]));
}

/// How many lines of the log at `path` contain `text`.
fn count_containing(path: &Path, text: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(text))
        .count()
}

#[test]
fn three_nodes_with_mutual_tls_run_each_task_once() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cairn cluster CA");
    let ca_file = ca.write(&dir.path().join("ca.crt"));
    let store = store_url("tls");
    let names = ["tls-a", "tls-b", "tls-c"];
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let nodes: Vec<NodeProcess> = (0..3)
        .map(|i| {
            let issued = ca.issue(dir.path(), names[i]);
            let args = cluster_args(
                &store,
                names[i],
                ports[i],
                (i > 0).then_some(ports[0]),
                Some((&issued, &ca_file)),
            );
            start(
                dir.path(),
                &args,
                &dir.path().join(format!("{}.log", names[i])),
            )
        })
        .collect();
    // tls-b and tls-c only know tls-a: they find each other through its report, over TLS.
    for n in &nodes {
        wait_for_members(n, &names);
    }

    // The same fan-out of 300 cached tasks submitted to all three nodes at once.
    let input = r#"{"n": 300, "delay_ms": 2}"#;
    let children: Vec<_> = nodes
        .iter()
        .map(|n| {
            std::process::Command::new(CAIRN)
                .args(["run", "fan_out", "--input", input, "--json"])
                .env("CAIRN_NODE", &n.url)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut populated: BTreeMap<String, usize> = BTreeMap::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        let run: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["output"], (0..300i64).map(|i| i * i).sum::<i64>());
        for call in run["calls"].as_array().unwrap() {
            if call["status"] == "Populated" {
                *populated
                    .entry(call["key"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
    }
    assert_eq!(populated.len(), 301, "300 squares and one total");
    assert!(populated.values().all(|&n| n == 1), "a key ran twice");
    let executed: Vec<u64> = nodes
        .iter()
        .map(|n| {
            cli_json(&n.url, &["nodes"], 0)
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["local"] == true)
                .unwrap()["executed"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(executed.iter().sum::<u64>(), 301, "{executed:?}");
    assert!(
        executed.iter().filter(|&&e| e > 0).count() >= 2,
        "jobs crossed no TLS link: {executed:?}"
    );
}

#[test]
fn a_node_with_a_certificate_from_another_ca_is_refused_and_the_refusal_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cairn cluster CA");
    let ca_file = ca.write(&dir.path().join("ca.crt"));
    let rogue = Ca::new("another CA");
    let (member_port, intruder_port) = (free_port(), free_port());
    let member_log = dir.path().join("member.log");
    let member_store = format!("embedded:{}", dir.path().join("member").display());
    let member = start(
        dir.path(),
        &cluster_args(
            &member_store,
            "member",
            member_port,
            None,
            Some((&ca.issue(dir.path(), "member"), &ca_file)),
        ),
        &member_log,
    );
    // The intruder has the cookie and trusts the cluster's CA, but its own certificate is
    // signed by another CA.
    let intruder_log = dir.path().join("intruder.log");
    let intruder_store = format!("embedded:{}", dir.path().join("intruder").display());
    let intruder = start(
        dir.path(),
        &cluster_args(
            &intruder_store,
            "intruder",
            intruder_port,
            Some(member_port),
            Some((&rogue.issue(dir.path(), "intruder"), &ca_file)),
        ),
        &intruder_log,
    );
    // Several redials (from 0.5 s apart, backing off) happen in this time.
    refused_and_alone(&member, &intruder, Duration::from_secs(3));
    // The member logged the refusal once, with the reason, however many times it redialled.
    let refusals = count_containing(&member_log, "refused a cluster peer");
    assert_eq!(
        refusals,
        1,
        "{}",
        std::fs::read_to_string(&member_log).unwrap()
    );
    assert_eq!(
        count_containing(&member_log, "UnknownIssuer"),
        1,
        "the reason is named: {}",
        std::fs::read_to_string(&member_log).unwrap()
    );
    // The intruder says once why it cannot join.
    assert_eq!(
        count_containing(&intruder_log, "could not join seed"),
        1,
        "{}",
        std::fs::read_to_string(&intruder_log).unwrap()
    );
}

#[test]
fn a_plain_tcp_node_cannot_join_a_tls_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cairn cluster CA");
    let ca_file = ca.write(&dir.path().join("ca.crt"));
    let (member_port, plain_port) = (free_port(), free_port());
    let member_store = format!("embedded:{}", dir.path().join("member").display());
    let member = start(
        dir.path(),
        &cluster_args(
            &member_store,
            "member",
            member_port,
            None,
            Some((&ca.issue(dir.path(), "member"), &ca_file)),
        ),
        &dir.path().join("member.log"),
    );
    let plain_store = format!("embedded:{}", dir.path().join("plain").display());
    let plain = start(
        dir.path(),
        &cluster_args(&plain_store, "plain", plain_port, Some(member_port), None),
        &dir.path().join("plain.log"),
    );
    refused_and_alone(&member, &plain, Duration::from_secs(2));
}

#[test]
fn a_non_loopback_cluster_address_without_tls_is_refused_naming_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(CAIRN)
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--store",
            &format!("embedded:{}", dir.path().join("data").display()),
            "--cluster-listen",
            &format!("0.0.0.0:{}", free_port()),
            "--cookie",
            "shared-secret",
        ])
        .env_remove("CAIRN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for flag in [
        "--cluster-tls-cert",
        "--cluster-tls-key",
        "--cluster-tls-ca",
        "--cluster-insecure",
    ] {
        assert!(stderr.contains(flag), "{flag} not named: {stderr}");
    }
    // Only some of the TLS files: refused, naming the missing ones.
    let ca = Ca::new("cairn cluster CA");
    let issued = ca.issue(dir.path(), "node");
    let out = std::process::Command::new(CAIRN)
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--store",
            &format!("embedded:{}", dir.path().join("data").display()),
            "--cluster-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--cookie",
            "shared-secret",
            "--cluster-tls-cert",
            &issued.cert.display().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--cluster-tls-key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `cairn nodes` against `url`, trusting `ca` if given: (exit code, stdout, stderr).
fn nodes_over(url: &str, ca: Option<&Path>) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(CAIRN);
    cmd.args(["nodes", "--json"])
        .env("CAIRN_NODE", url)
        .env_remove("CAIRN_TOKEN")
        .env_remove("CAIRN_CA");
    if let Some(ca) = ca {
        cmd.args(["--ca", &ca.display().to_string()]);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_talks_https_and_refuses_an_untrusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cairn API CA");
    let ca_file = ca.write(&dir.path().join("ca.crt"));
    let other_file = Ca::new("another CA").write(&dir.path().join("other.crt"));
    let issued = ca.issue(dir.path(), "api");
    let store = format!("embedded:{}", dir.path().join("data").display());
    let node = NodeProcess::start(
        dir.path(),
        &[
            "--store",
            &store,
            "--tls-cert",
            &issued.cert.display().to_string(),
            "--tls-key",
            &issued.key.display().to_string(),
        ],
    );
    assert!(node.url.starts_with("https://"), "{}", node.url);

    let (code, stdout, stderr) = nodes_over(&node.url, Some(&ca_file));
    assert_eq!(code, 0, "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    // A run works over HTTPS end to end.
    let out = std::process::Command::new(CAIRN)
        .args(["run", "sum_of_squares", "--input", "4", "--json", "--ca"])
        .arg(&ca_file)
        .env("CAIRN_NODE", &node.url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["output"], 14);

    // The dashboard's session cookie is Secure over HTTPS (and still HttpOnly, SameSite=Strict).
    let page = std::process::Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "--cacert"])
        .arg(&ca_file)
        .arg(format!("{}/runs", node.url))
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&page.stdout).to_lowercase();
    let cookie = headers
        .lines()
        .find(|l| l.starts_with("set-cookie: cairn_session="))
        .unwrap_or_else(|| panic!("no session cookie: {headers}"));
    for part in ["; secure", "; httponly", "; samesite=strict"] {
        assert!(cookie.contains(part), "{cookie}");
    }

    // Without the CA (the system's trust store), and with another CA: refused, saying why.
    for ca in [None, Some(other_file.as_path())] {
        let (code, _, stderr) = nodes_over(&node.url, ca);
        assert_eq!(code, 5, "{stderr}");
        assert!(stderr.contains("not trusted"), "{stderr}");
        assert!(stderr.contains("--ca"), "{stderr}");
    }
    // Plain HTTP to an HTTPS port gets no answer.
    let plain = node.url.replace("https://", "http://");
    let (code, _, _) = nodes_over(&plain, None);
    assert_eq!(code, 5);
}

#[test]
fn a_certificate_rotated_on_disk_is_picked_up_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Ca::new("old CA");
    let old_file = old_ca.write(&dir.path().join("old-ca.crt"));
    let new_ca = Ca::new("new CA");
    let new_file = new_ca.write(&dir.path().join("new-ca.crt"));
    let live = old_ca.issue(dir.path(), "api");
    let store = format!("embedded:{}", dir.path().join("data").display());
    let log = dir.path().join("node.log");
    let node = NodeProcess::start_logged_with_env(
        dir.path(),
        &[
            "--store",
            &store,
            "--tls-cert",
            &live.cert.display().to_string(),
            "--tls-key",
            &live.key.display().to_string(),
        ],
        &[("RUST_LOG", "warn,cairn::tls=info")],
        &log,
    );
    assert_eq!(nodes_over(&node.url, Some(&old_file)).0, 0);
    let pid = node.pid();

    // Rotate: a certificate from the new CA, written over the live files (each replaced
    // atomically, key first, as a secret-mounting tool would).
    let fresh_dir = dir.path().join("fresh");
    std::fs::create_dir(&fresh_dir).unwrap();
    let fresh = new_ca.issue(&fresh_dir, "api");
    std::fs::rename(&fresh.key, &live.key).unwrap();
    std::fs::rename(&fresh.cert, &live.cert).unwrap();
    wait_until(
        "the node to serve the rotated certificate",
        Duration::from_secs(15),
        || nodes_over(&node.url, Some(&new_file)).0 == 0,
    );
    assert_eq!(
        nodes_over(&node.url, Some(&old_file)).0,
        5,
        "the old certificate is no longer served"
    );
    assert_eq!(node.pid(), pid, "the same process");
    assert_eq!(
        count_containing(
            &log,
            "reloaded the api TLS certificates after a file changed"
        ),
        1,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );

    // SIGHUP reloads too (here the same files), and does not stop the node.
    let pid = nix::unistd::Pid::from_raw(node.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_until("the SIGHUP reload", Duration::from_secs(15), || {
        count_containing(&log, "reloaded the api TLS certificates on SIGHUP") == 1
    });
    assert_eq!(nodes_over(&node.url, Some(&new_file)).0, 0);

    // Files that do not load (a truncated key) keep the current certificate in use.
    // (The rotation above may have logged one already: a key renamed before its certificate.)
    let failed = |log: &Path| count_containing(log, "could not reload the api TLS certificates");
    let before = failed(&log);
    std::fs::write(&live.key, "-----BEGIN PRIVATE KEY-----\ntruncated").unwrap();
    wait_until(
        "the failed reload to be logged",
        Duration::from_secs(15),
        || failed(&log) == before + 1,
    );
    assert_eq!(nodes_over(&node.url, Some(&new_file)).0, 0);
}
