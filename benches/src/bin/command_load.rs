//! Command tasks: how fast input trees are hashed, and what a command task costs per call
//! inside a run, next to a Rust task.
//!
//! ```sh
//! cargo run --release -p cairn-benches --bin command_load            # 1 GiB tree, 500 calls
//! cargo run --release -p cairn-benches --bin command_load -- 256 200 # 256 MiB, 200 calls
//! ```
//!
//! 1. **Hashing.** A tree of 2 MiB files (1 GiB by default) is written, then hashed with
//!    `FileHasher::hash_all` (BLAKE3, large files memory-mapped and hashed on every core):
//!    *cold* is a new hasher (every byte read; the files are in the page cache, as just
//!    written), *memoised* is the same hasher again (files older than 2 s are not read).
//! 2. **Per-call overhead.** In one process, a node on a fresh embedded store with the example
//!    tasks and a tasks file. One run of `fan_out` (`n` cold Rust calls of `slow_square` with
//!    no delay), then one run of a tasks-file workflow whose step copies each of `n` one-line
//!    files with `cp` (`n` cold command calls: hash, upload, sandbox, spawn, store the output),
//!    then the same two runs again (all hits). Wall time of each run, per call.

use std::time::{Duration, Instant, SystemTime};

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1024);
    let calls: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(hashing(mib));
    rt.block_on(overhead(calls));
}

async fn hashing(mib: usize) {
    let dir = tempfile::tempdir().unwrap();
    let files = mib / 2;
    let chunk: Vec<u8> = (0..2 << 20).map(|i: usize| (i * 131 % 251) as u8).collect();
    let old = SystemTime::now() - Duration::from_secs(60);
    let mut paths = Vec::new();
    for i in 0..files {
        let p = dir.path().join(format!("f{i:05}.bin"));
        let mut bytes = chunk.clone();
        bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
        std::fs::write(&p, &bytes).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
        paths.push(p);
    }
    let bytes = (files * (2 << 20)) as f64;
    let hasher = cairn::commands::FileHasher::new();
    let started = Instant::now();
    let cold = hasher.hash_all(paths.clone()).await.unwrap();
    let cold_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let memo = hasher.hash_all(paths.clone()).await.unwrap();
    let memo_s = started.elapsed().as_secs_f64();
    assert_eq!(cold, memo, "the memo gives the digests hashing gives");
    assert_eq!(hasher.reads(), files as u64, "the second pass read nothing");
    println!(
        "hashing {files} files, {:.0} MiB: cold {:.2} GB/s ({:.0} ms), memoised {:.1} GB/s ({:.1} ms)",
        bytes / (1 << 20) as f64,
        bytes / cold_s / 1e9,
        cold_s * 1e3,
        bytes / memo_s / 1e9,
        memo_s * 1e3
    );
}

async fn overhead(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    std::fs::create_dir_all(ws.join("in")).unwrap();
    for i in 0..n {
        std::fs::write(ws.join(format!("in/{i:05}.txt")), format!("line {i}\n")).unwrap();
    }
    std::fs::write(
        ws.join("tasks.toml"),
        r#"
[task.copy]
command = ["cp", "${f}", "${outputs.o}"]
inputs = { f = "file" }
outputs = { o = "out/${f}" }

[workflow.copy_all]
inputs = { files = "glob" }
steps.copy = { task = "copy", for_each = "${inputs.files}", with = { f = "${item}" } }
"#,
    )
    .unwrap();
    let tasks = cairn::commands::TasksFile::load(&ws.join("tasks.toml")).unwrap();
    let builder =
        cairn::Node::builder().store_url(format!("embedded:{}", ws.join("data").display()));
    let builder = cairn::examples::register(builder);
    let node = cairn::commands::register(builder, &tasks)
        .start()
        .await
        .unwrap();
    cairn::commands::attach(&node, &tasks);
    let rust = node.workflows().get("fan_out").unwrap().clone();
    let command = node.workflows().get("copy_all").unwrap().clone();
    let rust_input = serde_json::json!({"n": n, "delay_ms": 0});
    let command_input = serde_json::json!({"files": "in/*.txt"});
    for pass in ["cold", "hit"] {
        let options = cairn::RunOptions::new("default", "development");
        let report = node
            .run(options.clone(), |ctx| rust.run(ctx, rust_input.clone()))
            .await;
        report.output.as_ref().unwrap();
        let rust_us = report.duration.as_secs_f64() * 1e6 / n as f64;
        let report = node
            .run(options, |ctx| command.run(ctx, command_input.clone()))
            .await;
        report.output.as_ref().unwrap();
        assert_eq!(report.calls.len(), n, "one call per file");
        let command_us = report.duration.as_secs_f64() * 1e6 / n as f64;
        println!(
            "{pass}: {n} Rust calls {rust_us:.0} µs/call; {n} command calls {command_us:.0} µs/call; overhead {:.0} µs/call",
            command_us - rust_us
        );
    }
    node.shutdown().await.unwrap();
}
