//! Load across a real cluster: starts `--nodes` `cairn up` processes on 127.0.0.1 sharing a
//! PostgreSQL store (a fresh table), then measures
//! 1. cold task throughput: one `fan_out` run of `--tasks` cached tasks (no sleep in the task)
//!    submitted to the first node, dispatched across all of them;
//! 2. hit latency from a remote node: the same run submitted to another node (every call a hit
//!    on an entry that node never computed), per-call latency from its execution records;
//! 3. a single-call run through the API of the remote node, end to end (HTTP, run record,
//!    records flushed), sequentially.
//!
//! With `--tls`, every cluster link is mutual TLS 1.3 (certificates made here with rcgen).
//!
//! `cargo build --release -p cairn && cargo run --release -p cairn-benches --bin cluster-load --
//!  --cairn target/release/cairn --store postgres://cairn:cairn@127.0.0.1:5432/cairn_test [--tls]`

use cairn::api::types::{CacheStatus, RunStatus, SubmitRunRequest};
use cairn::client::Client;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes a CA and a node certificate for 127.0.0.1 into `dir`; returns the cluster TLS flags.
fn make_certs(dir: &std::path::Path) -> Vec<String> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut node = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    node.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = node.signed_by(&key, &ca).unwrap();
    let path = |f: &str| dir.join(f).display().to_string();
    std::fs::write(path("ca.crt"), ca.pem()).unwrap();
    std::fs::write(path("node.crt"), cert.pem()).unwrap();
    std::fs::write(path("node.key"), key.serialize_pem()).unwrap();
    vec![
        "--cluster-tls-cert".into(),
        path("node.crt"),
        "--cluster-tls-key".into(),
        path("node.key"),
        "--cluster-tls-ca".into(),
        path("ca.crt"),
    ]
}

fn start(
    cairn: &str,
    store: &str,
    name: &str,
    port: u16,
    seed: Option<u16>,
    extra: &[String],
) -> (Proc, String) {
    let cluster = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(cairn);
    cmd.args([
        "up",
        "--listen",
        "127.0.0.1:0",
        "--store",
        store,
        "--name",
        name,
    ])
    .args([
        "--cluster-listen",
        &cluster,
        "--cookie",
        "bench",
        "--concurrency",
        "64",
        "--examples",
    ])
    .args(extra)
    .stdout(Stdio::piped());
    if let Some(seed) = seed {
        cmd.args(["--seeds", &format!("127.0.0.1:{seed}")]);
    }
    let mut child = cmd.spawn().expect("start cairn up");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("cairn up exited").unwrap();
        if let Some((_, rest)) = line.split_once(" listening on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), url)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run(
    client: &Client,
    input: serde_json::Value,
    workflow: &str,
) -> cairn::api::types::RunDetail {
    let started = client
        .submit(&SubmitRunRequest {
            workflow: workflow.into(),
            input,
            project: "bench".into(),
            domain: "cluster".into(),
            overwrite_cache: false,
        })
        .await
        .expect("submit");
    loop {
        let d = client
            .run(&started.run_id, Duration::from_secs(30))
            .await
            .expect("run");
        if d.run.status != RunStatus::Running {
            assert_eq!(d.run.status, RunStatus::Succeeded, "{:?}", d.error);
            return d;
        }
    }
}

#[tokio::main]
async fn main() {
    let cairn = arg("--cairn", "target/release/cairn");
    let base = arg(
        "--store",
        "postgres://cairn:cairn@127.0.0.1:5432/cairn_test",
    );
    let nodes: usize = arg("--nodes", "3").parse().unwrap();
    let tasks: i64 = arg("--tasks", "5000").parse().unwrap();
    let store = format!("{base}?table=bench_{:08x}", rand::random::<u32>());
    let ports: Vec<u16> = (0..nodes).map(|_| free_port()).collect();
    let certs = tempfile::tempdir().unwrap();
    let tls = std::env::args().any(|a| a == "--tls");
    let extra = if tls {
        make_certs(certs.path())
    } else {
        Vec::new()
    };
    println!(
        "cluster links: {}",
        if tls { "mutual TLS 1.3" } else { "plain TCP" }
    );
    let procs: Vec<(Proc, String)> = (0..nodes)
        .map(|i| {
            start(
                &cairn,
                &store,
                &format!("bench-{i}"),
                ports[i],
                (i > 0).then_some(ports[0]),
                &extra,
            )
        })
        .collect();
    let clients: Vec<Client> = procs
        .iter()
        .map(|(_, url)| Client::new(url, None))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while clients[0].nodes().await.map(|n| n.len()).unwrap_or(0) < nodes {
        assert!(Instant::now() < deadline, "cluster did not form");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let t = Instant::now();
    let cold = run(
        &clients[0],
        serde_json::json!({"n": tasks, "delay_ms": 0}),
        "fan_out",
    )
    .await;
    let cold_s = t.elapsed().as_secs_f64();
    let mut executed = Vec::new();
    for c in &clients {
        let me = c
            .nodes()
            .await
            .unwrap()
            .into_iter()
            .find(|n| n.local)
            .unwrap();
        executed.push(me.executed);
    }
    println!(
        "cold: {} cached tasks in {cold_s:.2} s = {:.0} tasks/s across {nodes} nodes (executed per node: {executed:?}; counts {:?})",
        tasks + 1,
        (tasks + 1) as f64 / cold_s,
        cold.counts
    );

    let remote = &clients[nodes - 1];
    let t = Instant::now();
    let hits = run(
        remote,
        serde_json::json!({"n": tasks, "delay_ms": 0}),
        "fan_out",
    )
    .await;
    let hit_s = t.elapsed().as_secs_f64();
    let mut lat: Vec<u64> = hits
        .calls
        .iter()
        .filter(|c| c.status == CacheStatus::Hit)
        .map(|c| c.duration_us)
        .collect();
    lat.sort_unstable();
    println!(
        "hits from a remote node: {} calls in {hit_s:.2} s = {:.0} calls/s; per-call latency p50 {} µs, p99 {} µs (all {} concurrent)",
        lat.len(),
        lat.len() as f64 / hit_s,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.len()
    );

    let mut single = Vec::new();
    run(&clients[0], serde_json::json!(7), "integer_sqrt").await;
    for _ in 0..200 {
        let t = Instant::now();
        let d = run(remote, serde_json::json!(7), "integer_sqrt").await;
        assert_eq!(d.counts.get(&CacheStatus::Hit), Some(&1));
        single.push(t.elapsed().as_micros() as u64);
    }
    single.sort_unstable();
    println!(
        "one-call run through the remote node's API, sequential: p50 {} µs, p99 {} µs",
        percentile(&single, 0.5),
        percentile(&single, 0.99)
    );
}
