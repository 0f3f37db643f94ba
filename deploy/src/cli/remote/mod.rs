//! Commands that talk to a running node through its HTTP API: human tables by default, the
//! node's JSON with `--json`, and exit codes from [`crate::client::exit`].

mod cache;
mod info;
mod run;
mod runs;
mod schedules;

pub(super) use cache::{CacheArgs, cache};
pub(super) use info::{nodes, openapi, workflows};
pub(super) use run::{RunArgs, run};
pub(super) use runs::{RunsArgs, runs};
pub(super) use schedules::{SchedulesArgs, schedules};

use super::Remote;
use crate::client::{Client, ClientError, exit};
use serde::Serialize;

/// The client of `--node`, trusting `--ca` when given; an exit code when `--ca` does not load.
fn client(r: &Remote) -> Result<Client, u8> {
    // `--node 127.0.0.1:7070` means http://127.0.0.1:7070.
    let node = if r.node.contains("://") {
        r.node.clone()
    } else {
        format!("http://{}", r.node)
    };
    match &r.ca {
        None => Ok(Client::new(&node, r.token.clone())),
        Some(ca) => Client::with_ca(&node, r.token.clone(), ca).map_err(|e| {
            eprintln!("error: --ca: {e}");
            exit::INVALID
        }),
    }
}

/// Prints `value` as JSON or with `human`, or the error; returns the exit code.
fn show<T: Serialize>(r: &Remote, result: Result<T, ClientError>, human: impl FnOnce(&T)) -> u8 {
    match result {
        Ok(value) => {
            if r.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                );
            } else {
                human(&value);
            }
            exit::OK
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &ClientError) -> u8 {
    eprintln!("error: {e}");
    e.exit_code()
}

fn parse_json(what: &str, text: &str) -> Result<serde_json::Value, u8> {
    serde_json::from_str(text).map_err(|e| {
        eprintln!("error: {what} is not valid JSON: {e}");
        exit::INVALID
    })
}

/// Only the node options.
#[derive(clap::Args)]
pub(super) struct Plain {
    #[command(flatten)]
    remote: Remote,
}
