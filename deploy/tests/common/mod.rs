//! Real `cairn` processes for the tests that drive a node only from outside: through the CLI
//! binary and the HTTP API.

#![allow(dead_code)]

pub mod otlp;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The `cairn` binary cargo built for these tests.
pub const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");

/// A `cairn up` process, killed when dropped.
pub struct NodeProcess {
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
    pub fn start(dir: &Path, args: &[&str]) -> NodeProcess {
        Self::start_with_env(dir, args, &[])
    }

    /// [`NodeProcess::start`] with extra environment variables.
    pub fn start_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> NodeProcess {
        let mut child = Command::new(CAIRN)
            .arg("up")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .current_dir(dir)
            .env_remove("CAIRN_TOKEN")
            .env_remove("CAIRN_NODE")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
            .env_remove("OTEL_SERVICE_NAME")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
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
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it gracefully (SIGTERM) and waits for it to exit.
    pub fn terminate(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_err() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the CLI against `node` with `args`.
pub fn cli(node: &str, args: &[&str]) -> Output {
    Command::new(CAIRN)
        .args(args)
        .env("CAIRN_NODE", node)
        .env_remove("CAIRN_TOKEN")
        .output()
        .expect("run cairn")
}

/// Runs the CLI with `--json` and parses its output; panics with stderr unless it exits `code`.
pub fn cli_json(node: &str, args: &[&str], code: i32) -> serde_json::Value {
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
pub fn cli_fails(node: &str, args: &[&str]) -> (i32, String) {
    let out = cli(node, args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A free port on 127.0.0.1 (bound, then released for a child process to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The test PostgreSQL (`CAIRN_TEST_POSTGRES`, or `deploy/dev/postgres-up`'s), with a table of
/// its own named after `prefix`: the tests share the database, not their data.
pub fn store_url(prefix: &str) -> String {
    let base = std::env::var("CAIRN_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://cairn:cairn@127.0.0.1:5432/cairn_test".into());
    format!(
        "{base}?table={prefix}_{}_{}",
        std::process::id(),
        free_port()
    )
}
