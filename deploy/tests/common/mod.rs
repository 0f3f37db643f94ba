//! Real `cairn` processes for the tests that drive a node only from outside: through the CLI
//! binary and the HTTP API.

#![allow(dead_code)]

pub(crate) mod certs;
pub(crate) mod otlp;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The `cairn` binary cargo built for these tests.
pub(crate) const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");

/// The `cairn` CLI with the test fixtures registered (`src/bin/cairn-testbed.rs`).
pub(crate) const TESTBED: &str = env!("CARGO_BIN_EXE_cairn-testbed");

/// A `cairn up` process, killed when dropped.
pub(crate) struct NodeProcess {
    child: Child,
    /// Its API, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// Its name.
    pub name: String,
    lines: mpsc::Receiver<String>,
}

impl NodeProcess {
    /// Starts `cairn up --listen 127.0.0.1:0 <args>` and waits for the line saying where it
    /// listens.
    pub(crate) fn start(dir: &Path, args: &[&str]) -> NodeProcess {
        Self::start_with_env(dir, args, &[])
    }

    /// [`NodeProcess::start`] with extra environment variables.
    pub(crate) fn start_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> NodeProcess {
        Self::start_bin(CAIRN, dir, args, env)
    }

    /// `cairn up` of binary `bin` (e.g. [`TESTBED`]), listening on 127.0.0.1:0 unless `args`
    /// gives `--listen`.
    pub(crate) fn start_bin(
        bin: &str,
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> NodeProcess {
        Self::start_full(bin, dir, args, env, None)
    }

    /// [`NodeProcess::start`] with its stderr (its log) written to the file `log`.
    pub(crate) fn start_logged(dir: &Path, args: &[&str], log: &Path) -> NodeProcess {
        Self::start_full(CAIRN, dir, args, &[], Some(log))
    }

    /// [`NodeProcess::start_logged`] with extra environment variables.
    pub(crate) fn start_logged_with_env(
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> NodeProcess {
        Self::start_full(CAIRN, dir, args, env, Some(log))
    }

    fn start_full(
        bin: &str,
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> NodeProcess {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("create the log file")),
            None => Stdio::inherit(),
        };
        let listen: &[&str] = if args.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        // The plain binary serves the examples only when asked; the testbed always does.
        let examples: &[&str] = if bin == CAIRN { &["--examples"] } else { &[] };
        let mut child = Command::new(bin)
            .arg("up")
            .args(listen)
            .args(examples)
            .args(args)
            .current_dir(dir)
            .env_remove("CAIRN_TOKEN")
            .env_remove("CAIRN_NODE")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
            .env_remove("OTEL_SERVICE_NAME")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start cairn up");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        loop {
            let line = match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(l) => l,
                Err(e) => {
                    let _ = child.kill();
                    panic!(
                        "cairn up printed no address: {e:?} (exit {:?})",
                        child.wait()
                    );
                }
            };
            if let Some(rest) = line.strip_prefix("cairn node ") {
                let (name, rest) = rest.split_once(" listening on ").expect("listen line");
                let url = rest.split_whitespace().next().expect("url").to_string();
                return NodeProcess {
                    child,
                    url,
                    name: name.to_string(),
                    lines: rx,
                };
            }
        }
    }

    /// Kills it at once (SIGKILL).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it gracefully (SIGTERM) and waits for it to exit.
    pub(crate) fn terminate(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_err() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the CLI against `node` with `args`.
pub(crate) fn cli(node: &str, args: &[&str]) -> Output {
    Command::new(CAIRN)
        .args(args)
        .env("CAIRN_NODE", node)
        .env_remove("CAIRN_TOKEN")
        .output()
        .expect("run cairn")
}

/// Runs the CLI with `--json` and parses its output; panics with stderr unless it exits `code`.
pub(crate) fn cli_json(node: &str, args: &[&str], code: i32) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = cli(node, &all);
    assert_eq!(
        out.status.code(),
        Some(code),
        "cairn {args:?}: stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "cairn {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Exit code and stderr of the CLI.
pub(crate) fn cli_fails(node: &str, args: &[&str]) -> (i32, String) {
    let out = cli(node, args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// How many lines of the log file at `path` equal `line`.
pub(crate) fn count_lines(path: &Path, line: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == line)
        .count()
}

/// How many lines of the log file at `path` start with `prefix`.
pub(crate) fn count_prefixed(path: &Path, prefix: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .count()
}

/// Waits (bounded) until `done()`; panics with `what` after `limit`. For conditions only
/// visible from outside a process (a log file, an API answer), which can only be polled.
pub(crate) fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The run `run_id` as `node` shows it (JSON of `GET /v1/runs/{id}`), waiting up to
/// `wait_ms` for it to end.
pub(crate) fn run_detail(node: &str, run_id: &str, wait_ms: u64) -> serde_json::Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = cairn::client::Client::new(node, None);
    let detail = rt
        .block_on(client.run(run_id, Duration::from_millis(wait_ms)))
        .unwrap_or_else(|e| panic!("GET run {run_id} from {node}: {e}"));
    serde_json::to_value(detail).unwrap()
}

/// Whether `node` is (ready, alive): `/v1/ready` and `/v1/health` answer 200.
pub(crate) fn probe(node: &str) -> (bool, bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = cairn::client::Client::new(node, None);
    rt.block_on(async { (client.ready().await.is_ok(), client.health().await.is_ok()) })
}

/// A PostgreSQL server of the test's own (a fresh cluster in a temporary directory, on a free
/// port), so a test can stop and restart it without disturbing the others. Needs the server
/// binaries (`deploy/dev/postgres-up` installs them) and root (it runs them as `postgres`).
pub(crate) struct PrivatePostgres {
    dir: tempfile::TempDir,
    /// Its port.
    pub port: u16,
    bin: std::path::PathBuf,
}

impl PrivatePostgres {
    /// Creates and starts the cluster, with a `cairn` role and database.
    pub(crate) fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("pg_ctl").exists())
            .expect("pg_ctl");
        let dir = tempfile::Builder::new()
            .prefix("cairn-pg-")
            .tempdir()
            .unwrap();
        as_postgres(&format!("chown postgres {}", dir.path().display()), true);
        let data = dir.path().join("data");
        as_postgres(
            &format!(
                "{} -D {} -U postgres --auth=trust -E UTF8 >/dev/null",
                bin.join("initdb").display(),
                data.display()
            ),
            false,
        );
        let pg = PrivatePostgres {
            port: free_port(),
            dir,
            bin,
        };
        pg.up();
        as_postgres(
            &format!(
                "psql -h 127.0.0.1 -p {} -U postgres -qc \"CREATE ROLE cairn LOGIN PASSWORD 'cairn'\" -c 'CREATE DATABASE cairn OWNER cairn'",
                pg.port
            ),
            false,
        );
        pg
    }

    /// Its URL, with a table of its own.
    pub(crate) fn url(&self) -> String {
        format!(
            "postgres://cairn:cairn@127.0.0.1:{}/cairn?table=t",
            self.port
        )
    }

    /// Starts the server (again).
    pub(crate) fn up(&self) {
        as_postgres(
            &format!(
                "{} -D {} -o '-p {} -k {} -c listen_addresses=127.0.0.1' -l {} -w start >/dev/null",
                self.bin.join("pg_ctl").display(),
                self.dir.path().join("data").display(),
                self.port,
                self.dir.path().display(),
                self.dir.path().join("log").display()
            ),
            false,
        );
    }

    /// Stops the server at once (open connections are cut).
    pub(crate) fn down(&self) {
        as_postgres(
            &format!(
                "{} -D {} -m immediate -w stop >/dev/null",
                self.bin.join("pg_ctl").display(),
                self.dir.path().join("data").display()
            ),
            false,
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.down();
    }
}

/// Runs `command` with sh, as root (`root`) or as the `postgres` user.
fn as_postgres(command: &str, root: bool) {
    let status = if root {
        Command::new("sh").args(["-c", command]).status()
    } else {
        Command::new("runuser")
            .args(["-u", "postgres", "--", "sh", "-c", command])
            .status()
    }
    .expect("run a PostgreSQL command");
    assert!(status.success(), "{command}: {status}");
}

/// A free port on 127.0.0.1 (bound, then released for a child process to take).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The test PostgreSQL (`CAIRN_TEST_POSTGRES`, or `deploy/dev/postgres-up`'s), with a table of
/// its own named after `prefix`: the tests share the database, not their data.
pub(crate) fn store_url(prefix: &str) -> String {
    let base = std::env::var("CAIRN_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://cairn:cairn@127.0.0.1:5432/cairn_test".into());
    format!(
        "{base}?table={prefix}_{}_{}",
        std::process::id(),
        free_port()
    )
}
