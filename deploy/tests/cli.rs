//! The CLI against a running node, through its binary only: submit, wait, inspect, evict,
//! explain, schedules, tokens and exit codes.

mod common;

use common::{NodeProcess, cli, cli_fails, cli_json};
use serde_json::Value;

fn count(run: &Value, status: &str) -> u64 {
    run["counts"][status].as_u64().unwrap_or(0)
}

#[test]
fn submit_wait_inspect_evict_and_explain_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--store", "embedded:./data"]);
    let url = &node.url;

    // First run: every call runs and stores its output.
    let first = cli_json(url, &["run", "sum_of_squares", "--input", "10"], 0);
    assert_eq!(first["status"], "succeeded");
    assert_eq!(first["output"], 285);
    assert_eq!(count(&first, "Populated"), 11, "{first}");
    assert_eq!(first["calls"].as_array().unwrap().len(), 11);

    // Second run: all hits.
    let second = cli_json(url, &["run", "sum_of_squares", "--input", "10"], 0);
    assert_eq!(count(&second, "Hit"), 11, "{second}");
    assert_eq!(second["output"], 285);

    // Inspect: both runs listed newest first; one shown with its calls.
    let runs = cli_json(url, &["runs"], 0);
    let listed: Vec<&str> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [
            second["run_id"].as_str().unwrap(),
            first["run_id"].as_str().unwrap()
        ]
    );
    let shown = cli_json(url, &["runs", first["run_id"].as_str().unwrap()], 0);
    assert_eq!(shown["calls"], first["calls"]);
    let failed = cli_json(url, &["runs", "--status", "failed"], 0);
    assert!(failed["runs"].as_array().unwrap().is_empty());

    // Browse the cache: ten squares, one shown with its output.
    let entries = cli_json(url, &["cache", "ls", "--task", "square"], 0);
    let entries = entries["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 10);
    let square_of_3 = entries
        .iter()
        .map(|e| cli_json(url, &["cache", "show", e["key"].as_str().unwrap()], 0))
        .find(|e| e["output"] == 9)
        .expect("square(3) is stored");
    let key3 = square_of_3["key"].as_str().unwrap();

    // Explain: a stored call hits; a new input misses and the input is named.
    let hit = cli_json(
        url,
        &["cache", "explain", "square", "--input", r#"{"n": 3}"#],
        0,
    );
    assert_eq!(hit["verdict"], "hit");
    assert_eq!(hit["key"], key3);
    let miss = cli_json(
        url,
        &["cache", "explain", "square", "--input", r#"{"n": 11}"#],
        0,
    );
    assert_eq!(miss["verdict"], "miss");
    assert_eq!(miss["nearest"][0]["inputs"][0]["name"], "n");
    assert_eq!(miss["nearest"][0]["inputs"][0]["change"], "changed");
    let human = cli(url, &["cache", "explain", "square", "--input", "11"]);
    assert!(
        String::from_utf8_lossy(&human.stdout).contains("input \"n\" changed"),
        "{}",
        String::from_utf8_lossy(&human.stdout)
    );

    // Evict one key: explain says so, and the next run recomputes exactly that call.
    let evicted = cli_json(url, &["cache", "evict", "--key", key3], 0);
    assert_eq!(evicted["evicted"], 1);
    let after = cli_json(url, &["cache", "explain", "square", "--input", "3"], 0);
    assert_eq!(after["verdict"], "evicted");
    let third = cli_json(url, &["run", "sum_of_squares", "--input", "10"], 0);
    assert_eq!(count(&third, "Evicted"), 1, "{third}");
    assert_eq!(count(&third, "Hit"), 10, "{third}");

    // Evict by task.
    let all = cli_json(url, &["cache", "evict", "--task", "square"], 0);
    assert_eq!(all["evicted"], 10);

    // A failing workflow: exit code 1, the error in the run.
    let failing = cli_json(url, &["run", "integer_sqrt", "--input", "-4"], 1);
    assert_eq!(failing["status"], "failed");
    assert!(
        failing["error"]
            .as_str()
            .unwrap()
            .contains("no real square root")
    );

    // Exit codes of refused requests, with messages naming the problem.
    let (code, err) = cli_fails(url, &["run", "no_such_workflow"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("unknown workflow \"no_such_workflow\""),
        "{err}"
    );
    let (code, err) = cli_fails(url, &["run", "sum_of_squares", "--input", r#""ten""#]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not match its signature"), "{err}");
    let (code, err) = cli_fails(url, &["run", "sum_of_squares", "--input", "{oops"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--input is not valid JSON"), "{err}");
    let (code, err) = cli_fails(url, &["cache", "explain", "nope", "--input", "1"]);
    assert_eq!(code, 3, "{err}");
    let (code, err) = cli_fails(url, &["runs", "run-that-never-was"]);
    assert_eq!(code, 3, "{err}");
    // Refused runs wrote nothing.
    let runs = cli_json(url, &["runs"], 0);
    assert_eq!(runs["runs"].as_array().unwrap().len(), 4);

    let (code, err) = cli_fails("http://127.0.0.1:9", &["runs"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("cannot reach the node"), "{err}");
}

#[test]
fn schedules_pause_resume_and_backfill_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cairn.toml"),
        r#"
        store = "embedded:./data"
        [[schedules]]
        name = "squares-hourly"
        workflow = "squares_report"
        cron = "0 * * * *"
        "#,
    )
    .unwrap();
    let node = NodeProcess::start(dir.path(), &["--config", "cairn.toml"]);
    let url = &node.url;

    let list = cli_json(url, &["schedules"], 0);
    assert_eq!(list[0]["name"], "squares-hourly");
    assert_eq!(list[0]["paused"], false);
    assert_eq!(list[0]["trigger"], "cron \"0 * * * *\" UTC");

    let paused = cli_json(url, &["schedules", "pause", "squares-hourly"], 0);
    assert_eq!(paused["paused"], true);
    assert_eq!(cli_json(url, &["schedules"], 0)[0]["paused"], true);
    let resumed = cli_json(url, &["schedules", "resume", "squares-hourly"], 0);
    assert_eq!(resumed["paused"], false);

    // Backfill two past hours: queued, then run by this node's schedule loop as recorded runs.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let hour = 3_600_000;
    let to = (now_ms / hour - 1) * hour;
    let from = to - hour;
    let queued = cli_json(
        url,
        &[
            "schedules",
            "backfill",
            "squares-hourly",
            "--from-ms",
            &from.to_string(),
            "--to-ms",
            &to.to_string(),
        ],
        0,
    );
    assert_eq!(queued["queued"], 2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let runs = cli_json(
            url,
            &[
                "runs",
                "--workflow",
                "squares_report",
                "--status",
                "succeeded",
            ],
            0,
        );
        let runs = runs["runs"].as_array().unwrap().clone();
        if runs.len() == 2 {
            assert!(runs.iter().all(|r| r["schedule"] == "squares-hourly"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "backfilled runs did not finish: {runs:?}"
        );
        // The CLI offers no way to wait on a schedule; a short pause between polls of the
        // node is the only option here.
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let (code, err) = cli_fails(url, &["schedules", "pause", "nope"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no schedule \"nope\""), "{err}");
}

#[test]
fn a_node_with_a_token_refuses_requests_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(
        dir.path(),
        &[
            "--store",
            "embedded:./data",
            "--token",
            "s3cret-0123456789abcdef",
        ],
    );
    let url = &node.url;
    let (code, err) = cli_fails(url, &["runs"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("requires `Authorization: Bearer"), "{err}");
    let (code, err) = cli_fails(url, &["runs", "--token", "wrong"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("wrong bearer token"), "{err}");
    let (code, err) = cli_fails(
        url,
        &["run", "sum_of_squares", "--input", "3", "--token", "wrong"],
    );
    assert_eq!(code, 4, "{err}");
    let ok = cli_json(
        url,
        &[
            "run",
            "sum_of_squares",
            "--input",
            "3",
            "--token",
            "s3cret-0123456789abcdef",
        ],
        0,
    );
    assert_eq!(ok["output"], 5);
    // Only the accepted run exists.
    let runs = cli_json(url, &["runs", "--token", "s3cret-0123456789abcdef"], 0);
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1);
}

#[test]
fn a_node_refuses_to_serve_a_non_loopback_address_without_a_token() {
    let out = std::process::Command::new(common::CAIRN)
        .args([
            "up",
            "--listen",
            "0.0.0.0:0",
            "--store",
            "embedded:./never-created",
        ])
        .env_remove("CAIRN_TOKEN")
        .current_dir(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a configuration error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address, without a token"),
        "{err}"
    );
}

/// `cairn up` refuses what it cannot run safely, before starting anything, with exit 2.
fn up_fails(dir: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(common::CAIRN)
        .arg("up")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("CAIRN_TOKEN")
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Secrets come from files (out of `ps`), weak tokens are refused, the bearer scheme is
/// case-insensitive, the embedded directory is private, a directory in use is named, and
/// `--roles` needs a cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_configuration_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (args, needle) in [
        (
            &["--store", "embedded:./x", "--token", "short"][..],
            "at least 16 characters",
        ),
        (
            &["--store", "embedded:./x", "--token", "                    "][..],
            "only whitespace",
        ),
        (
            &["--store", "embedded:./x", "--roles", "worker"][..],
            "--roles only applies",
        ),
        (
            &[
                "--store",
                "embedded:./x",
                "--token-file",
                "/nonexistent/token",
            ][..],
            "--token-file",
        ),
    ] {
        let (code, err) = up_fails(d, args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let token_file = d.join("token");
    std::fs::write(&token_file, "a-long-enough-token-from-a-file\n").unwrap();
    let node = NodeProcess::start(
        d,
        &[
            "--store",
            "embedded:./data",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let client = reqwest::Client::new();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let resp = client
            .get(format!("{}/v1/runs", node.url))
            .header(
                "Authorization",
                format!("{scheme} a-long-enough-token-from-a-file"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{scheme}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("data"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    }
    // A second node on the same directory is told why it cannot start.
    let (code, err) = up_fails(d, &["--store", "embedded:./data"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is in use by another process"), "{err}");
}

/// The CLI's small courtesies: a node address without a scheme, long call lists and explain
/// answers that say what they leave out, and output piped into a reader that goes away.
#[test]
fn cli_courtesies() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--store", "embedded:./data"]);
    let bare = node.url.trim_start_matches("http://").to_string();
    let run = cli_json(&bare, &["run", "sum_of_squares", "--input", "30"], 0);
    assert_eq!(run["output"], (0..30).map(|i| i * i).sum::<i64>());
    let run_id = run["run_id"].as_str().unwrap();
    let shown = cli(&node.url, &["runs", run_id]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("(20 of 31 calls shown"), "{text}");

    let explained = cli(
        &node.url,
        &["cache", "explain", "square", "--input", r#"{"n": 1000}"#],
    );
    let text = String::from_utf8_lossy(&explained.stdout);
    assert!(
        text.contains("30 of 30 stored entries differ least"),
        "{text}"
    );
    assert!(text.contains("and 25 more like these"), "{text}");

    // A reader that closes the pipe at once: the command ends quietly, not with a panic.
    let mut child = std::process::Command::new(common::CAIRN)
        .args(["cache", "ls", "--task", "square", "--limit", "1000"])
        .env("CAIRN_NODE", &node.url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A FoundationDB URL on a build (or a machine) without the client library is a clear error
/// naming the cluster file, never a panic.
#[test]
fn a_foundationdb_store_without_its_client_library_is_named() {
    for command in [
        vec!["check-store", "--store", "fdb:/nonexistent/fdb.cluster"],
        vec![
            "up",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "fdb:/nonexistent/fdb.cluster",
        ],
    ] {
        let out = std::process::Command::new(common::CAIRN)
            .args(&command)
            .env_remove("CAIRN_TOKEN")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(1..=5)),
            "{command:?}: {:?} {stderr}",
            out.status
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.contains("/nonexistent/fdb.cluster"), "{stderr}");
        assert!(stderr.contains("FoundationDB"), "{stderr}");
    }
}
